"""lmgym/Translation-v0: rewards are sacreBLEU/chrF of the decoded text, the expert
reproduces the references, vector == sync, bad parallel files are clear errors."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import sacrebleu
from gymnasium.utils.env_checker import check_env as gym_check_env

import lmgym
from lmgym.data import DataFormatError, DatasetNotFoundError
from lmgym.data.loaders import read_parallel
from lmgym.data.paths import SAMPLES_DIR
from tests.conftest import assert_same, needs_real_data

ENV_ID = "lmgym/Translation-v0"
SAMPLE = {"data_dir": "sample"}


def play(env: gym.Env, policy, seed: int | None = None):
    """One episode; returns (rewards, last info)."""
    if seed is not None:
        env.reset(seed=seed)
    rewards, done = [], False
    while not done:
        _, reward, terminated, truncated, info = env.step(policy(env))
        rewards.append(reward)
        done = terminated or truncated
    return rewards, info


def random_policy(rng: np.random.Generator, p_eos: float = 0.1):
    def act(env):
        core = env.unwrapped.core
        return core.eos_id if rng.random() < p_eos else int(rng.integers(core.n_actions))

    return act


def expert(env):
    return env.unwrapped.expert_action()


class AllowTokens:
    """An ``action_mask_fn``: a fixed token subset minus the last token written (so it
    reads the observation). Module level, so envs using it pickle."""

    def __init__(self, size: int, allowed: list[int]) -> None:
        self.size, self.allowed = size, allowed

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        mask = np.zeros(self.size, dtype=bool)
        mask[self.allowed] = True
        written = int(obs["target_mask"].sum())
        if written:
            mask[obs["target_ids"][written - 1]] = False
        return mask


# -- the Gymnasium / SB3 contract on non-default settings -------------------------------------
@pytest.mark.parametrize("mode", ["bleu", "chrf", "bleu_dense", "chrf_dense"])
def test_checkers_every_reward_mode(mode):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(ENV_ID, reward_mode=mode, **SAMPLE)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env, warn=False)


def test_observation_layout_and_episode_end():
    env = gym.make(ENV_ID, max_target_length=6, **SAMPLE)
    core = env.unwrapped.core
    obs, _ = env.reset(seed=0)
    assert obs["target_mask"].sum() == 0 and obs["action_mask"].all()
    assert obs["action_mask"].shape == (core.target_vocab_size,) == (env.action_space.n,)
    obs, reward, terminated, truncated, _ = env.step(5)
    assert obs["target_ids"][0] == 5 and obs["target_mask"].tolist() == [1, 0, 0, 0, 0, 0]
    assert (reward, terminated, truncated) == (0.0, False, False)
    *_, terminated, truncated, info = env.step(core.eos_id)
    assert terminated and not truncated and info["episode_metrics"]["length"] == 2
    env.reset()
    for _ in range(6):  # never EOS: truncated after max_target_length tokens
        *_, terminated, truncated, info = env.step(7)
    assert truncated and not terminated and "episode_metrics" in info


# -- rewards = sacreBLEU / chrF on raw text ---------------------------------------------------
@pytest.mark.parametrize("metric", ["bleu", "chrf"])
def test_final_reward_is_sacrebleu_sentence_score(metric):
    env = gym.make(ENV_ID, reward_mode=metric, **SAMPLE)
    rng = np.random.default_rng(0)
    for seed in range(12):
        # a noisy expert: mostly gold tokens, some random ones, so scores vary
        def policy(e):
            return expert(e) if rng.random() < 0.8 else int(rng.integers(e.action_space.n))

        rewards, info = play(env, policy, seed=seed)
        record = env.unwrapped.episode_record()
        hyp, ref = record["hypothesis"], record["reference"]
        if metric == "bleu":
            expected = sacrebleu.sentence_bleu(hyp, [ref]).score  # effective order, exp smoothing
        else:
            expected = sacrebleu.sentence_chrf(hyp, [ref]).score
        assert all(r == 0 for r in rewards[:-1])
        assert rewards[-1] == pytest.approx(expected / 100, abs=1e-6)
        assert info["episode_metrics"][metric] == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["bleu_dense", "chrf_dense"])
def test_dense_rewards_sum_to_the_final_sentence_score(mode):
    env = gym.make(ENV_ID, reward_mode=mode, **SAMPLE)
    rng = np.random.default_rng(1)
    nonzero_before_end = 0
    for seed in range(10):

        def policy(e):
            return expert(e) if rng.random() < 0.7 else int(rng.integers(e.action_space.n))

        rewards, info = play(env, policy, seed=seed)
        final = info["episode_metrics"][mode.split("_")[0]] / 100
        assert sum(rewards) == pytest.approx(final, abs=1e-5)
        nonzero_before_end += sum(r != 0 for r in rewards[:-1])
    assert nonzero_before_end > 0, "dense mode should reward prefixes, not only the end"


def test_expert_reproduces_references_and_random_is_far_lower():
    for split in ("validation", "test"):
        expert_scores = lmgym.evaluate("expert", ENV_ID, split=split, **SAMPLE)
        random_scores = lmgym.evaluate("random", ENV_ID, split=split, **SAMPLE)
        assert expert_scores["bleu"] >= 99.99 and expert_scores["chrf"] >= 99.99
        assert random_scores["bleu"] < 5 and random_scores["chrf"] < 30


def test_records_hold_the_raw_reference_line():
    env = gym.make(ENV_ID, split="validation", shuffle=False, **SAMPLE)
    env.reset(seed=0)
    play(env, expert)
    with gzip.open(SAMPLES_DIR / "multi30k" / "val.de.gz", "rt", encoding="utf-8") as handle:
        first = handle.readline().rstrip("\n")
    record = env.unwrapped.episode_record()
    assert record["reference"] == first == record["hypothesis"]


def test_default_target_vocab_round_trips_and_has_eos():
    core = gym.make(ENV_ID, **SAMPLE).unwrapped.core
    tok = core.target_tokenizer
    assert (
        tok.id_to_token(core.eos_id) == "[EOS]" and tok.id_to_token(core.target_pad_id) == "[PAD]"
    )
    for text in (
        "Ein Mann schläft auf dem Sofa.",
        "Zwei Hunde  spielen – im Schnee!",
        "Ünïcödé ñ 123",
    ):
        assert tok.decode(tok.encode(text).ids).strip() == text
    assert core.n_actions == tok.get_vocab_size(with_added_tokens=True)


# -- same seeds, pickling, vector env ---------------------------------------------------------
def test_same_seed_same_episodes_and_pickle_round_trip():
    def trace(env, seed):
        rng = np.random.default_rng(seed)
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for _ in range(80):
            obs, r, te, tr, info = env.step(random_policy(rng, 0.15)(env))
            out.append((obs, r, te, tr))
            if te or tr:
                out.append(env.reset()[0])
        return out

    make = lambda: gym.make(ENV_ID, reward_mode="bleu_dense", **SAMPLE)  # noqa: E731
    assert_same(trace(make(), 3), trace(make(), 3))
    env = make()
    env.reset(seed=2)
    env.step(env.unwrapped.expert_action())
    clone = pickle.loads(pickle.dumps(env))
    for _ in range(30):
        action = env.unwrapped.expert_action()
        a, b = env.step(action), clone.step(action)
        assert_same(a[:4], b[:4])
        if a[2] or a[3]:
            assert_same(env.reset(), clone.reset())


def _vector_equals_sync(n: int = 3, steps: int = 150, **kwargs) -> int:
    native = gym.make_vec(
        ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", **SAMPLE, **kwargs
    )
    sync = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="sync", **SAMPLE, **kwargs)
    rng = np.random.default_rng(0)
    assert_same(native.reset(seed=5), sync.reset(seed=5))
    ended = 0
    eos = native.unwrapped.core.eos_id
    for _ in range(steps):
        masks = native.unwrapped.action_masks()
        assert_same(masks, np.stack(sync.call("action_masks")))
        actions = (rng.random(masks.shape) * masks).argmax(axis=1)
        actions[rng.random(n) < 0.1] = eos
        a, b = native.step(actions), sync.step(actions)
        assert_same(a, b)
        ended += int((a[2] | a[3]).sum())
    return ended


@pytest.mark.parametrize("mode", ["bleu", "chrf_dense"])
def test_vector_env_equals_sync_vector_env(mode):
    assert _vector_equals_sync(reward_mode=mode) >= 5


@pytest.mark.parametrize("mode", ["bleu", "chrf"])
def test_vector_env_scoring_many_episodes_at_once_equals_sync_vector_env(mode):
    # Episodes that reach the length limit end together: batches of at least
    # BATCH_SCORING hypotheses take the numpy scorer, the single envs score one by one.
    from lmgym.envs.translation import BATCH_SCORING

    n = 3 * BATCH_SCORING
    assert _vector_equals_sync(n=n, steps=30, reward_mode=mode, max_target_length=6) >= 4 * n


def test_action_mask_fn_restricts_the_vocabulary_and_vector_agrees():
    core = gym.make(ENV_ID, **SAMPLE).unwrapped.core
    allowed = [core.eos_id, *range(100, 140)]
    fn = AllowTokens(core.n_actions, allowed)
    env = gym.make(ENV_ID, action_mask_fn=fn, **SAMPLE)
    obs, _ = env.reset(seed=0)
    assert np.flatnonzero(obs["action_mask"]).tolist() == sorted(allowed)
    assert np.flatnonzero(env.unwrapped.action_masks()).tolist() == sorted(allowed)
    obs, *_ = env.step(120)
    assert np.flatnonzero(obs["action_mask"]).tolist() == sorted(set(allowed) - {120})
    gym_check_env(env.unwrapped, skip_render_check=True)
    clone = pickle.loads(pickle.dumps(env))
    assert_same(clone.unwrapped.action_masks(), env.unwrapped.action_masks())
    assert _vector_equals_sync(steps=60, action_mask_fn=fn) >= 1

    with pytest.raises(ValueError, match="shape"):
        gym.make(ENV_ID, action_mask_fn=lambda obs: np.ones(3, bool), **SAMPLE).reset(seed=0)


def test_render_shows_source_reference_and_hypothesis():
    env = gym.make(ENV_ID, render_mode="ansi", **SAMPLE)
    env.reset(seed=0)
    for _ in range(3):
        env.step(env.unwrapped.expert_action())
    text = env.render()
    record = env.unwrapped.episode_record()
    assert (
        record["reference"] in text and record["hypothesis"] in text and text.startswith("source ")
    )


# -- other corpora and language pairs ---------------------------------------------------------
def _pairs():
    en = (
        gzip.open(SAMPLES_DIR / "multi30k" / "train.en.gz", "rt", encoding="utf-8")
        .read()
        .splitlines()
    )
    de = (
        gzip.open(SAMPLES_DIR / "multi30k" / "train.de.gz", "rt", encoding="utf-8")
        .read()
        .splitlines()
    )
    return en, de


def test_data_files_as_line_pairs_and_as_tsv(tmp_path):
    en, de = _pairs()
    (tmp_path / "a.src").write_text("\n".join(en) + "\n", encoding="utf-8")
    (tmp_path / "a.tgt").write_text("\n".join(de) + "\n", encoding="utf-8")
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text(
        "english\tgerman\n" + "".join(f"{e}\t{d}\n" for e, d in zip(en, de, strict=True)),
        encoding="utf-8",
    )
    as_pair = {
        "data_files": {s: (tmp_path / "a.src", tmp_path / "a.tgt") for s in ("train", "validation")}
    }
    as_tsv = {"data_files": str(tsv), "source_column": "english", "target_column": "german"}
    for kwargs in (as_pair, as_tsv):
        result = lmgym.evaluate("expert", ENV_ID, split="validation", **kwargs)
        assert result["episodes"] == len(en) and result["bleu"] >= 99.99


def test_other_language_direction_from_the_catalog():
    env = gym.make(ENV_ID, source_lang="de", target_lang="en", **SAMPLE)
    env.reset(seed=0)
    play(env, expert)
    record = env.unwrapped.episode_record()
    assert record["hypothesis"] == record["reference"] and record["reference"].isascii()
    with pytest.raises(DatasetNotFoundError, match=r"train\.fr"):
        gym.make(ENV_ID, target_lang="fr", **SAMPLE)


# -- bad input --------------------------------------------------------------------------------
def test_mismatched_line_counts_name_file_and_line(tmp_path):
    src, tgt = tmp_path / "x.en", tmp_path / "x.de"
    src.write_text("one\ntwo\nthree\n")
    tgt.write_text("eins\nzwei\n")
    with pytest.raises(DataFormatError, match=r"x\.en:3: .*3 lines but x\.de has 2") as err:
        read_parallel(src, tgt)
    assert err.value.line == 3
    with pytest.raises(DataFormatError, match=r"x\.en:3"):
        gym.make(ENV_ID, data_files=(src, tgt))


def test_one_sided_empty_line_and_corrupt_gzip(tmp_path):
    src, tgt = tmp_path / "y.en", tmp_path / "y.de"
    src.write_text("one\n\nthree\n")
    tgt.write_text("eins\nzwei\ndrei\n")
    with pytest.raises(DataFormatError, match=r"y\.en:2: empty sentence"):
        read_parallel(src, tgt)
    good = gzip.compress(("a line of text\n" * 2000).encode())
    broken = tmp_path / "z.en.gz"
    broken.write_bytes(good[: len(good) // 2])
    (tmp_path / "z.de.gz").write_bytes(good)
    with pytest.raises(DataFormatError, match=r"z\.en\.gz:\d+: corrupt or truncated"):
        read_parallel(broken, tmp_path / "z.de.gz")
    not_gzip = tmp_path / "w.en.gz"
    not_gzip.write_bytes(b"plain text, not gzip\n")
    with pytest.raises(DataFormatError, match=r"w\.en\.gz:1: corrupt"):
        read_parallel(not_gzip, tmp_path / "z.de.gz")


def test_tsv_missing_column_and_data_files_errors(tmp_path):
    tsv = tmp_path / "p.tsv"
    tsv.write_text("en\tde\nhello\thallo\n")
    with pytest.raises(DataFormatError, match=r"p\.tsv:1: header has no column 'source'"):
        gym.make(ENV_ID, data_files=str(tsv))
    with pytest.raises(ValueError, match="no 'validation' entry"):
        gym.make(
            ENV_ID,
            split="validation",
            data_files={"train": str(tsv)},
            source_column="en",
            target_column="de",
        )
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        gym.make(ENV_ID, data_files=(tmp_path / "nope.en", tmp_path / "nope.de"))
    with pytest.raises(ValueError, match="reward_mode"):
        gym.make(ENV_ID, reward_mode="rouge", **SAMPLE)


# -- the real Multi30k ------------------------------------------------------------------------
@needs_real_data
@pytest.mark.data
def test_real_multi30k_expert_bleu_and_random():
    expert_scores = lmgym.evaluate("expert", ENV_ID, split="validation")
    random_scores = lmgym.evaluate("random", ENV_ID, split="validation")
    assert expert_scores["episodes"] == 1014
    assert expert_scores["bleu"] >= 95.0 and expert_scores["chrf"] >= 95.0
    assert random_scores["bleu"] < 1.0 and random_scores["chrf"] < 25.0
    core = gym.make(ENV_ID, split="train").unwrapped.core
    assert core.n_examples == 29000 and core.n_target_truncated == 0 and core.n_truncated == 0
    assert Path(core._source.path).name == "train.en.gz"
