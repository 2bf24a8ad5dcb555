"""lmgym.sb3: the SB3 VecEnv over a native vector env.

It must produce exactly what SB3's ``DummyVecEnv`` of ``Monitor``-wrapped single envs
produces (observations, rewards, dones, infos incl. ``terminal_observation``,
``TimeLimit.truncated``, ``episode``; reset infos), and SB3/sb3-contrib algorithms must
train on it unchanged.
"""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")

from sb3_contrib import TRPO, MaskablePPO  # noqa: E402
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported  # noqa: E402
from stable_baselines3 import A2C, PPO  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv  # noqa: E402

import lmgym.sb3  # noqa: E402
from tests.conftest import LMGYM_SPECS, sample_kwargs  # noqa: E402
from tests.test_vector import assert_same, random_actions  # noqa: E402

VECTOR_SPECS = [s for s in LMGYM_SPECS if s.vector_entry_point is not None]
MT_KWARGS = {
    "tasks": {"lmgym/NER-v0": 0.5, "lmgym/SST2-v0": 0.25, "lmgym/TREC-v0": 0.25},
    "data_dir": "sample",
}


def without_time(infos: list[dict]) -> list[dict]:
    out = []
    for info in infos:
        info = dict(info)
        if "episode" in info:
            info["episode"] = {k: v for k, v in info["episode"].items() if k != "t"}
        out.append(info)
    return out


def assert_infos_equal(got: list[dict], expected: list[dict], where: str) -> None:
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(without_time(got), without_time(expected), strict=True)):
        assert_same(a, b, f"{where} env {i}")


@pytest.mark.parametrize("spec", VECTOR_SPECS, ids=lambda s: s.id)
def test_adapter_equals_dummy_vec_env_of_monitor(spec):
    n, kwargs = 4, sample_kwargs(spec.id)
    ours = lmgym.sb3.make_vec_env(spec.id, n_envs=n, **kwargs)
    reference = DummyVecEnv([lambda: Monitor(gym.make(spec.id, **kwargs)) for _ in range(n)])
    assert isinstance(ours, VecEnv)
    assert ours.observation_space == reference.observation_space
    assert ours.action_space == reference.action_space
    ours.seed(3)
    reference.seed(3)
    assert_same(ours.reset(), reference.reset(), "reset")
    assert_infos_equal(ours.reset_infos, reference.reset_infos, "reset_infos")
    rng = np.random.default_rng(0)
    episodes = 0
    for t in range(200):
        masks = np.stack(ours.env_method("action_masks"))
        assert_same(masks, np.stack(reference.env_method("action_masks")), f"step {t} masks")
        actions = random_actions(masks, rng)
        obs, rewards, dones, infos = ours.step(actions)
        r_obs, r_rewards, r_dones, r_infos = reference.step(actions)
        assert_same((obs, rewards, dones), (r_obs, r_rewards, r_dones), f"step {t}")
        assert_infos_equal(infos, r_infos, f"step {t}")
        assert_infos_equal(ours.reset_infos, reference.reset_infos, f"step {t} reset_infos")
        episodes += int(dones.sum())
        for i in np.flatnonzero(dones):
            assert infos[i]["episode"]["t"] >= 0.0 and "terminal_observation" in infos[i]
    assert episodes > n


def test_attrs_methods_and_masks():
    env = lmgym.sb3.make_vec_env("lmgym/NER-v0", n_envs=5, seed=0, data_dir="sample")
    env.reset()
    assert env.get_attr("render_mode") == [None] * 5
    assert env.get_attr("num_envs", indices=[0, 2]) == [5, 5]
    assert env.has_attr("action_masks") and is_masking_supported(env)
    masks = get_action_masks(env)
    assert masks.shape == (5, env.action_space.n) and masks.dtype == np.bool_
    assert [m.shape for m in env.env_method("action_masks", indices=[1, 3])] == [
        (env.action_space.n,)
    ] * 2
    experts = env.env_method("expert_action")
    assert len(experts) == 5 and all(masks[i, a] for i, a in enumerate(experts))
    assert env.env_is_wrapped(Monitor) == [True] * 5
    assert env.seed(7) == [7, 8, 9, 10, 11]
    env.set_attr("render_mode", None)
    with pytest.raises(ValueError, match="SameStep"):
        lmgym.sb3.LmgymVecEnv(gym.make_vec("lmgym/NER-v0", num_envs=2, data_dir="sample"))
    with pytest.raises(ValueError, match="autoreset_mode"):
        lmgym.sb3.make_vec_env(
            "lmgym/NER-v0", n_envs=2, autoreset_mode="SameStep", data_dir="sample"
        )


ALGOS = [
    (PPO, {"n_steps": 32, "batch_size": 64, "n_epochs": 2}),
    (A2C, {"n_steps": 8}),
    (TRPO, {"n_steps": 32, "batch_size": 64, "n_critic_updates": 2, "cg_max_steps": 5}),
    (MaskablePPO, {"n_steps": 32, "batch_size": 64, "n_epochs": 2}),
]


@pytest.mark.parametrize(("algo", "algo_kwargs"), ALGOS, ids=lambda a: getattr(a, "__name__", ""))
def test_algorithms_train_unchanged(algo, algo_kwargs):
    env = lmgym.sb3.make_vec_env("lmgym/NER-v0", n_envs=8, seed=0, data_dir="sample")
    model = algo(
        "MultiInputPolicy",
        env,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [32]},
        **algo_kwargs,
    )
    model.learn(total_timesteps=512)
    assert model.num_timesteps >= 512
    assert len(model.ep_info_buffer) > 0, "episode infos (Monitor-style) must reach the logger"
    if algo is MaskablePPO:
        from sb3_contrib.common.maskable.evaluation import evaluate_policy as evaluate_masked

        mean, _ = evaluate_masked(model, env, n_eval_episodes=8, warn=False)
    else:
        mean, _ = evaluate_policy(model, env, n_eval_episodes=8)
    assert np.isfinite(mean)


@pytest.mark.parametrize("algo", [PPO, MaskablePPO], ids=lambda a: a.__name__)
def test_multitask_smoke(algo):
    env = lmgym.sb3.make_vec_env("lmgym/MultiTask-v0", n_envs=8, seed=1, **MT_KWARGS)
    model = algo(
        "MultiInputPolicy",
        env,
        seed=0,
        device="cpu",
        n_steps=32,
        batch_size=64,
        n_epochs=1,
        policy_kwargs={"net_arch": [32]},
    )
    model.learn(total_timesteps=512)
    assert len(model.ep_info_buffer) > 0
    obs = env.reset()
    actions, _ = (
        model.predict(obs, action_masks=get_action_masks(env))
        if algo is MaskablePPO
        else model.predict(obs)
    )
    assert actions.shape == (8,)
    _, _, dones, infos = env.step(actions)
    names = {key.split("/")[0] for info in infos for key in info.get("episode_metrics", {})}
    assert names <= {"ner", "sst2", "trec"}


def test_import_lmgym_does_not_import_torch_or_sb3():
    code = "import sys, lmgym, gymnasium as gym; gym.make_vec('lmgym/NER-v0', num_envs=2, data_dir='sample'); print('torch' in sys.modules, 'stable_baselines3' in sys.modules, 'lmgym.sb3' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False", "False"]


def test_sb3_algorithms_take_an_env_id():
    # SB3 makes an id with render_mode="rgb_array" and retries without it only on TypeError
    spec = gym.spec("lmgym/SST2-v0")
    gym.register(
        "lmgym_test/SST2Sample-v0", spec.entry_point, kwargs={**spec.kwargs, "data_dir": "sample"}
    )
    model = A2C("MultiInputPolicy", "lmgym_test/SST2Sample-v0", n_steps=2, device="cpu")
    model.learn(4)
    assert model.env.get_attr("render_mode") == [None]
    with pytest.raises(ValueError, match="render_mode='rgb_array': choose one of"):
        gym.make("lmgym/SST2-v0", render_mode="rgb_array", data_dir="sample")
