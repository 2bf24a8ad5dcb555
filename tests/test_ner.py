"""NER rewards and metrics agree with seqeval for any action sequence."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import f1_score

from lmgym.metrics import bio_entities


@pytest.fixture(scope="module")
def envs():
    return {
        mode: gym.make("lmgym/NER-v0", data_dir="sample", reward_mode=mode, bio_mask=False)
        for mode in ("token", "f1", "entity")
    }


def sentence_f1(gold: list[str], pred: list[str]) -> float:
    if not bio_entities(gold) and not bio_entities(pred):
        return 1.0
    return f1_score([gold], [pred], zero_division=0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), data=st.data())
def test_dense_f1_rewards_sum_to_seqeval_sentence_f1(envs, seed, data):
    env = envs["f1"]
    obs, info = env.reset(seed=seed)
    core = env.unwrapped.core
    total, done = 0.0, False
    while not done:
        # adversarial: any tag, including I- tags after O (bio_mask=False)
        action = data.draw(st.integers(0, len(core.tags) - 1))
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        done = terminated or truncated
    record = env.unwrapped.episode_record()
    expected = sentence_f1(record["gold"], record["pred"])
    assert info["episode_metrics"]["entity_f1"] == pytest.approx(expected)
    assert total == pytest.approx(expected, abs=1e-5)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), data=st.data())
def test_entity_rewards_pay_each_gold_entity_and_charge_each_wrong_one(envs, seed, data):
    env = envs["entity"]
    env.reset(seed=seed)
    cost = env.unwrapped.core.entity_cost
    total, done = 0.0, False
    while not done:  # any tag sequence, I- after O included (seqeval's chunking)
        _, reward, terminated, _, _ = env.step(data.draw(st.integers(0, 8)))
        total += reward
        done = terminated
    record = env.unwrapped.episode_record()
    gold, pred = set(bio_entities(record["gold"])), bio_entities(record["pred"])
    right = sum(entity in gold for entity in pred)
    assert total == pytest.approx(right - cost * (len(pred) - right), abs=1e-5)


def test_entity_reward_gives_always_o_nothing_and_refuses_a_negative_cost():
    env = gym.make("lmgym/NER-v0", data_dir="sample", reward_mode="entity", entity_cost=0.25)
    core = env.unwrapped.core
    assert core.entity_cost == 0.25
    for seed in range(5):
        env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            _, reward, done, _, _ = env.step(core.tags.index("O"))
            total += reward
        assert total == 0.0  # whatever the sentence holds: "always O" is not the easy optimum
    with pytest.raises(ValueError, match="entity_cost"):
        gym.make("lmgym/NER-v0", data_dir="sample", reward_mode="entity", entity_cost=-1)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), data=st.data())
def test_token_rewards_count_correct_tags(envs, seed, data):
    env = envs["token"]
    env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        _, reward, terminated, _, info = env.step(data.draw(st.integers(0, 8)))
        total += reward
        done = terminated
    record = env.unwrapped.episode_record()
    assert total == sum(g == p for g, p in zip(record["gold"], record["pred"], strict=True))
    assert info["episode_metrics"]["token_accuracy"] == pytest.approx(total / len(record["gold"]))


def test_bio_mask_allows_i_only_after_same_type():
    env = gym.make("lmgym/NER-v0", data_dir="sample").unwrapped
    tags = env.core.tags
    obs, _ = env.reset(seed=0)
    allowed = {tags[i] for i in np.flatnonzero(obs["action_mask"])}
    assert allowed == {t for t in tags if not t.startswith("I-")}
    obs, *_ = env.step(tags.index("B-PER"))
    allowed = {tags[i] for i in np.flatnonzero(obs["action_mask"])}
    assert "I-PER" in allowed and "I-ORG" not in allowed
    np.testing.assert_array_equal(obs["action_mask"].astype(bool), env.action_masks())


def test_observation_points_at_the_word_being_tagged():
    env = gym.make("lmgym/NER-v0", data_dir="sample").unwrapped
    obs, info = env.reset(seed=2)
    words = env.core.sentences()[info["example_id"]].words
    for k, word in enumerate(words):
        first_piece = env.tokenizer.id_to_token(int(obs["input_ids"][obs["position"][0]]))
        assert word.lower().startswith(first_piece.lower().removeprefix("##")[:1])
        assert (obs["prev_tags"][:k] >= 0).all() and (obs["prev_tags"][k:] == -1).all()
        obs, *_ = env.step(env.expert_action())


def test_corpus_f1_is_seqeval_over_the_split_not_a_mean_of_sentences():
    import lmgym

    result = lmgym.evaluate(
        "random", "lmgym/NER-v0", split="validation", data_dir="sample", return_records=True, seed=5
    )
    records = result["records"]
    corpus = f1_score([r["gold"] for r in records], [r["pred"] for r in records])
    assert result["entity_f1"] == pytest.approx(corpus)
    mean_of_sentences = np.mean([sentence_f1(r["gold"], r["pred"]) for r in records])
    assert result["entity_f1"] != pytest.approx(mean_of_sentences)
