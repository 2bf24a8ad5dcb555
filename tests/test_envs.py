"""Registry-wide behaviour: every lmgym id passes the checkers and the shared API contract."""

from __future__ import annotations

import pickle
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env

import lmgym
from tests.conftest import (
    EXPERT_FLOOR,
    FAMILY_METRIC,
    LMGYM_SPECS,
    assert_same,
    needs_real_data,
    sample_kwargs,
)

SINGLE_TASK_SPECS = [s for s in LMGYM_SPECS if "MultiTask" not in s.id]


def rollout(env: gym.Env, seed: int, steps: int = 60) -> list:
    """Observations, rewards and flags of ``steps`` random valid actions (seeded)."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    trace = [(obs, info)]
    for _ in range(steps):
        valid = np.flatnonzero(env.unwrapped.action_masks())
        obs, reward, terminated, truncated, info = env.step(int(rng.choice(valid)))
        trace.append((obs, reward, terminated, truncated, info))
        if terminated or truncated:
            obs, info = env.reset()
            trace.append((obs, info))
    return trace


@pytest.mark.parametrize("spec", LMGYM_SPECS, ids=lambda s: s.id)
def test_gymnasium_check_env(spec):
    env = gym.make(spec.id, **sample_kwargs(spec.id))
    gym_check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("spec", LMGYM_SPECS, ids=lambda s: s.id)
def test_env_tells_its_family_and_metric(spec):
    kwargs = sample_kwargs(spec.id)
    env = gym.make(spec.id, **kwargs).unwrapped
    vec = gym.make_vec(spec.id, num_envs=2, vectorization_mode="vector_entry_point", **kwargs)
    assert env.family == vec.family == env.core.family
    assert env.metric == vec.metric == FAMILY_METRIC.get(env.family)
    if env.family != "multitask":
        assert env.metric in lmgym.evaluate(
            "expert", spec.id, split="validation", max_examples=4, **kwargs
        )


@pytest.mark.parametrize("spec", LMGYM_SPECS, ids=lambda s: s.id)
def test_sb3_check_env(spec):
    from stable_baselines3.common.env_checker import check_env

    env = gym.make(spec.id, **sample_kwargs(spec.id))
    check_env(env, warn=False)


@pytest.mark.parametrize("spec", LMGYM_SPECS, ids=lambda s: s.id)
def test_same_seed_same_rollout(spec):
    first = rollout(gym.make(spec.id, **sample_kwargs(spec.id)), seed=3)
    second = rollout(gym.make(spec.id, **sample_kwargs(spec.id)), seed=3)
    assert_same(first, second)
    other = rollout(gym.make(spec.id, **sample_kwargs(spec.id)), seed=4)
    with pytest.raises(AssertionError):
        assert_same(first, other)


@pytest.mark.parametrize("spec", LMGYM_SPECS, ids=lambda s: s.id)
def test_pickle_mid_episode_continues_identically(spec):
    env = gym.make(spec.id, **sample_kwargs(spec.id))
    env.reset(seed=1)
    clone = pickle.loads(pickle.dumps(env))
    rng_a, rng_b = np.random.default_rng(0), np.random.default_rng(0)
    for _ in range(25):
        mask_a, mask_b = env.unwrapped.action_masks(), clone.unwrapped.action_masks()
        np.testing.assert_array_equal(mask_a, mask_b)
        step_a = env.step(int(rng_a.choice(np.flatnonzero(mask_a))))
        step_b = clone.step(int(rng_b.choice(np.flatnonzero(mask_b))))
        assert_same(step_a, step_b)
        if step_a[2] or step_a[3]:
            assert_same(env.reset(), clone.reset())


@pytest.mark.parametrize("spec", SINGLE_TASK_SPECS, ids=lambda s: s.id)
def test_expert_is_perfect_and_random_far_lower(spec):
    kwargs = sample_kwargs(spec.id)
    expert = lmgym.evaluate("expert", spec.id, split="validation", **kwargs)
    random = lmgym.evaluate("random", spec.id, split="validation", **kwargs)
    family = gym.make(spec.id, **kwargs).unwrapped.core.family
    metric = FAMILY_METRIC[family]
    assert expert[metric] >= EXPERT_FLOOR[metric]
    assert random[metric] < 0.7 * expert[metric]


@pytest.mark.parametrize("spec", SINGLE_TASK_SPECS, ids=lambda s: s.id)
def test_expert_action_matches_mask_and_render(spec):
    env = gym.make(spec.id, render_mode="ansi", **sample_kwargs(spec.id))
    env.reset(seed=0)
    for _ in range(10):
        action = env.unwrapped.expert_action()
        assert env.unwrapped.action_masks()[action], (
            "the gold action must always be allowed by the mask"
        )
        assert isinstance(env.render(), str) and env.render()
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            assert "episode_metrics" in info
            env.reset()


@pytest.mark.parametrize("spec", SINGLE_TASK_SPECS, ids=lambda s: s.id)
def test_unshuffled_env_iterates_the_split_in_order(spec):
    env = gym.make(spec.id, shuffle=False, **sample_kwargs(spec.id))
    seen = []
    _, info = env.reset(seed=0)
    n = env.unwrapped.core.n_examples
    for _ in range(n + 1):
        seen.append(info["example_id"])
        done = False
        while not done:
            *_, terminated, truncated, _ = env.step(env.unwrapped.expert_action())
            done = terminated or truncated
        _, info = env.reset()
    assert seen == [*range(n), 0]


@pytest.mark.parametrize("spec", SINGLE_TASK_SPECS, ids=lambda s: s.id)
def test_out_of_range_and_non_integer_actions_are_refused(spec):
    env = gym.make(spec.id, **sample_kwargs(spec.id)).unwrapped
    env.reset(seed=0)
    n = env.action_space.n
    with pytest.raises(ValueError, match="out of range"):
        env.step(n)
    with pytest.raises(ValueError, match="out of range"):
        env.step(-1)
    with pytest.raises(TypeError, match="integers"):
        env.step(0.5)
    env.step(env.expert_action())  # the env is still usable after refused actions


@pytest.mark.parametrize("spec", SINGLE_TASK_SPECS, ids=lambda s: s.id)
def test_step_before_reset_and_after_termination_is_refused(spec):
    env = gym.make(spec.id, **sample_kwargs(spec.id)).unwrapped
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)
    env.reset(seed=0)
    done = False
    while not done:
        *_, terminated, truncated, _ = env.step(env.expert_action())
        done = terminated or truncated
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)


@pytest.mark.parametrize(
    ("env_id", "kwargs", "message"),
    [
        ("lmgym/SST2-v0", {"max_length": 2}, "max_length=2: must be >= 3"),
        ("lmgym/NER-v0", {"max_words": 0}, "max_words=0: must be >= 1"),
        ("lmgym/NER-v0", {"reward_mode": "bleu"}, r"reward_mode='bleu': choose one of \('token'"),
        ("lmgym/Translation-v0", {"max_target_length": 0}, "max_target_length=0: must be >= 1"),
        ("lmgym/QA-v0", {"doc_stride": 0}, "doc_stride=0: must be >= 1"),
        (
            "lmgym/QA-v0",
            {"reward_mode": "token"},
            r"reward_mode='token': choose one of \('f1', 'em'\)",
        ),
        ("lmgym/MultipleChoiceQA-v0", {"max_choices": 1}, "max_choices=1: must be >= 2"),
    ],
)
def test_bad_sizes_and_reward_modes_name_the_argument(env_id, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gym.make(env_id, data_dir="sample", **kwargs)


@pytest.mark.parametrize("spec", SINGLE_TASK_SPECS, ids=lambda s: s.id)
def test_unknown_split_is_a_clear_error(spec):
    with pytest.raises(ValueError, match="unknown split 'dev'|no 'dev' entry"):
        gym.make(spec.id, split="dev", **sample_kwargs(spec.id))


def test_string_entry_point_form_works_without_prior_import(tmp_path):
    code = (
        "import gymnasium as gym, sys\n"
        "env = gym.make('lmgym:lmgym/NER-v0', data_dir='sample')\n"
        "env.reset(seed=0)\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'lmgym must stay torch-free'\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "LMGYM_CACHE_DIR": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_import_is_silent_and_light():
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, lmgym; print(sorted(m for m in ('torch','transformers','datasets') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "[]\n"
    assert out.stderr == ""


@needs_real_data
@pytest.mark.data
@pytest.mark.parametrize("env_id", ["lmgym/NER-v0", "lmgym/SST2-v0", "lmgym/TREC-v0"])
def test_real_data_expert_and_random(env_id):
    family_metric = {"lmgym/NER-v0": "entity_f1"}.get(env_id, "accuracy")
    expert = lmgym.evaluate("expert", env_id, split="validation")
    random = lmgym.evaluate("random", env_id, split="validation")
    assert expert[family_metric] == 1.0
    assert random[family_metric] < 0.55
    sizes = {"lmgym/NER-v0": 3250, "lmgym/SST2-v0": 872, "lmgym/TREC-v0": 500}
    assert expert["episodes"] == sizes[env_id]
