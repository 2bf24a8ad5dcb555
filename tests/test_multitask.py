"""lmgym/MultiTask-v0: routing, unified spaces, task sampling, per-task metrics.

The mix is built from every registered single-task lmgym id (so new families join the
tests as they are registered), on the bundled sample data with the shared "minilm"
tokenizer.
"""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import lmgym  # noqa: F401
from lmgym.envs.multitask import MultiTaskCore, TaskMixSampler
from tests.conftest import sample_kwargs
from tests.test_vector import assert_same, random_actions, rollout_equal

MT = "lmgym/MultiTask-v0"
TASK_IDS = [s.id for s in gym.registry.values() if s.namespace == "lmgym" and s.id != MT]
TASK_KWARGS = {i: sample_kwargs(i) for i in TASK_IDS}
WEIGHTS = {
    i: w for i, w in zip(TASK_IDS, np.linspace(1.0, 2.0, len(TASK_IDS)).tolist(), strict=True)
}


def make_vec(n: int = 8, tasks=None, **kwargs):
    tasks = WEIGHTS if tasks is None else tasks
    task_kwargs = {i: TASK_KWARGS[i] for i in tasks}
    return gym.make_vec(MT, num_envs=n, tasks=tasks, task_kwargs=task_kwargs, **kwargs)


@pytest.mark.parametrize(
    "mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP], ids=lambda m: m.value
)
def test_every_task_equals_sync(mode):
    """With fixed weights, slot i equals a single MultiTask env seeded seed + i."""
    kwargs = {"tasks": WEIGHTS, "task_kwargs": TASK_KWARGS}
    native = gym.make_vec(MT, num_envs=6, autoreset_mode=mode, **kwargs)
    sync = gym.make_vec(
        MT, num_envs=6, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}, **kwargs
    )
    assert native.single_observation_space == sync.single_observation_space
    rollout_equal(native, sync, 300, seed=5)
    rollout_equal(native, sync, 60, seed=6, follow_masks=False)


def test_unified_spaces_and_observations():
    env = make_vec(16, copy=False)
    core: MultiTaskCore = env.unwrapped.core
    space = env.single_observation_space
    assert env.unwrapped.task_ids == sorted(WEIGHTS)
    assert "ner" in env.unwrapped.task_names and "classification" in env.unwrapped.task_families
    n_actions = [c.n_actions for c in core.cores]
    assert env.single_action_space.n == max(n_actions) == max(env.unwrapped.task_n_actions)
    keys = set().union(*(c.single_observation_space.spaces for c in core.cores))
    assert set(space.spaces) == keys | {"task_id"}
    for key in keys:
        assert space[key].shape[0] == max(
            c.single_observation_space[key].shape[0]
            for c in core.cores
            if key in c.single_observation_space.spaces
        )
    pad = core.token_info.pad_id

    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(100):
        assert env.observation_space.contains(obs)
        masks = env.unwrapped.action_masks()
        np.testing.assert_array_equal(masks, obs["action_mask"].astype(bool))
        state = env.unwrapped.state
        for slot, k in enumerate(obs["task_id"][:, 0]):
            seen.add(int(k))
            sub = core.cores[k]
            own = sub.observe(core.sub_state(state, k), np.array([slot]))
            for key, value in own.items():
                width = value.shape[1]
                np.testing.assert_array_equal(obs[key][slot, :width], value[0], err_msg=key)
                fill = pad if key == "input_ids" else (-1 if space[key].low.min() < 0 else 0)
                assert np.all(obs[key][slot, width:] == fill), f"{key} padding"
            for key in keys - set(own):
                assert not obs[key][slot].any(), f"{key} must be zeros for task {k}"
            assert not masks[slot, sub.n_actions :].any(), (
                "actions past the task's range are masked"
            )
        obs, *_ = env.step(random_actions(masks, rng))
    assert seen == set(range(len(TASK_IDS)))


def test_task_frequencies_follow_weights():
    tasks = {"lmgym/SST2-v0": 0.7, "lmgym/TREC-v0": 0.2, "lmgym/NER-v0": 0.1}
    env = make_vec(256, tasks=tasks)
    env.reset(seed=1)
    counts = np.zeros(3)
    counts += np.bincount(env.unwrapped.state["task"], minlength=3)
    rng = np.random.default_rng(0)
    for _ in range(40):
        _, _, term, trunc, _ = env.step(random_actions(env.unwrapped.action_masks(), rng))
        done = term | trunc
        # NEXT_STEP: slots that ended start their next episode (a new task draw) next step.
        obs, *_ = env.step(random_actions(env.unwrapped.action_masks(), rng))
        counts += np.bincount(obs["task_id"][done, 0], minlength=3)
    share = dict(zip(env.unwrapped.task_ids, counts / counts.sum(), strict=True))
    assert share == pytest.approx(tasks, abs=0.03)


def test_adaptive_sampling_favours_weaker_tasks():
    sampler = TaskMixSampler(
        make_vec(2, tasks=["lmgym/SST2-v0", "lmgym/TREC-v0"]).unwrapped.core,
        2,
        True,
        sampling="adaptive",
    )
    np.testing.assert_allclose(sampler.probs, [0.5, 0.5])
    sampler.update({"sst2/accuracy": np.ones(200), "trec/accuracy": np.zeros(200)})
    assert sampler.scores[0] > 0.9 and sampler.scores[1] == 0
    assert sampler.probs[1] > 0.9 and sampler.probs[0] >= 0.05  # min_share keeps every task alive
    np.testing.assert_allclose(sampler.probs.sum(), 1.0)

    # In an env: SST-2 answered perfectly, TREC never -> TREC gets drawn more and more.
    env = make_vec(
        64, tasks=["lmgym/SST2-v0", "lmgym/TREC-v0"], sampling="adaptive", autoreset_mode="SameStep"
    )
    obs, _ = env.reset(seed=0)
    for _ in range(30):
        expert = env.unwrapped.expert_actions()
        wrong = (expert + 1) % np.array(env.unwrapped.task_n_actions)[obs["task_id"][:, 0]]
        obs, _, _, _, info = env.step(np.where(obs["task_id"][:, 0] == 0, expert, wrong))
    probs = env.unwrapped.task_probs
    assert probs[1] > 0.8, probs
    assert np.mean(obs["task_id"][:, 0] == 1) > 0.7
    with pytest.raises(ValueError, match="sampling"):
        make_vec(2, sampling="hardest")


def test_expert_scores_one_on_every_task_and_metrics_are_per_task():
    env = make_vec(8, autoreset_mode="SameStep")
    obs, _ = env.reset(seed=3)
    names = env.unwrapped.task_names
    seen: dict[str, list[float]] = {}
    for _ in range(200):
        task = obs["task_id"][:, 0].copy()
        obs, _, term, trunc, info = env.step(env.unwrapped.expert_actions())
        if "final_info" not in info:
            continue
        metrics = info["final_info"]["episode_metrics"]
        for key, values in metrics.items():
            if key.startswith("_"):
                continue
            prefix = key.split("/")[0]
            mask = metrics[f"_{key}"]
            assert np.all((term | trunc)[mask])
            assert np.all(np.array(names)[task[mask]] == prefix), (
                "a metric is reported for another task's slot"
            )
            seen.setdefault(key, []).extend(values[mask].tolist())
    for name in names:
        assert any(k.startswith(f"{name}/") for k in seen), f"no episode_metrics for {name}"
    for key in ("ner/entity_f1", "sst2/accuracy", "trec/accuracy"):
        assert np.mean(seen[key]) == 1.0, key


def test_actions_past_a_task_range_fold_back():
    tasks = ["lmgym/NER-v0", "lmgym/SST2-v0"]
    a = make_vec(4, tasks=tasks)
    b = make_vec(4, tasks=tasks)
    obs, _ = a.reset(seed=2)
    b.reset(seed=2)
    n_k = np.array(a.unwrapped.task_n_actions)
    rng = np.random.default_rng(0)
    for t in range(50):
        task = obs["task_id"][:, 0]
        actions = rng.integers(0, a.single_action_space.n, size=4)
        obs, *rest = a.step(actions)
        assert_same((obs, *rest), b.step(actions % n_k[task]), f"step {t}")


def two_env_mix(tasks=("lmgym/NER-v0", "lmgym/SST2-v0"), **kwargs):
    """A 2-env MultiTask vector env of ``tasks`` on the sample data."""
    return gym.make_vec(MT, num_envs=2, tasks=list(tasks), data_dir="sample", **kwargs)


def test_tokenizer_mismatch_explains_the_fix():
    with pytest.raises(ValueError, match="tokenizer='minilm'"):
        two_env_mix(tokenizer=None)


def test_task_kwargs_and_common_kwargs():
    env = two_env_mix(
        task_kwargs={
            "lmgym/NER-v0": {"max_length": 48, "max_words": 32},
            "lmgym/SST2-v0": {"max_length": 40},
        },
    )
    core = env.unwrapped.core
    assert core.cores[0].max_length == 48 and core.cores[1].max_length == 40
    assert env.single_observation_space["input_ids"].shape == (48,)
    assert env.single_observation_space["prev_tags"].shape == (32,)
    with pytest.raises(TypeError, match="task_kwargs"):
        two_env_mix(reward_mode="f1")
    with pytest.raises(ValueError, match="not in tasks"):
        two_env_mix(["lmgym/SST2-v0"], task_kwargs={"lmgym/NER-v0": {}})
    with pytest.raises(ValueError, match="weights"):
        gym.make_vec(MT, num_envs=2, tasks={"lmgym/SST2-v0": -1.0}, data_dir="sample")


def test_ordered_iteration_covers_every_task_once():
    env = make_vec(
        3, tasks=["lmgym/SST2-v0", "lmgym/TREC-v0"], shuffle=False, autoreset_mode="SameStep"
    )
    core = env.unwrapped.core
    _, info = env.reset(seed=0)
    ids = list(info["example_id"])
    while len(ids) < core.n_examples:
        _, _, _, _, info = env.step(np.zeros(3, dtype=np.int64))
        ids.extend(info["example_id"][info["_example_id"]].tolist())
    assert sorted(ids[: core.n_examples]) == list(range(core.n_examples))


def test_single_env_checks_and_pickles():
    env = gym.make(
        MT, tasks=WEIGHTS, task_kwargs=TASK_KWARGS, sampling="adaptive", render_mode="ansi"
    )
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=4)
    assert "task_id" in obs and env.render().startswith("task lmgym/")
    for _ in range(30):
        obs, _, term, trunc, _ = env.step(env.unwrapped.expert_action())
        if term or trunc:
            obs, _ = env.reset()
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    np.testing.assert_array_equal(clone.task_scores, env.unwrapped.task_scores)
    np.testing.assert_array_equal(clone.task_probs, env.unwrapped.task_probs)
    for _ in range(30):
        action = env.unwrapped.expert_action()
        assert_same(clone.step(action), env.unwrapped.step(action))
        if clone._needs_reset:
            assert_same(clone.reset(), env.unwrapped.reset())


def test_a_task_registered_time_limit_applies_inside_the_mix():
    env_id = "lmgymtest/NERTwoSteps-v0"
    gym.register(
        env_id,
        entry_point="lmgym.envs.ner:NEREnv",
        kwargs={"dataset": "conll2003"},
        max_episode_steps=2,
    )
    try:
        env = gym.make_vec(
            MT,
            num_envs=16,
            tasks=[env_id, "lmgym/SST2-v0"],
            data_dir="sample",
            autoreset_mode="SameStep",
        )
        obs, _ = env.reset(seed=0)
        short = env.unwrapped.task_ids.index(env_id)
        length = np.zeros(16, dtype=int)
        rng = np.random.default_rng(0)
        for _ in range(60):
            task = obs["task_id"][:, 0].copy()
            obs, _, term, trunc, _ = env.step(random_actions(env.unwrapped.action_masks(), rng))
            length += 1
            ner = task == short
            assert np.all(length[ner] <= 2)
            assert np.all(trunc[ner & (length == 2)] | term[ner & (length == 2)])
            assert not trunc[~ner].any()
            length[term | trunc] = 0
    finally:
        del gym.registry[env_id]


def test_evaluate_scores_the_first_examples_of_every_task_and_their_mean():
    tasks = ["lmgym/SST2-v0", "lmgym/TREC-v0"]
    kwargs = {"tasks": tasks, "task_kwargs": {i: TASK_KWARGS[i] for i in tasks}}
    mixed = lmgym.evaluate(
        "expert", MT, split="validation", max_examples=5, return_records=True, **kwargs
    )
    assert mixed["episodes"] == 10 and [r["task"] for r in mixed["records"]] == [
        t for t in tasks for _ in range(5)
    ]
    for k, task in enumerate(tasks):
        alone = lmgym.evaluate("expert", task, split="validation", max_examples=5,
                               return_records=True, **TASK_KWARGS[task])  # fmt: skip
        mine = [
            {key: v for key, v in r.items() if key not in ("task", "task_id")}
            for r in mixed["records"][5 * k : 5 * k + 5]
        ]
        assert mine == alone["records"], f"{task}: not its first 5 examples"
        assert "score" not in alone
    random = lmgym.evaluate("random", MT, split="validation", max_examples=20, **kwargs)
    assert random["score"] == pytest.approx(
        np.mean([random["sst2/accuracy"], random["trec/accuracy"]])
    )
    assert mixed["score"] == 1.0 and gym.make(MT, **kwargs).unwrapped.metric == "score"


def test_task_ids_do_not_depend_on_how_the_mix_is_written():
    """A model's task ids must survive its settings being saved as key-sorted JSON (the bug:
    a mix written SST-2, TREC, NER was evaluated with NER as task 0)."""
    import json

    tasks = {"lmgym/TREC-v0": 1.0, "lmgym/SST2-v0": 3.0, "lmgym/NER-v0": 0.5}
    kwargs = {"tasks": tasks, "task_kwargs": {i: TASK_KWARGS[i] for i in tasks}}
    saved = json.loads(json.dumps(kwargs, sort_keys=True))
    listed = {**kwargs, "tasks": list(reversed(list(tasks)))}
    a, b = gym.make_vec(MT, num_envs=8, **kwargs), gym.make_vec(MT, num_envs=8, **saved)
    assert a.unwrapped.task_ids == b.unwrapped.task_ids == sorted(tasks)
    assert gym.make(MT, **listed).unwrapped.task_ids == sorted(tasks)
    assert dict(zip(a.unwrapped.task_ids, a.unwrapped.task_probs, strict=True)) == pytest.approx(
        {"lmgym/NER-v0": 0.5 / 4.5, "lmgym/SST2-v0": 3.0 / 4.5, "lmgym/TREC-v0": 1.0 / 4.5}
    )
    rng = np.random.default_rng(0)
    assert_same(a.reset(seed=0), b.reset(seed=0))
    for _ in range(20):
        actions = random_actions(a.unwrapped.action_masks(), rng)
        assert_same(a.step(actions), b.step(actions))
