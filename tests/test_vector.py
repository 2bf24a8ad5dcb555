"""Native vector envs: slot ``i`` equals a single env seeded ``seed + i``.

Every registered lmgym id with a ``vector_entry_point`` is checked against
:class:`gymnasium.vector.SyncVectorEnv` of the single env (``gym.make``) under the same
seeds and actions: observations, rewards, terminations, truncations and infos (nested
``_key`` masks, ``final_obs``/``final_info`` included) must be *exactly* equal, for both
autoreset modes, on the bundled sample data.
"""

from __future__ import annotations

import pickle
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import lmgym  # noqa: F401  (registers the envs)
from tests.conftest import assert_same, sample_kwargs

VECTOR_SPECS = [
    s for s in gym.registry.values() if s.namespace == "lmgym" and s.vector_entry_point is not None
]
MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP]
NUM_ENVS = 4
STEPS = 300


def random_actions(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random valid action per row of ``bool[n, n_actions]`` masks."""
    return (rng.random(masks.shape) * masks).argmax(axis=1)


def make_pair(
    spec: gym.envs.registration.EnvSpec, mode: AutoresetMode, n: int = NUM_ENVS, **extra: Any
):
    kwargs = {**sample_kwargs(spec.id), **extra}
    native = gym.make_vec(
        spec.id, num_envs=n, vectorization_mode="vector_entry_point", autoreset_mode=mode, **kwargs
    )
    sync = gym.make_vec(
        spec.id,
        num_envs=n,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": mode},
        **kwargs,
    )
    return native, sync


def rollout_equal(
    native: gym.vector.VectorEnv,
    sync: SyncVectorEnv,
    steps: int,
    seed: int,
    follow_masks: bool = True,
) -> int:
    """Step both envs with the same random actions; return how many episodes ended."""
    rng = np.random.default_rng(seed)
    assert_same(native.reset(seed=seed), sync.reset(seed=seed), "reset")
    n_actions = native.single_action_space.n
    episodes = 0
    for t in range(steps):
        masks = native.unwrapped.action_masks()
        assert masks.dtype == np.bool_ and masks.shape == (native.num_envs, n_actions)
        assert_same(masks, np.stack(sync.call("action_masks")), f"step {t} action_masks")
        actions = random_actions(masks if follow_masks else np.ones_like(masks), rng)
        result = native.step(actions)
        expected = sync.step(actions)
        assert_same(result, expected, f"step {t}")
        episodes += int(np.sum(result[2] | result[3]))
        if t == steps // 2:  # a mid-run reset without a seed continues every stream
            assert_same(native.reset(), sync.reset(), f"step {t} reset")
    return episodes


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("spec", VECTOR_SPECS, ids=lambda s: s.id)
def test_native_equals_sync(spec, mode):
    native, sync = make_pair(spec, mode)
    assert native.metadata["autoreset_mode"] == mode
    assert native.single_observation_space == sync.single_observation_space
    assert native.single_action_space == sync.single_action_space
    assert native.observation_space == sync.observation_space
    assert native.action_space == sync.action_space
    episodes = rollout_equal(native, sync, STEPS, seed=7)
    assert episodes >= NUM_ENVS, "the rollout should cover several episode ends"
    native.close()
    sync.close()


@pytest.mark.parametrize("spec", VECTOR_SPECS, ids=lambda s: s.id)
def test_native_equals_sync_masked_actions_and_time_limit(spec):
    """Masked (invalid) actions are applied the same way; a time limit truncates like TimeLimit."""
    for mode in MODES:
        native, sync = make_pair(spec, mode, max_episode_steps=3)
        assert native.unwrapped.max_episode_steps == 3
        rollout_equal(native, sync, 60, seed=11, follow_masks=False)


@pytest.mark.parametrize("spec", VECTOR_SPECS, ids=lambda s: s.id)
def test_seed_list_reset_mask_and_pickle(spec):
    native, sync = make_pair(spec, AutoresetMode.NEXT_STEP, n=3)
    seeds = [5, None, 9]
    o1, i1 = native.reset(seed=seeds)
    o2, i2 = sync.reset(seed=seeds)
    assert_same(o1["input_ids"][[0, 2]], o2["input_ids"][[0, 2]])
    assert_same(i1["example_id"][[0, 2]], i2["example_id"][[0, 2]])

    rollout_equal(native, sync, 20, seed=3)
    mask = np.array([True, False, True])
    assert_same(
        native.reset(seed=40, options={"reset_mask": mask}),
        sync.reset(seed=40, options={"reset_mask": mask.copy()}),
    )
    rng = np.random.default_rng(0)
    for t in range(20):
        actions = random_actions(native.unwrapped.action_masks(), rng)
        assert_same(native.step(actions), sync.step(actions), f"after reset_mask, step {t}")

    clone = pickle.loads(pickle.dumps(native.unwrapped))
    for t in range(30):
        actions = random_actions(native.unwrapped.action_masks(), rng)
        assert_same(clone.step(actions), native.step(actions), f"pickled clone, step {t}")


@pytest.mark.parametrize("spec", VECTOR_SPECS, ids=lambda s: s.id)
def test_make_vec_defaults_and_copy(spec):
    """``gym.make_vec`` picks the native env; ``copy=False`` returns the same values."""
    kwargs = sample_kwargs(spec.id)
    env = gym.make_vec(spec.id, num_envs=5, **kwargs)
    assert not isinstance(env, SyncVectorEnv)
    assert env.num_envs == 5 and env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    fast = gym.make_vec(spec.id, num_envs=5, copy=False, **kwargs)
    obs, _ = env.reset(seed=1)
    fast_obs, _ = fast.reset(seed=1)
    assert env.observation_space.contains(obs)
    rng = np.random.default_rng(1)
    for t in range(50):
        actions = random_actions(env.unwrapped.action_masks(), rng)
        expected = env.step(actions)
        got = fast.step(actions)
        assert_same(got, expected, f"step {t}")
        assert env.observation_space.contains(expected[0]), (
            f"step {t}: observation outside the space"
        )
    kept = {k: v.copy() for k, v in expected[0].items()}
    env.step(random_actions(env.unwrapped.action_masks(), rng))
    assert_same(expected[0], kept, "copy=True observations must not change after the next step")


def test_invalid_actions_rejected():
    env = gym.make_vec("lmgym/NER-v0", num_envs=2, data_dir="sample")
    env.reset(seed=0)
    n = env.single_action_space.n
    with pytest.raises(ValueError, match="out of range"):
        env.step(np.array([0, n]))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="integers"):
        env.step(np.array([0.5, 1.0]))


def test_masked_action_sampler_is_valid_and_uniform():
    from lmgym.bench import MaskedActionSampler

    rng = np.random.default_rng(0)
    masks = rng.random((64, 50)) < 0.1
    masks[0] = False
    masks[0, 7] = True  # one valid action: always found (by the fallback if no candidate hits)
    sampler = MaskedActionSampler(64, 50, seed=1)
    counts = np.zeros(50)
    for _ in range(400):
        actions = sampler(masks)
        assert actions[0] == 7
        assert masks[np.arange(64), actions].all()
        counts += np.bincount(actions[1:2], minlength=50)
    valid = np.flatnonzero(masks[1])
    share = counts[valid] / counts.sum()
    np.testing.assert_allclose(share, 1 / len(valid), atol=0.08)


def test_bench_quick_run_writes_json(tmp_path):
    import json

    from lmgym.bench import main

    out = tmp_path / "bench.json"
    argv = [
        "--quick",
        "--envs",
        "lmgym/NER-v0",
        "--num-envs",
        "8",
        "--sync-envs",
        "8",
        "--sb3-envs",
        "0",
        "--seconds",
        "0.03",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    payload = json.loads(out.read_text())
    (row,) = payload["results"]
    assert (
        row["env_id"] == "lmgym/NER-v0"
        and row["native_8"]["steps_per_s"] > 0
        and row["native_over_sync"] > 0
    )
    assert {"cpu", "versions", "git_commit"} <= set(payload["meta"])
