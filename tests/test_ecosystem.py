"""lmgym in other RL libraries: Gymnasium wrappers, TorchRL, a CleanRL-style script,
rl-zoo3 and RLlib. Each test runs the library for real, on the bundled sample data.
The libraries are required test dependencies (no import skips): see docs/ECOSYSTEM.md
for the pip lines.

The layouts documented in docs/ECOSYSTEM.md are checked against the code here too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium.wrappers import FlattenObservation, RecordEpisodeStatistics, TimeLimit

from agents.hyperparams.rl_zoo import zoo_entry
from tests.conftest import LMGYM_SPECS, sample_kwargs

ROOT = Path(__file__).resolve().parents[1]
ECOSYSTEM_DOC = ROOT / "docs" / "ECOSYSTEM.md"


def random_valid_action(env: gym.Env, rng: np.random.Generator) -> int:
    return int(rng.choice(np.flatnonzero(env.unwrapped.action_masks())))


# -- Gymnasium wrappers --------------------------------------------------------------------------
@pytest.mark.parametrize("spec", LMGYM_SPECS, ids=lambda s: s.id)
def test_flatten_record_stats_and_time_limit_wrappers(spec):
    env = gym.make(spec.id, **sample_kwargs(spec.id))
    wrapped = RecordEpisodeStatistics(FlattenObservation(TimeLimit(env, max_episode_steps=3)))
    space = wrapped.observation_space
    assert isinstance(space, gym.spaces.Box) and space.shape == (
        gym.spaces.flatdim(env.observation_space),
    )
    rng = np.random.default_rng(0)
    flat, _ = wrapped.reset(seed=0)
    for _ in range(3):  # three episodes
        total, length, done = 0.0, 0, False
        while not done:
            assert flat in space
            # FlattenObservation concatenates the Dict's keys in (sorted) order.
            inner = {k: v for k, v in env.unwrapped._observation().items()}
            np.testing.assert_array_equal(
                flat, np.concatenate([inner[k].ravel() for k in env.observation_space.spaces])
            )
            flat, reward, terminated, truncated, info = wrapped.step(random_valid_action(env, rng))
            total, length, done = total + reward, length + 1, terminated or truncated
        assert length <= 3, "TimeLimit(max_episode_steps=3) must end every episode within 3 steps"
        assert truncated or terminated
        assert info["episode"]["r"] == pytest.approx(total) and info["episode"]["l"] == length
        if terminated and not truncated:
            assert "episode_metrics" in info
        flat, _ = wrapped.reset()


def test_documented_flat_layout_matches_the_envs():
    """docs/ECOSYSTEM.md lists, per id, the flat size and the keys in concatenation order."""
    doc = ECOSYSTEM_DOC.read_text()
    for spec in LMGYM_SPECS:
        env = gym.make(spec.id, **sample_kwargs(spec.id))
        spaces = env.observation_space.spaces
        size = FlattenObservation(env).observation_space.shape[0]
        row = (
            f"| `{spec.id}` | {size} | "
            + ", ".join(f"{k} {v.shape[0]}" for k, v in spaces.items())
            + " |"
        )
        assert row in doc, f"docs/ECOSYSTEM.md is out of date; expected the row\n{row}"


# -- TorchRL ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", LMGYM_SPECS, ids=lambda s: s.id)
def test_torchrl_specs_convert_and_random_rollout_respects_masks(spec):
    import torch
    from torchrl.envs.utils import check_env_specs

    from agents.torchrl_example import make_env

    env = make_env(spec.id, **sample_kwargs(spec.id))
    gym_space = gym.make(spec.id, **sample_kwargs(spec.id)).observation_space
    obs_spec = env.observation_spec
    for key, box in gym_space.spaces.items():
        assert tuple(obs_spec[key].shape) == box.shape
        want = torch.bool if key == "action_mask" else getattr(torch, box.dtype.name)
        assert obs_spec[key].dtype == want, key
        if key != "action_mask":
            assert int(obs_spec[key].space.high.max()) == int(box.high.max())
    assert env.action_spec.shape[-1] == gym.make(spec.id, **sample_kwargs(spec.id)).action_space.n
    check_env_specs(env, seed=0)
    env.set_seed(0)
    rollout = env.rollout(40, break_when_any_done=False)
    assert rollout.batch_size[0] == 40
    chosen = rollout["action"].argmax(-1, keepdim=True)
    assert rollout["action_mask"].gather(-1, chosen).all(), (
        "the random policy must only pick valid actions"
    )
    assert torch.isfinite(rollout["next", "reward"]).all()


def test_torchrl_example_script_runs():
    from agents.torchrl_example import main

    summary = main(["--env-id", "lmgym/NER-v0", "--steps", "30"])
    assert (
        summary["steps"] == 30 and summary["episodes"] >= 1 and summary["all_actions_valid"] == 1.0
    )


# -- CleanRL-style single-file PPO ----------------------------------------------------------------
def _read_metrics(run_dir: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        out.setdefault(record["name"], []).append(record["value"])
    return out


@pytest.mark.parametrize("env_id", ["lmgym/SST2-v0", "lmgym/NER-v0"])
def test_cleanrl_ppo_runs_and_logs(env_id, tmp_path):
    from agents.cleanrl_ppo import Args, main

    args = Args(
        env_id=env_id, total_timesteps=512, num_envs=8, num_steps=32, log_dir=str(tmp_path), seed=3
    )
    summary = main(args)
    run_dir = Path(summary["run_dir"])
    assert re.fullmatch(rf"{env_id.replace('/', '-')}__cleanrl_ppo__3__\d+", run_dir.name)
    metrics = _read_metrics(run_dir)
    for name in (
        "charts/episodic_return",
        "charts/episodic_length",
        "losses/policy_loss",
        "losses/approx_kl",
        "charts/SPS",
    ):
        assert name in metrics, name
    metric = "charts/accuracy" if "SST2" in env_id else "charts/entity_f1"
    assert metric in metrics and len(metrics[metric]) == len(metrics["charts/episodic_return"])
    assert (run_dir / "agent.pt").is_file()


def test_cleanrl_ppo_help_comes_from_field_docstrings():
    out = subprocess.run(
        [sys.executable, "-m", "agents.cleanrl_ppo", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "the surrogate clipping coefficient" in text and "--env-id" in text


@pytest.mark.slow
def test_cleanrl_ppo_learns_sst2_sample(tmp_path):
    """Training accuracy on the sample split climbs far above random (0.5) in 8k steps."""
    from agents.cleanrl_ppo import Args, main

    summary = main(
        Args(env_id="lmgym/SST2-v0", total_timesteps=8192, log_dir=str(tmp_path), seed=1)
    )
    assert summary["accuracy"] >= 0.8, summary
    assert summary["final_return"] >= 0.8, summary


# -- rl-zoo3 -------------------------------------------------------------------------------
def test_shipped_rl_zoo_hyperparams_are_in_rl_zoo_form():
    from agents.hyperparams.zoo_ppo import hyperparams

    entry = hyperparams["lmgym/SST2-v0"]
    assert entry["policy"] == "agents.policies.TransformerPolicy"
    assert (
        entry["n_timesteps"] > 0 and "backbone" not in entry and "minilm" in entry["policy_kwargs"]
    )


@pytest.mark.parametrize("algo", ["ppo", "a2c", "trpo"])
def test_rl_zoo_entries_hold_only_what_rl_zoo_and_the_algorithm_take(algo):
    """Setup keys of ``agents.train`` (``pretrain_epochs``, ``sil_coef``...) must not leak
    into rl-zoo3's entries: it passes every unknown key to the algorithm's constructor."""
    import inspect

    from sb3_contrib import TRPO
    from stable_baselines3 import A2C, PPO

    from agents.hyperparams.rl_zoo import zoo_hyperparams

    cls = {"ppo": PPO, "a2c": A2C, "trpo": TRPO}[algo]
    accepted = set(inspect.signature(cls).parameters) | {"n_envs", "n_timesteps", "env_kwargs"}
    for env_id, entry in zoo_hyperparams(algo).items():
        assert set(entry) <= accepted, (env_id, set(entry) - accepted)


def test_rl_zoo3_trains_ppo_on_sst2(tmp_path):
    config = {"lmgym/SST2-v0": zoo_entry(
        "ppo", "lmgym/SST2-v0",
        backbone="tiny", env_kwargs={"data_dir": "sample"},
        n_envs=2, n_steps=16, batch_size=16, n_epochs=1, total_timesteps=64,
    )}  # fmt: skip
    conf = tmp_path / "ppo.yml"
    conf.write_text(yaml.safe_dump(config))
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "lmgym/SST2-v0",
           "--gym-packages", "lmgym", "-conf", str(conf), "-n", "64", "-f", str(logs),
           "--eval-freq", "-1", "--seed", "0", "--n-eval-envs", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = list((logs / "ppo").glob("lmgym-SST2-v0_*"))
    assert len(runs) == 1 and (runs[0] / "lmgym-SST2-v0.zip").is_file()
    saved = (runs[0] / "lmgym-SST2-v0" / "config.yml").read_text()  # rl-zoo's OrderedDict dump
    assert "agents.policies.TransformerPolicy" in saved and "data_dir: sample" in saved
    assert (runs[0] / "0.monitor.csv").is_file(), "rl-zoo3 wraps each env in a Monitor"
    print(f"rl-zoo3 run took {time.perf_counter() - start:.1f}s")


# -- RLlib ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_rllib_ppo_one_iteration_on_ner_and_sst2():
    """RLlib PPO (new API stack, FlattenObservations connector) trains one iteration on each
    env with 2 env-runner processes that build their own env from the pickled creator."""
    import ray

    from agents.rllib_example import make_config, register

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        register()
        for env_id in ("lmgym/NER-v0", "lmgym/SST2-v0"):
            start = time.perf_counter()
            algo = make_config(
                env_id, env_kwargs={"data_dir": "sample"}, num_env_runners=2, train_batch_size=128
            ).build_algo()
            try:
                pids = algo.env_runner_group.foreach_env_runner(
                    lambda runner: os.getpid(), local_env_runner=False
                )
                assert len(set(pids)) == 2 and os.getpid() not in pids, (
                    "sampling must happen in 2 worker processes"
                )
                result = algo.train()
            finally:
                algo.stop()
            assert result["num_env_steps_sampled_lifetime"] >= 128
            runners = result["env_runners"]
            assert runners["num_episodes"] >= 1 and np.isfinite(runners["episode_return_mean"])
            assert np.isfinite(result["learners"]["default_policy"]["total_loss"])
            print(f"RLlib {env_id}: {time.perf_counter() - start:.1f}s")
    finally:
        if started:
            ray.shutdown()
