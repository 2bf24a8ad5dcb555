"""Bad input, faults and scale: what users see when things go wrong.

* Actions: random and adversarial action sequences (hypothesis) on every id, single and
  vector env: each step works or raises a clear ``ValueError``/``TypeError``/``ResetNeeded``,
  a refused step changes nothing, observations always lie in the observation space.
* Memory: 100k steps per id do not grow the resident set (``/proc/self/statm``).
* Data files: malformed and generated garbage through every reader and ``gym.make``:
  only ``LmgymDataError`` (file and line) or documented truncation, never a wrong label.
* Determinism across processes, and a shared on-disk cache under concurrent builders,
  killed builders and damaged entries.
* Training killed with SIGKILL after a checkpoint resumes (``agents.train --resume``) and
  ends bit-identical to the run that was never killed (weights and progress.csv).

docs/RELIABILITY.md tabulates these inputs, faults and outcomes.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmgym  # noqa: F401
from lmgym.data import DataFormatError, LmgymDataError, loaders
from lmgym.data.cache import CACHE_ENV
from tests.conftest import LMGYM_SPECS, sample_kwargs

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
CLEAR_ERRORS = (ValueError, TypeError, ResetNeeded)


# =================================================================================================
# Actions
# =================================================================================================
#: Things users (and buggy agents) pass as an action; each must work or be refused clearly.
ODD_ACTIONS = [
    0.5, float("nan"), float("inf"), -float("inf"), 1e30, "1", b"1", None, [0], [[0]], [0, 1],
    (), np.array([], dtype=np.int64), np.int8(1), np.uint64(2**64 - 1), True, 1 + 0j, 2**70,
    np.float32(1.0), np.array(1.0), np.array([[1]]), object(), {"a": 1}, np.array(["x"]),
]  # fmt: skip

MOVES = st.one_of(
    st.tuples(st.just("valid"), st.integers(0, 2**31)),
    st.tuples(st.just("masked"), st.integers(0, 2**31)),
    st.tuples(st.just("out_of_range"), st.integers(1, 2**62)),
    st.tuples(st.just("odd"), st.integers(0, len(ODD_ACTIONS) - 1)),
    st.tuples(st.just("reset"), st.none() | st.integers(0, 2**32 - 1)),
)


def check_obs(obs: dict, space: gym.spaces.Dict) -> None:
    assert set(obs) == set(space.spaces)
    for key, value in obs.items():
        box = space[key]
        assert value.shape == box.shape and value.dtype == box.dtype, (
            key,
            value.shape,
            value.dtype,
        )
        bad = (value < box.low) | (value > box.high)
        assert not bad.any(), (
            f"{key}: values {value[bad][:5]} outside [{box.low.min()}, {box.high.max()}]"
        )
    assert obs in space


def snapshot(env: gym.Env) -> dict:
    inner = env.unwrapped
    return {"obs": {k: v.copy() for k, v in inner._observation().items()}, "needs_reset": inner._needs_reset,
            "state": {k: v.copy() for k, v in inner.state.items()}}  # fmt: skip


def assert_unchanged(before: dict, after: dict) -> None:
    assert before["needs_reset"] == after["needs_reset"]
    for key in before["state"]:
        np.testing.assert_array_equal(
            before["state"][key],
            after["state"][key],
            err_msg=f"refused step changed state[{key!r}]",
        )


def pick_action(env: gym.Env, kind: str, value: int):
    n = env.action_space.n
    mask = env.unwrapped.action_masks()
    if not mask.any():  # before the first reset some families mask everything
        mask = np.ones(n, dtype=bool)
    if kind == "valid":
        valid = np.flatnonzero(mask)
        return int(valid[value % len(valid)])
    if kind == "masked":
        masked = np.flatnonzero(~mask)
        return int(masked[value % len(masked)]) if len(masked) else int(value % n)
    if kind == "out_of_range":
        return n - 1 + value if value % 2 else -value
    return ODD_ACTIONS[value]


# nan/inf raise the TypeError without numpy's "invalid value" RuntimeWarning first
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("spec", LMGYM_SPECS, ids=lambda s: s.id)
def test_adversarial_action_sequences_single_env(spec):
    space = gym.make(spec.id, **sample_kwargs(spec.id)).observation_space

    @FUZZ
    @given(moves=st.lists(MOVES, min_size=1, max_size=40), start=st.booleans())
    def run(moves, start):
        env = gym.make(spec.id, **sample_kwargs(spec.id))  # the dataset is shared, not rebuilt
        started = False
        if start:
            obs, info = env.reset(seed=0)
            check_obs(obs, space)
            started = True
        for kind, value in moves:
            if kind == "reset":
                obs, info = env.reset(seed=value)
                check_obs(obs, space)
                assert isinstance(info["example_id"], int)
                started = True
                continue
            action = pick_action(env, kind, value)
            if not started:
                with pytest.raises(ResetNeeded, match="reset"):
                    env.step(action)
                continue
            before = snapshot(env)
            try:
                obs, reward, terminated, truncated, info = env.step(action)
            except CLEAR_ERRORS as exc:
                assert str(exc), f"{type(exc).__name__} without a message for action {action!r}"
                if kind in ("valid", "masked") and not before["needs_reset"]:
                    raise AssertionError(f"a {kind} action {action!r} was refused: {exc}") from exc
                if kind == "out_of_range" and not before["needs_reset"]:
                    assert "out of range" in str(exc)
                assert_unchanged(before, snapshot(env))
                continue
            assert kind != "out_of_range", f"out-of-range action {action!r} was accepted"
            assert not before["needs_reset"], "a step after the episode ended was accepted"
            check_obs(obs, space)
            assert isinstance(reward, float) and np.isfinite(reward)
            assert isinstance(terminated, bool) and isinstance(truncated, bool)
            if terminated or truncated:
                assert all(np.isfinite(v) for v in info["episode_metrics"].values())

    run()


@pytest.mark.parametrize("spec", LMGYM_SPECS, ids=lambda s: s.id)
def test_adversarial_actions_vector_env(spec):
    n = 3
    venv = gym.make_vec(
        spec.id, num_envs=n, vectorization_mode="vector_entry_point", **sample_kwargs(spec.id)
    )
    inner = venv.unwrapped
    with pytest.raises(ResetNeeded):
        venv.step(np.zeros(n, dtype=np.int64))
    obs, _ = venv.reset(seed=0)
    assert obs in venv.observation_space
    n_actions = venv.single_action_space.n
    bad = [np.zeros(n - 1, dtype=np.int64), np.zeros((n, 1), dtype=np.int64), 0, np.full(n, 0.5),
           np.array([0, n_actions, 0]), np.array([0, -1, 0]), np.array(["a"] * n), [None] * n]  # fmt: skip
    for actions in bad:
        state = {k: v.copy() for k, v in inner.state.items()}
        with pytest.raises(CLEAR_ERRORS) as info:
            venv.step(actions)
        assert str(info.value)
        for key in state:
            np.testing.assert_array_equal(state[key], inner.state[key], err_msg=key)
    for bad_mask in (
        np.zeros(n, dtype=bool),
        np.ones(n + 1, dtype=bool),
        np.ones(n, dtype=np.int64),
    ):
        with pytest.raises(ValueError, match="reset_mask"):
            venv.reset(options={"reset_mask": bad_mask})
    rng = np.random.default_rng(0)
    for _ in range(200):  # valid and masked actions keep every observation inside the space
        masks = inner.action_masks()
        use_mask = rng.random(n) < 0.8
        noise = rng.random(masks.shape)
        actions = np.where(
            use_mask, np.argmax(np.where(masks, noise, -1), axis=1), np.argmax(noise, axis=1)
        )
        obs, rewards, terminated, truncated, _ = venv.step(actions)
        assert obs in venv.observation_space
        assert np.isfinite(rewards).all() and terminated.dtype == bool and truncated.dtype == bool


# =================================================================================================
# Memory
# =================================================================================================
PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


def _clear_sacrebleu_caches() -> None:
    """sacrebleu memoises its tokenizers with ``lru_cache(maxsize=2**16)`` (bounded, tens of MB
    at most): cleared here so the measurement sees lmgym's own memory only."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    from sacrebleu.tokenizers.tokenizer_re import TokenizerRegexp

    Tokenizer13a.__call__.cache_clear()
    TokenizerRegexp.__call__.cache_clear()


@pytest.mark.slow
@pytest.mark.parametrize("spec", LMGYM_SPECS, ids=lambda s: s.id)
def test_100k_steps_do_not_grow_memory(spec):
    env = gym.make(spec.id, **sample_kwargs(spec.id))
    rng = np.random.default_rng(0)
    env.reset(seed=0)

    def run(steps: int) -> None:
        draws = rng.integers(1 << 30, size=steps)
        for i in range(steps):
            if i % 2000 == 0:
                _clear_sacrebleu_caches()
            valid = np.flatnonzero(env.unwrapped.action_masks())
            _, _, terminated, truncated, _ = env.step(int(valid[draws[i] % len(valid)]))
            if terminated or truncated:
                env.reset()

    run(5_000)  # warm up: lazily built tables, allocator arenas
    before = resident_bytes()
    run(100_000)
    growth = resident_bytes() - before
    assert growth < 1 << 20, f"resident memory grew {growth / 2**20:.2f} MiB over 100k steps"


@pytest.mark.slow
def test_vector_env_100k_steps_do_not_grow_memory():
    venv = gym.make_vec(
        "lmgym/NER-v0", num_envs=32, vectorization_mode="vector_entry_point", data_dir="sample"
    )
    venv.reset(seed=0)
    rng = np.random.default_rng(0)

    def run(steps: int) -> None:
        for _ in range(steps // 32):
            masks = venv.unwrapped.action_masks()
            venv.step(np.argmax(np.where(masks, rng.random(masks.shape), -1), axis=1))

    run(10_000)
    before = resident_bytes()
    run(100_000)
    assert resident_bytes() - before < 1 << 20


# =================================================================================================
# Data files
# =================================================================================================
CONLL_OK = b"-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\nPeter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n"
TSV_OK = b"sentence\tlabel\nhello world\t1\nbad movie\t0\nfine film\t1\n"
TREC_OK = b"DESC:manner How did serfdom develop in and then leave Russia ?\nHUM:ind Who was The Pride of the Yankees ?\n"
JSONL_OK = b'{"question": "2 + 2?", "choices": ["3", "4"], "answer": 1}\n{"question": "Sky?", "choices": ["blue", "green"], "answer": "blue"}\n'
SQUAD_OK = json.dumps({"data": [{"paragraphs": [{"context": "Paris is the capital of France.", "qas": [
    {"id": "q1", "question": "Capital of France?", "answers": [{"text": "Paris", "answer_start": 0}]}]}]}]}).encode()  # fmt: skip


def _trec(path):
    return loaders.read_trec(path)


def _tsv(path):
    return loaders.read_table(path, "sentence", "label")


def _csv(path):
    return loaders.read_table(path, "sentence", "label", ",")


def _parallel(path):
    return loaders.read_parallel(path, path)


def _parallel_table(path):
    return loaders.read_parallel(path, None, "sentence", "label", "\t")


READERS = {
    "conll": (loaders.read_conll, ".txt"),
    "tsv": (_tsv, ".tsv"),
    "csv": (_csv, ".csv"),
    "trec": (_trec, ".label"),
    "parallel": (_parallel, ".en"),
    "parallel_table": (_parallel_table, ".tsv"),
    "squad": (loaders.read_squad, ".json"),
    "jsonl": (loaders.read_multiple_choice_jsonl, ".jsonl"),
}

BOM = b"\xef\xbb\xbf"

#: (reader, file bytes, expected error text or None when the file must load) -- one row per
#: malformed input kind; docs/RELIABILITY.md lists the same.
MALFORMED = [
    ("conll", b"", "no sentences"),
    ("tsv", b"", "empty file"),
    ("trec", b"", "no examples"),
    ("jsonl", b"", "no questions"),
    ("squad", b"", "invalid JSON"),
    ("parallel", b"", "no sentence pairs"),
    ("conll", b"EU NNP B-ORG\nrejects VBZ B-VP O\n", ":2: expected 3 whitespace-separated columns"),
    ("conll", b"EU B-ORGANISATION-X\nsays O\n", None),
    ("conll", b"EU ORG\n", ":1: tag 'ORG' is not O, B-TYPE or I-TYPE"),
    ("tsv", b"text\tlabel\nhello\t1\n", ":1: header has no column 'sentence'"),
    ("tsv", b"sentence\tlabel\nhello\t1\textra\n", ":2: expected 2 columns, found 3"),
    ("tsv", b"sentence\tlabel\nhello\t \n", ":2: empty label"),
    ("tsv", b"sentence\tlabel\ncaf\xe9\t1\n", ":2: not valid utf-8"),
    ("tsv", b"sentence\tlabel\nhello\t1\x00\n", ":2: NUL byte"),
    ("conll", b"EU\x00 B-ORG\n", ":1: NUL byte"),
    ("tsv", b"sentence\tlabel\rhello\t1\rbad\t0\r", ":1: cannot split the line into columns"),
    ("csv", b"sentence,label\nhello\rworld,1\n", ":2: cannot split the line into columns"),
    ("csv", b'sentence,label\n"unterminated, 1\n', ":2: expected 2 columns, found 1"),
    ("trec", b"DESC How did it happen ?\n", ":1: expected 'COARSE:fine question text'"),
    (
        "jsonl",
        b'{"question": "q", "choices": ["a"], "answer": 0}\n',
        ":1: 'choices' should be a list of at least 2",
    ),
    (
        "jsonl",
        b'{"question": "q", "choices": ["a", "b"], "answer": 2}\n',
        ":1: answer index 2 out of range",
    ),
    (
        "jsonl",
        b'{"question": "q", "choices": ["a", "b"], "answer": "c"}\n',
        ":1: answer 'c' is not one of the choices",
    ),
    ("jsonl", b"[" * 50_000 + b"]" * 50_000 + b"\n", ":1: JSON nested too deeply"),
    (
        "squad",
        b'{"data": [{"paragraphs": [{"context": "abc", "qas": [{"id": "1", "question": "q", "answers": [{"text": "z", "answer_start": 0}]}]}]}]}',
        "answer 'z' not found in the context",
    ),  # fmt: skip
    ("parallel_table", b"sentence\tlabel\n\tein Mann\n", ":2: empty source sentence"),
]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("reader", "data", "expected"),
    MALFORMED,
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
def test_malformed_files_fail_with_file_and_line(tmp_path, reader, data, expected):
    read, suffix = READERS[reader]
    path = write(tmp_path, f"data{suffix}", data)
    if expected is None:
        assert read(path)
        return
    with pytest.raises(DataFormatError) as info:
        read(path)
    assert str(path) in str(info.value) and expected in str(info.value), str(info.value)


GOOD = {"conll": CONLL_OK, "tsv": TSV_OK, "trec": TREC_OK, "jsonl": JSONL_OK, "squad": SQUAD_OK,
        "parallel": b"a man\ntwo dogs\n", "csv": TSV_OK.replace(b"\t", b","),
        "parallel_table": TSV_OK}  # fmt: skip


@pytest.mark.parametrize("reader", sorted(READERS))
def test_crlf_and_bom_read_like_plain_files(tmp_path, reader):
    read, suffix = READERS[reader]
    plain = read(write(tmp_path, f"plain{suffix}", GOOD[reader]))
    crlf = GOOD[reader].replace(b"\n", b"\r\n")
    for variant, data in {"crlf": crlf, "bom": BOM + GOOD[reader], "bom_crlf": BOM + crlf}.items():
        records = read(write(tmp_path, f"{variant}{suffix}", data))
        assert _strip_lines(records) == _strip_lines(plain), variant


def _strip_lines(records):
    """Records without their ``line``/``where`` fields (CRLF does not move lines, but be exact about content)."""
    if isinstance(records, list):
        return [{k: v for k, v in vars(r).items() if k not in ("line", "where")} for r in records]
    return records


@pytest.mark.parametrize("reader", ["conll", "tsv", "trec", "parallel", "jsonl", "squad"])
def test_truncated_and_corrupt_gzip(tmp_path, reader):
    read, suffix = READERS[reader]
    packed = gzip.compress(GOOD[reader] * 50)
    for name, data in {
        "truncated": packed[: len(packed) // 2],
        "garbage": b"\x1f\x8b\x08\x00" + b"\xff" * 64,
    }.items():
        path = write(tmp_path, f"{name}{suffix}.gz", data)
        with pytest.raises(DataFormatError, match="corrupt or truncated") as info:
            read(path)
        assert str(path) in str(info.value)


# -- hypothesis: garbage never leaks anything but LmgymDataError ------------------------------------
TRICKY = st.sampled_from([
    b"\t", b",", b'"', b" ", b"\n", b"\r\n", b"\r", b"\x00", BOM, b"\xff", b"\xc3", b"\xe9", b"O", b"B-PER",
    b"I-PER", b"I-ORG", b"-DOCSTART-", b"DESC:manner", b"HUM", b":", b"sentence", b"label", b"1", b"0",
    b"{", b"}", b"[", b"]", b'"question"', b'"choices"', b'"answer"', b'"data"', b"null", b"\xe2\x80\xa8",
    "é".encode(), "日本".encode(), b"\x1f\x8b",
])  # fmt: skip
GARBAGE = st.one_of(st.binary(max_size=300), st.lists(TRICKY, max_size=60).map(b"".join))


@pytest.mark.parametrize("reader", sorted(READERS))
def test_generated_garbage_raises_only_lmgym_data_errors(tmp_path, reader):
    read, suffix = READERS[reader]

    @settings(FUZZ, max_examples=150)
    @given(data=GARBAGE, gz=st.booleans())
    def run(data, gz):
        name = f"g{suffix}.gz" if gz else f"g{suffix}"
        path = write(tmp_path, name, gzip.compress(data) if gz else data)
        try:
            read(path)
        except LmgymDataError as exc:
            assert str(path) in str(exc), str(exc)

    run()


# -- round trip: whatever loads carries exactly the labels that were written ------------------------
FIELD = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r\x00\ufeff"),
    min_size=1,
    max_size=20,
)
LABEL = st.text(
    st.characters(whitelist_categories=("Lu", "Ll", "Nd"), max_codepoint=0x2FF),
    min_size=1,
    max_size=6,
)


@settings(FUZZ, max_examples=100)
@given(
    rows=st.lists(st.tuples(FIELD, LABEL), min_size=1, max_size=8),
    newline=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
)
def test_tsv_round_trip_never_changes_a_label(tmp_path_factory, rows, newline, bom):
    rows = [(text, label) for text, label in rows if text.strip()]
    if not rows:
        return
    body = newline.join(["sentence\tlabel", *(f"{t}\t{lab}" for t, lab in rows)]) + newline
    path = tmp_path_factory.mktemp("rt") / "data.tsv"
    path.write_bytes((BOM if bom else b"") + body.encode("utf-8"))
    records = loaders.read_table(path, "sentence", "label")
    assert [(r.text, r.label) for r in records] == rows


TAG = st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "B-X"])
WORD = st.text(
    st.characters(
        blacklist_categories=("Cs", "Zs", "Cc", "Zl", "Zp"),
        blacklist_characters="\ufeff\x1c\x1d\x1e\x1f\x85",
    ),
    min_size=1,
    max_size=8,
)


@settings(FUZZ, max_examples=100)
@given(sentences=st.lists(st.lists(st.tuples(WORD, TAG), min_size=1, max_size=6), min_size=1, max_size=4),
       newline=st.sampled_from(["\n", "\r\n"]), bom=st.booleans())  # fmt: skip
def test_conll_round_trip_never_changes_a_tag(tmp_path_factory, sentences, newline, bom):
    sentences = [[(w, t) for w, t in s if w != "-DOCSTART-"] for s in sentences]
    sentences = [s for s in sentences if s]
    if not sentences:
        return
    lines = []
    for sentence in sentences:
        lines += [f"{w} NN {t}" for w, t in sentence] + [""]
    path = tmp_path_factory.mktemp("rt") / "data.txt"
    path.write_bytes((BOM if bom else b"") + newline.join(lines).encode("utf-8"))
    read = loaders.read_conll(path)
    assert [list(zip(s.words, s.tags, strict=True)) for s in read] == sentences


# -- through gym.make(data_files=...) --------------------------------------------------------------
def test_label_outside_the_train_label_set_names_file_and_line(tmp_path):
    train = write(tmp_path, "train.tsv", TSV_OK)
    valid = write(tmp_path, "valid.tsv", b"sentence\tlabel\ngood\t1\nodd\t2\n")
    with pytest.raises(
        DataFormatError,
        match=re.escape(f"{valid}:3: label '2' is not in the train split's label set"),
    ):
        gym.make("lmgym/TextClassification-v0", data_files={"train": str(train), "validation": str(valid)},
                 split="validation", text_column="sentence", label_column="label")  # fmt: skip


def test_long_texts_are_truncated_as_documented_and_keep_their_label(tmp_path):
    long_text = " ".join(f"word{i}" for i in range(500))
    train = write(
        tmp_path, "train.tsv", f"sentence\tlabel\n{long_text}\t1\nshort one\t0\n".encode()
    )
    env = gym.make("lmgym/TextClassification-v0", data_files=str(train), text_column="sentence",
                   label_column="label", max_length=16, shuffle=False)  # fmt: skip
    core = env.unwrapped.core
    assert core.n_truncated == 1
    obs, _ = env.reset(seed=0)
    ids = obs["input_ids"]
    assert ids.shape == (16,) and obs["attention_mask"].all()
    assert ids[0] == core.token_info.cls_id and ids[-1] == core.token_info.sep_id
    assert env.step(core.labels.index("1"))[1] == 1.0


def test_long_sentences_are_tagged_up_to_max_words(tmp_path):
    words = [f"w{i}" for i in range(40)]
    tags = ["B-PER" if i % 5 == 0 else "O" for i in range(40)]
    conll = "\n".join(f"{w} {t}" for w, t in zip(words, tags, strict=True)) + "\n\nshort O\n"
    path = write(tmp_path, "train.txt", conll.encode())
    env = gym.make("lmgym/NER-v0", data_files=str(path), max_words=16, max_length=24, shuffle=False)
    core = env.unwrapped.core
    assert core.n_truncated == 1
    env.reset(seed=0)
    steps, total = 0, 0.0
    done = False
    while not done:
        gold = env.unwrapped.expert_action()
        assert core.tags[gold] == tags[steps], "the gold tag of each word must survive truncation"
        _, reward, terminated, truncated, info = env.step(gold)
        steps, total, done = steps + 1, total + reward, terminated or truncated
    assert steps == 16 and total == 16.0 and info["episode_metrics"]["entity_f1"] == 1.0


@pytest.mark.parametrize(
    "env_id",
    ["lmgym/NER-v0", "lmgym/TextClassification-v0", "lmgym/MultipleChoiceQA-v0", "lmgym/QA-v0"],
)
def test_gym_make_on_garbage_files_raises_only_lmgym_data_errors(tmp_path, env_id):
    suffix = {"lmgym/NER-v0": ".txt", "lmgym/TextClassification-v0": ".tsv",
              "lmgym/MultipleChoiceQA-v0": ".jsonl", "lmgym/QA-v0": ".json"}[env_id]  # fmt: skip
    extra = (
        {"text_column": "sentence", "label_column": "label"} if "Classification" in env_id else {}
    )
    good = {".txt": CONLL_OK, ".tsv": TSV_OK, ".jsonl": JSONL_OK, ".json": SQUAD_OK}[suffix]
    counter = iter(range(10**6))

    @settings(FUZZ, max_examples=40)
    @given(garbage=GARBAGE, keep=st.integers(0, len(good)))
    def run(garbage, keep):
        path = write(tmp_path, f"f{next(counter)}{suffix}", good[:keep] + garbage)
        try:
            env = gym.make(env_id, data_files=str(path), **extra)
        except LmgymDataError as exc:
            assert str(path) in str(exc) or "label" in str(exc) or "tokenizer" in str(exc), str(exc)
            return
        obs, _ = env.reset(seed=0)
        assert obs in env.observation_space
        env.step(env.unwrapped.expert_action())

    run()


# =================================================================================================
# Determinism across processes
# =================================================================================================
ROLLOUT_SCRIPT = r"""
import hashlib, sys, json
import gymnasium as gym, numpy as np
import lmgym
from tests.conftest import LMGYM_SPECS, sample_kwargs
seed = int(sys.argv[1])
out = {}
for spec in LMGYM_SPECS:
    h = hashlib.sha256()
    env = gym.make(spec.id, **sample_kwargs(spec.id))
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    for _ in range(150):
        for k in sorted(obs):
            h.update(k.encode()); h.update(obs[k].tobytes())
        valid = np.flatnonzero(env.unwrapped.action_masks())
        obs, r, te, tr, info = env.step(int(rng.choice(valid)))
        h.update(np.float64(r).tobytes()); h.update(bytes([te, tr]))
        h.update(json.dumps(info.get("episode_metrics", {}), sort_keys=True).encode())
        if te or tr:
            obs, info = env.reset()
            h.update(str(info["example_id"]).encode())
    venv = gym.make_vec(spec.id, num_envs=4, vectorization_mode="vector_entry_point", **sample_kwargs(spec.id))
    obs, _ = venv.reset(seed=seed)
    for _ in range(40):
        masks = venv.unwrapped.action_masks()
        obs, r, te, tr, _ = venv.step(np.argmax(np.where(masks, rng.random(masks.shape), -1), axis=1))
        for k in sorted(obs):
            h.update(obs[k].tobytes())
        h.update(r.tobytes()); h.update(te.tobytes())
    out[spec.id] = h.hexdigest()
print(json.dumps(out))
"""


def _rollout_hashes(*runs: tuple[int, Path, str]) -> list[dict[str, str]]:
    """Run ROLLOUT_SCRIPT once per ``(seed, cache dir, PYTHONHASHSEED)``, all at once."""
    procs = []
    for seed, cache, hash_seed in runs:
        env = {
            **os.environ,
            CACHE_ENV: str(cache),
            "PYTHONHASHSEED": hash_seed,
            "TOKENIZERS_PARALLELISM": "false",
        }
        procs.append(subprocess.Popen([sys.executable, "-c", ROLLOUT_SCRIPT, str(seed)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env))  # fmt: skip
    hashes = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        hashes.append(json.loads(out.strip().splitlines()[-1]))
    return hashes


def test_same_seed_same_rollouts_across_processes(tmp_path):
    """Two processes with their own fresh caches (so vocabularies and arrays are built twice)
    and different PYTHONHASHSEEDs produce bit-identical rollouts on every id."""
    first, second = _rollout_hashes((7, tmp_path / "cache-a", "1"), (7, tmp_path / "cache-b", "2"))
    assert first == second
    assert set(first) == {s.id for s in LMGYM_SPECS}


@pytest.mark.slow
def test_different_seed_different_rollouts_across_processes(tmp_path):
    first, other = _rollout_hashes((7, tmp_path / "cache-a", "0"), (8, tmp_path / "cache-b", "0"))
    assert all(first[k] != other[k] for k in first)


# =================================================================================================
# The shared on-disk cache under concurrency and faults
# =================================================================================================
def _make_in_child(
    cache: str, log: str, barrier, queue, env_ids=("lmgym/NER-v0", "lmgym/SST2-v0")
) -> None:
    """Spawned worker: count builds (arrays and vocabularies), make the envs, report hashes."""
    os.environ[CACHE_ENV] = cache
    import lmgym.data.cache as cache_module
    import lmgym.data.tokenization as tokenization

    def logged(name, fn):
        def wrapper(*args, **kwargs):
            with open(log, "a") as handle:
                handle.write(f"{name}\n")
            return fn(*args, **kwargs)

        return wrapper

    original = cache_module.cached_arrays

    def counting_cached_arrays(kind, key, build):
        return original(kind, key, logged(f"build {kind}", build))

    tokenization.train_wordpiece = logged("train tokenizer", tokenization.train_wordpiece)
    import lmgym.envs.dataset as dataset  # every family core's cache lookup goes through it

    dataset.cached_arrays = counting_cached_arrays
    if barrier is not None:
        barrier.wait(timeout=120)
    result = {}
    for env_id in env_ids:
        env = gym.make(env_id, data_dir="sample")
        core = env.unwrapped.core
        h = hashlib.sha256(core.tokenizer.to_str().encode())
        for name in sorted(core.data):
            h.update(name.encode())
            h.update(np.ascontiguousarray(core.data[name]).tobytes())
        obs, _ = env.reset(seed=0)
        h.update(obs["input_ids"].tobytes())
        result[env_id] = h.hexdigest()
    queue.put(result)


def _run_children(
    n: int, cache: Path, log: Path, env_ids=("lmgym/NER-v0", "lmgym/SST2-v0")
) -> list[dict]:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_make_in_child, args=(str(cache), str(log), barrier, queue, env_ids))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


def _cache_entries(cache: Path) -> dict[str, list[str]]:
    return {
        kind.name: sorted(p.name for p in kind.iterdir() if not p.name.endswith(".lock"))
        for kind in cache.iterdir()
    }


def test_concurrent_processes_share_one_cache_build(tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "builds.log"
    results = _run_children(6, cache, log)
    assert all(r == results[0] for r in results), (
        "every process must see identical arrays and vocabularies"
    )
    builds = log.read_text().splitlines()
    # NER and SST-2 each: one vocabulary trained and one array entry built, by one process.
    assert sorted(builds) == [
        "build classification",
        "build ner",
        "train tokenizer",
        "train tokenizer",
    ], builds
    entries = _cache_entries(cache)
    assert {k: len(v) for k, v in entries.items()} == {
        "ner": 1,
        "classification": 1,
        "tokenizers": 2,
    }, entries
    assert not any(name.startswith(".") for names in entries.values() for name in names), (
        "temporary files left behind"
    )

    log.write_text("")
    again = _run_children(6, cache, log)
    assert again == results and log.read_text() == "", "a warm cache must not be rebuilt"


def _killed_while_building(cache: str, marker: str) -> None:
    os.environ[CACHE_ENV] = cache
    import lmgym.envs.ner as ner

    original = ner.NERCore._build

    def slow_build(self):
        arrays = original(self)
        Path(marker).write_text("building")
        time.sleep(60)  # killed here, holding the build lock
        return arrays

    ner.NERCore._build = slow_build
    gym.make("lmgym/NER-v0", data_dir="sample")


def test_builder_killed_mid_build_leaves_a_usable_cache(tmp_path):
    cache, marker = tmp_path / "cache", tmp_path / "marker"
    ctx = mp.get_context("spawn")
    victim = ctx.Process(target=_killed_while_building, args=(str(cache), str(marker)))
    victim.start()
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert time.monotonic() < deadline and victim.is_alive(), "the builder never started"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)  # the kernel drops its flock: the next builder may go on
    victim.join()
    log = tmp_path / "builds.log"
    (result,) = _run_children(1, cache, log, env_ids=("lmgym/NER-v0",))
    assert log.read_text().splitlines() == ["build ner"]
    assert len(_cache_entries(cache)["ner"]) == 1


@pytest.mark.parametrize("damage", ["truncate_array", "delete_array", "corrupt_meta", "empty_meta"])
def test_damaged_cache_entry_is_rebuilt(tmp_path, damage):
    cache, log = tmp_path / "cache", tmp_path / "builds.log"
    (first,) = _run_children(1, cache, log, env_ids=("lmgym/NER-v0",))
    (entry,) = [p for p in (cache / "ner").iterdir() if p.is_dir()]
    target = entry / "input_ids.npy"
    if damage == "truncate_array":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "delete_array":
        target.unlink()
    elif damage == "corrupt_meta":
        (entry / "meta.json").write_text("{not json")
    else:
        (entry / "meta.json").write_text("")
    log.write_text("")
    (second,) = _run_children(1, cache, log, env_ids=("lmgym/NER-v0",))
    assert second == first and log.read_text().splitlines() == ["build ner"]


def test_cache_dir_that_is_a_file_is_a_clear_error(tmp_path, monkeypatch):
    blocker = write(tmp_path, "not-a-dir", b"")
    monkeypatch.setenv(CACHE_ENV, str(blocker))
    code = "import gymnasium as gym, lmgym; gym.make('lmgym/SST2-v0', data_dir='sample')"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode != 0
    assert str(blocker) in out.stderr.splitlines()[-1], out.stderr[-500:]


# =================================================================================================
# Training survives SIGKILL
# =================================================================================================
def _train_cmd(log_dir: Path, run: str, total: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "agents.train", "lmgym/SST2-v0", "--algo", "ppo", "--data-dir", "sample",
            "--backbone", "tiny", "--n-envs", "2", "--hp", "n_steps=32", "--hp", "batch_size=32",
            "--hp", "n_epochs=1", "--total-timesteps", str(total), "--seed", "0", "--eval-freq", "-1",
            "--threads", "1", "--log-dir", str(log_dir), "--run-name", run, "--verbose", "0", *extra]  # fmt: skip


def test_training_killed_after_a_checkpoint_resumes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    total, every = 512, 128
    # Uninterrupted reference.
    ref = subprocess.run(_train_cmd(tmp_path, "ref", total, "--checkpoint-freq", str(every)),
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_summary = json.loads(ref.stdout.strip().splitlines()[-1])

    # Killed with SIGKILL right after its first checkpoint, then resumed.
    model = tmp_path / "killed" / "model.zip"
    victim = subprocess.Popen(_train_cmd(tmp_path, "killed", total, "--checkpoint-freq", str(every)),
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 300
    while not model.exists():
        assert victim.poll() is None, victim.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    torch = pytest.importorskip("torch")
    from agents.evaluate import load_model

    at_checkpoint = load_model(model)[0].num_timesteps
    assert 0 < at_checkpoint < total, "the run must have been killed mid-way, after a checkpoint"
    resumed = subprocess.run(_train_cmd(tmp_path, "killed", total, "--checkpoint-freq", str(every), "--resume",
                                        "--save-path", str(model)),
                             capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["timesteps"] == ref_summary["timesteps"] >= total, (
        summary,
        ref_summary,
        at_checkpoint,
    )

    # Bit-identical to the run that was never killed: the checkpoint holds the env's
    # episodes and the random streams (agents.resume); progress.csv keeps the rows written
    # before the checkpoint and drops the killed run's later ones.
    ref_model, resumed_model = load_model(tmp_path / "ref" / "model.zip")[0], load_model(model)[0]
    ref_w, res_w = ref_model.policy.state_dict(), resumed_model.policy.state_dict()
    assert all(torch.equal(ref_w[k], res_w[k]) for k in ref_w)

    def curve(run: str) -> list[dict[str, str]]:
        with open(tmp_path / run / "progress.csv") as f:
            clock = ("time/fps", "time/time_elapsed", "time/iterations")
            return [{k: v for k, v in r.items() if k not in clock} for r in csv.DictReader(f)]

    assert curve("killed") == curve("ref") and len(curve("ref")) >= total // 64
    shutil.rmtree(tmp_path / "ref", ignore_errors=True)
