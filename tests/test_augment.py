"""``augment=``: training episodes only, reproducible by seed, exact vector equivalence."""

from __future__ import annotations

from collections import Counter

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import lmgym  # noqa: F401
from lmgym.envs.augment import Augmenter
from tests.conftest import sample_kwargs
from tests.test_vector import make_pair, rollout_equal

SST2, NER, MT = "lmgym/SST2-v0", "lmgym/NER-v0", "lmgym/MultiTask-v0"
STRONG = {"drop": 0.2, "swap": 0.2, "mask": 0.2}


def episodes(env_id: str, n: int = 40, seed: int = 0, **kwargs):
    """``(example_id, input_ids, attention_mask)`` of ``n`` first observations of episodes."""
    env = gym.make(env_id, **{**sample_kwargs(env_id), **kwargs})
    out = []
    for i in range(n):
        obs, info = env.reset(seed=seed if i == 0 else None)
        out.append((info["example_id"], obs["input_ids"].copy(), obs["attention_mask"].copy()))
    return out


def test_augmentation_perturbs_training_episodes_without_changing_which_are_played():
    plain, augmented = episodes(SST2), episodes(SST2, augment=STRONG)
    pad = gym.make(SST2, **sample_kwargs(SST2)).unwrapped.core.token_info.pad_id
    assert [e for e, *_ in plain] == [e for e, *_ in augmented], "same examples, same order"
    changed = sum(not np.array_equal(a[1], b[1]) for a, b in zip(plain, augmented, strict=True))
    assert changed > len(plain) // 2
    for (_, ids, mask), (_, ids_aug, mask_aug) in zip(plain, augmented, strict=True):
        n, m = int(mask.sum()), int(mask_aug.sum())
        assert 3 <= m <= n and ids_aug[0] == ids[0] and ids_aug[m - 1] == ids[n - 1], (
            "[CLS] ... [SEP]"
        )
        assert np.all(ids_aug[m:] == pad), "padding after [SEP]"
        assert np.array_equal(mask_aug, np.arange(len(mask)) < m)


def test_augmentation_is_reproducible_by_seed():
    a, b = episodes(SST2, seed=3, augment=STRONG), episodes(SST2, seed=3, augment=STRONG)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    c = episodes(SST2, seed=4, augment=STRONG)
    assert any(not np.array_equal(x[1], y[1]) for x, y in zip(a, c, strict=False))


@pytest.mark.parametrize("split", ["validation", "test"])
@pytest.mark.parametrize("env_id", [SST2, NER])
def test_evaluation_splits_are_never_augmented(env_id, split):
    plain = episodes(env_id, split=split)
    augmented = episodes(env_id, split=split, augment={"mask": 0.5})
    for x, y in zip(plain, augmented, strict=True):
        assert x[0] == y[0] and np.array_equal(x[1], y[1]) and np.array_equal(x[2], y[2])
    assert not gym.make(
        env_id, split=split, augment={"mask": 0.5}, **sample_kwargs(env_id)
    ).unwrapped.core.augments


def test_ner_masking_keeps_every_position_and_only_writes_mask_tokens():
    env = gym.make(NER, augment={"mask": 0.3}, **sample_kwargs(NER))
    plain = gym.make(NER, **sample_kwargs(NER))
    mask_id = env.unwrapped.core.tokenizer.token_to_id("[MASK]")
    masked = 0
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        ref, _ = plain.reset(seed=seed)
        assert np.array_equal(obs["attention_mask"], ref["attention_mask"])
        assert np.array_equal(obs["position"], ref["position"])
        diff = obs["input_ids"] != ref["input_ids"]
        assert np.all(obs["input_ids"][diff] == mask_id)
        masked += int(diff.sum())
    assert masked > 0


def test_swap_and_mask_keep_the_length_and_swap_keeps_the_tokens():
    rows = np.array([[2, 10, 11, 12, 13, 14, 3, 0]], dtype=np.int32)
    for seed in range(20):
        swapped = rows.copy()
        lengths = Augmenter({"swap": 0.5}, ("swap",), "t", 4, 0).apply(
            swapped, np.array([7]), [np.random.default_rng(seed)]
        )
        assert lengths[0] == 7 and Counter(swapped[0]) == Counter(rows[0])
        assert swapped[0, 0] == 2 and swapped[0, 6] == 3
        dropped = rows.copy()
        lengths = Augmenter({"drop": 0.9}, ("drop",), "t", 4, 0).apply(
            dropped, np.array([7]), [np.random.default_rng(seed)]
        )
        n = int(lengths[0])
        assert 3 <= n < 7 and dropped[0, n - 1] == 3 and np.all(dropped[0, n:] == 0)
        assert set(dropped[0, 1 : n - 1]) <= {10, 11, 12, 13, 14}


@pytest.mark.parametrize(
    "mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP], ids=lambda m: m.value
)
def test_vector_slot_equals_a_single_env_with_augmentation(mode):
    native, sync = make_pair(gym.spec(SST2), mode, augment=STRONG)
    assert rollout_equal(native, sync, steps=30, seed=5) > 0


def test_multitask_augments_the_task_given_it():
    tasks = [SST2, "lmgym/TREC-v0"]
    kwargs = {"tasks": tasks, "task_kwargs": {i: sample_kwargs(i) for i in tasks}}
    kwargs["task_kwargs"][SST2] = {**kwargs["task_kwargs"][SST2], "augment": STRONG}
    plain = gym.make_vec(
        MT, num_envs=16, **{**kwargs, "task_kwargs": {i: sample_kwargs(i) for i in tasks}}
    )
    augmented = gym.make_vec(MT, num_envs=16, **kwargs)
    a, _ = plain.reset(seed=0)
    b, _ = augmented.reset(seed=0)
    assert np.array_equal(a["task_id"], b["task_id"])
    differs = np.any(a["input_ids"] != b["input_ids"], axis=1)
    task = a["task_id"][:, 0]
    assert differs[task == 0].any() and not differs[task == 1].any()


def test_bad_augment_specs_explain_the_fix():
    with pytest.raises(ValueError, match=r"ner family; it takes \['mask'\]"):
        gym.make(NER, augment={"drop": 0.1}, **sample_kwargs(NER))
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        gym.make(SST2, augment={"mask": 1.5}, **sample_kwargs(SST2))
    with pytest.raises(TypeError, match="mapping of operation"):
        gym.make(SST2, augment="mask", **sample_kwargs(SST2))
