"""lmgym/QA-v0 and lmgym/MultipleChoiceQA-v0: spans are exact context substrings scored
as the official SQuAD v1.1 script does, long contexts are windowed and recombined,
vector == sync, bad files are clear errors."""

from __future__ import annotations

import json
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

import lmgym
from lmgym.data import DataFormatError
from lmgym.data.loaders import read_multiple_choice_jsonl, read_squad
from lmgym.data.paths import SAMPLES_DIR
from lmgym.metrics import squad_f1
from tests.conftest import assert_same, needs_real_data

QA = "lmgym/QA-v0"
MC = "lmgym/MultipleChoiceQA-v0"
SAMPLE = {"data_dir": "sample"}
#: Small windows, so the sample's long paragraph spans several of them.
WINDOWED = {"data_dir": "sample", "max_length": 64, "doc_stride": 24, "max_query_length": 20}


def random_valid(env: gym.Env, rng: np.random.Generator) -> int:
    return int(rng.choice(np.flatnonzero(env.unwrapped.action_masks())))


def vector_equals_sync(env_id: str, n: int = 3, steps: int = 120, **kwargs) -> int:
    native = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", **kwargs)
    sync = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", **kwargs)
    rng = np.random.default_rng(0)
    assert_same(native.reset(seed=11), sync.reset(seed=11))
    ended = 0
    for _ in range(steps):
        masks = native.unwrapped.action_masks()
        assert_same(masks, np.stack(sync.call("action_masks")))
        actions = (rng.random(masks.shape) * masks).argmax(axis=1)
        a, b = native.step(actions), sync.step(actions)
        assert_same(a, b)
        ended += int((a[2] | a[3]).sum())
    return ended


# -- contract on non-default settings ---------------------------------------------------------
@pytest.mark.parametrize(
    "env_id, kwargs",
    [
        (QA, {**WINDOWED, "split": "validation"}),
        (QA, {**SAMPLE, "reward_mode": "em"}),
        (MC, SAMPLE),
    ],
    ids=["qa-all-windows", "qa-em", "mcqa"],
)
def test_checkers_determinism_pickle_and_vector(env_id, kwargs):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id, **kwargs)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env, warn=False)

    def trace(seed):
        e, rng = gym.make(env_id, **kwargs), np.random.default_rng(seed)
        out = [e.reset(seed=seed)]
        for _ in range(30):
            step = e.step(random_valid(e, rng))
            out.append(step[:4])
            if step[2] or step[3]:
                out.append(e.reset())
        return out

    assert_same(trace(1), trace(1))
    env.reset(seed=4)
    if env_id == QA:
        env.step(env.unwrapped.expert_action())  # mid-episode: stage 1
    clone = pickle.loads(pickle.dumps(env))
    action = env.unwrapped.expert_action()
    assert_same(env.step(action)[:4], clone.step(action)[:4])
    assert vector_equals_sync(env_id, **kwargs) >= 10


# -- extractive QA ------------------------------------------------------------------------------
def test_two_steps_masks_and_observation():
    env = gym.make(QA, max_answer_tokens=5, **SAMPLE)
    obs, _ = env.reset(seed=0)
    core = env.unwrapped.core
    assert obs["stage"].tolist() == [0] and obs["start"].tolist() == [-1]
    ids, types, mask = obs["input_ids"], obs["token_type_ids"], obs["action_mask"].astype(bool)
    sep = core.token_info.sep_id
    first_sep = int(np.flatnonzero(ids == sep)[0])
    assert ids[0] == core.token_info.cls_id and types[: first_sep + 1].sum() == 0
    context = np.flatnonzero(mask)
    assert context[0] == first_sep + 1 and ids[context[-1] + 1] == sep and types[context].all()
    start = int(context[3])
    obs, reward, terminated, _, _ = env.step(start)
    assert (
        (reward, terminated) == (0.0, False)
        and obs["stage"].tolist() == [1]
        and obs["start"].tolist() == [start]
    )
    assert np.flatnonzero(obs["action_mask"]).tolist() == list(range(start, start + 5)), (
        "end >= start, at most 5 tokens"
    )
    _, _, terminated, _, info = env.step(start + 2)
    assert terminated and set(info["episode_metrics"]) == {"f1", "exact_match"}


def test_predictions_are_exact_context_substrings_scored_like_squad():
    env = gym.make(QA, split="validation", **WINDOWED)
    core = env.unwrapped.core
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    spans = 0
    for _ in range(60):
        env.step(random_valid(env, rng))
        _, reward, *_ = env.step(random_valid(env, rng))
        record = env.unwrapped.episode_record()
        window = record["example_id"]
        context = core.contexts[int(core.data["question_par"][record["question_index"]])]
        if record["prediction"] is None:  # said "not in this window"
            assert reward == float(core.data["gold_start"][window] < 0)
        else:
            spans += 1
            assert record["prediction"] in context
            assert reward == pytest.approx(
                max(squad_f1(record["prediction"], g) for g in record["answers"])
            )
        env.reset()
    assert spans > 10


def test_long_contexts_are_windowed_and_recombined_per_question():
    env = gym.make(QA, split="validation", shuffle=False, **WINDOWED)
    core = env.unwrapped.core
    assert core.windows == "all" and core.n_examples > core.n_questions == 10
    questions = core.data["question"]
    assert np.all(np.diff(questions) >= 0), "windows are grouped by question, in order"
    has_gold = np.zeros(core.n_questions, dtype=bool)
    np.logical_or.at(has_gold, questions, core.data["gold_start"] >= 0)
    assert has_gold.all(), "every answer lies in at least one window"
    expert = lmgym.evaluate("expert", QA, split="validation", **WINDOWED)
    assert expert["exact_match"] == 100.0 and expert["f1"] == 100.0
    assert expert["questions"] == 10 and expert["windows"] == core.n_examples
    random = lmgym.evaluate("random", QA, split="validation", **WINDOWED)
    assert random["f1"] < 0.5 * expert["f1"]
    train = gym.make(QA, split="train", **WINDOWED).unwrapped.core
    assert (
        train.windows == "answer" and train.n_examples == train.n_questions
    )  # one window per question


def test_corpus_metrics_take_the_max_context_span_of_each_question():
    core = gym.make(QA, split="validation", **SAMPLE).unwrapped.core
    gold = ["Portsea"]
    records = [
        {"question_index": 0, "prediction": None, "context_score": -1, "answers": gold},
        {
            "question_index": 0,
            "prediction": "harbour city of Portsea",
            "context_score": 3,
            "answers": gold,
        },
        {"question_index": 0, "prediction": "Portsea", "context_score": 40, "answers": gold},
        {
            "question_index": 0,
            "prediction": "canal",
            "context_score": 40,
            "answers": gold,
        },  # tie: first wins
        {
            "question_index": 1,
            "prediction": None,
            "context_score": -1,
            "answers": ["1952"],
        },  # abstained everywhere
        {"question_index": 2, "prediction": "", "context_score": -1, "answers": ["x"]},
        {"question_index": 2, "prediction": "the 1952", "context_score": 0, "answers": ["1952"]},
    ]
    scores = core.corpus_metrics(records)
    assert scores["questions"] == 3 and scores["windows"] == 7
    assert scores["exact_match"] == pytest.approx(100 * 2 / 3)  # "the 1952" normalises to "1952"


def test_em_reward_mode_and_gold_beyond_max_answer_tokens():
    env = gym.make(QA, reward_mode="em", **SAMPLE)
    env.reset(seed=3)
    env.step(env.unwrapped.expert_action())
    gold_end = env.unwrapped.expert_action()
    _, reward, *_ = env.step(
        gold_end - 1 if gold_end > int(env.unwrapped.state["start"][0, 0]) else gold_end + 1
    )
    assert reward in (0.0, 1.0)
    short = gym.make(QA, max_answer_tokens=2, **SAMPLE)
    short.reset(seed=0)
    for _ in range(20):  # the expert stays inside the mask even when gold answers are longer
        action = short.unwrapped.expert_action()
        assert short.unwrapped.action_masks()[action]
        *_, terminated, _, _ = short.step(action)
        if terminated:
            short.reset()
    assert short.unwrapped.core.n_long_answers > 0


def test_expert_action_is_gold_and_render():
    env = gym.make(QA, render_mode="ansi", **SAMPLE)
    env.reset(seed=0)
    env.step(env.unwrapped.expert_action())
    _, reward, _, _, info = env.step(env.unwrapped.expert_action())
    assert reward == 1.0 and info["episode_metrics"] == {"f1": 1.0, "exact_match": 1.0}
    record = env.unwrapped.episode_record()
    assert "[[" + record["prediction"] + "]]" in env.render()


# -- multiple choice --------------------------------------------------------------------------
def test_multiple_choice_layout_mask_and_answers_by_index_or_text():
    env = gym.make(MC, shuffle=False, **SAMPLE)
    core = env.unwrapped.core
    examples = read_multiple_choice_jsonl(SAMPLES_DIR / "mcqa" / "train.jsonl")
    raw = [
        json.loads(line) for line in (SAMPLES_DIR / "mcqa" / "train.jsonl").read_text().splitlines()
    ]
    assert any(isinstance(r["answer"], str) for r in raw) and any(
        isinstance(r["answer"], int) for r in raw
    )
    for example, r in zip(examples, raw, strict=True):
        assert example.choices[example.answer] == (
            r["answer"] if isinstance(r["answer"], str) else r["choices"][r["answer"]]
        )
    obs, info = env.reset(seed=0)
    for i, example in enumerate(examples):
        k = len(example.choices)
        assert obs["action_mask"].tolist() == [1] * k + [0] * (core.max_choices - k)
        positions = obs["choice_positions"]
        assert (positions[k:] == -1).all()
        sep = core.token_info.sep_id
        assert all(obs["input_ids"][p - 1] == sep for p in positions[:k]), (
            "each choice follows a [SEP]"
        )
        first = core.tokenizer.encode(example.choices[0], add_special_tokens=False).ids[0]
        assert obs["input_ids"][positions[0]] == first
        _, reward, terminated, _, _ = env.step(example.answer)
        assert reward == 1.0 and terminated
        if i + 1 < len(examples):
            obs, info = env.reset()
    scores = lmgym.evaluate("expert", MC, split="test", **SAMPLE)
    assert scores["accuracy"] == 1.0 and scores["episodes"] == 8


def test_multiple_choice_data_files_and_truncation(tmp_path):
    rows = [
        {
            "question": "Pick the word that rhymes with cat. " * 8,
            "choices": ["hat", "dog", "sun"],
            "answer": "hat",
        },
        {
            "context": "A long passage. " * 40,
            "question": "Which is a colour?",
            "choices": ["red", "run"],
            "answer": 0,
        },
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    env = gym.make(MC, data_files=str(path), max_length=24, max_choices=3)
    core = env.unwrapped.core
    assert core.n_examples == 2 and core.n_truncated == 2 and env.action_space.n == 3
    obs, _ = env.reset(seed=0)
    assert obs["attention_mask"].sum() <= 24 and (obs["choice_positions"][:2] > 0).all()
    assert (
        lmgym.evaluate(
            "expert", MC, split="train", data_files=str(path), max_length=24, max_choices=3
        )["accuracy"]
        == 1.0
    )


# -- bad input --------------------------------------------------------------------------------
def _squad(tmp_path, qa: dict, context: str = "The cat sat on the mat.") -> str:
    data = {
        "version": "1.1",
        "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [qa]}]}],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data, indent=1))
    return str(path)


def test_squad_errors_name_file_line_and_question(tmp_path):
    ok = {"id": "q1", "question": "Where?", "answers": [{"text": "on the mat", "answer_start": 12}]}
    assert read_squad(_squad(tmp_path, ok))[0].answers == (("on the mat", 12),)
    wrong_start = dict(ok, answers=[{"text": "on the mat", "answer_start": 3}])
    with pytest.raises(
        DataFormatError,
        match=r"bad\.json:\d+: data\[0\]\.paragraphs\[0\]\.qas\[0\] \(id q1\).*not found in the context at answer_start=3 \(it occurs at character 12\)",
    ):
        read_squad(_squad(tmp_path, wrong_start))
    absent = dict(ok, answers=[{"text": "on the sofa", "answer_start": 12}])
    with pytest.raises(DataFormatError, match="does not occur in the context"):
        gym.make(QA, data_files=_squad(tmp_path, absent))
    with pytest.raises(DataFormatError, match=r"bad\.json:\d+: .*missing field 'question'"):
        read_squad(_squad(tmp_path, {"id": "q1", "answers": ok["answers"]}))
    with pytest.raises(DataFormatError, match="SQuAD 2.0"):
        read_squad(_squad(tmp_path, dict(ok, is_impossible=True, answers=[])))
    bad = tmp_path / "broken.json"
    bad.write_text('{"data": [\n  {"paragraphs": [}\n]}')
    with pytest.raises(DataFormatError, match=r"broken\.json:2: invalid JSON"):
        gym.make(QA, data_files=str(bad))
    with pytest.raises(DataFormatError, match="missing field 'data'"):
        read_squad(_write(tmp_path / "nodata.json", "{}"))


def _write(path, text):
    path.write_text(text)
    return path


def test_multiple_choice_errors_name_file_and_line(tmp_path):
    good = '{"question": "q?", "choices": ["a", "b"], "answer": 1}\n'
    cases = {
        '{"question": "q?", "choices": ["a", "b"], "answer": 1\n': r"invalid JSON",
        '{"question": "q?", "choices": ["a", "b"]}\n': r"missing field 'answer'",
        '{"question": "q?", "choices": ["a", "b"], "answer": 2}\n': r"answer index 2 out of range",
        '{"question": "q?", "choices": ["a", "b"], "answer": "c"}\n': r"'c' is not one of the choices",
        '{"question": "q?", "choices": ["a"], "answer": 0}\n': r"at least 2",
        '["q?", ["a", "b"], 0]\n': r"expected a JSON object",
    }
    for line, message in cases.items():
        path = _write(tmp_path / "mc.jsonl", good + "\n" + line)
        with pytest.raises(DataFormatError, match=rf"mc\.jsonl:3: .*{message}"):
            read_multiple_choice_jsonl(path)
    many = _write(
        tmp_path / "many.jsonl",
        good + '{"question": "q?", "choices": ["a", "b", "c", "d"], "answer": 3}\n',
    )
    with pytest.raises(DataFormatError, match=r"many\.jsonl:2: 4 choices but max_choices=3"):
        gym.make(MC, data_files=str(many), max_choices=3)


# -- the real SQuAD -----------------------------------------------------------------------------
@needs_real_data
@pytest.mark.data
def test_real_squad_expert_and_random():
    expert = lmgym.evaluate("expert", QA, split="validation", return_records=True)
    random = lmgym.evaluate("random", QA, split="validation")
    assert expert["questions"] == 1988 and expert["windows"] >= 1988
    assert expert["f1"] >= 97.0 and expert["exact_match"] >= 95.0
    assert random["f1"] < 15.0
    core = gym.make(QA, split="validation").unwrapped.core
    for record in expert["records"][:300]:
        context = core.contexts[int(core.data["question_par"][record["question_index"]])]
        assert record["prediction"] is None or record["prediction"] in context
    train = gym.make(QA, split="train").unwrapped.core
    assert train.n_examples == train.n_questions == 8582 and train.n_unreachable == 0
