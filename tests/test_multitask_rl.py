"""Multi-task RL: per-task advantage normalisation and per-task logging (agents.buffers,
agents.multitask) on lmgym/MultiTask-v0 with the bundled sample data."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("torch")

from agents.buffers import apply_buffer_options, normalize_within  # noqa: E402
from agents.multitask import PerTaskLogger, episode_task  # noqa: E402
from agents.policies import env_policy_kwargs  # noqa: E402
from lmgym.sb3 import make_vec_env  # noqa: E402
from tests.test_agents import ALGOS, MICRO  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TASKS = {"tasks": {"lmgym/NER-v0": 0.5, "lmgym/SST2-v0": 0.5}, "data_dir": "sample"}
ON_POLICY = ("ppo", "a2c", "trpo", "maskable_ppo", "reinforce")


def _model(algo: str, advantages: str, env_id: str = "lmgym/MultiTask-v0", **make):
    cls, policy, kwargs = ALGOS[algo]
    venv = make_vec_env(env_id, n_envs=2, seed=0, **(make or TASKS))
    hp = {**kwargs, "advantages": advantages}
    apply_buffer_options(hp, algo)
    pk = {**MICRO, **env_policy_kwargs(venv)}
    if algo == "trpo":
        pk["attention_backend"] = "math"
    return cls(policy, venv, seed=0, device="cpu", policy_kwargs=pk, **hp)


def _advantages_by_task(model) -> tuple[np.ndarray, np.ndarray]:
    buffer = model.rollout_buffer
    return buffer.advantages.reshape(-1), buffer.observations["task_id"].reshape(-1)


def test_normalize_within_gives_each_group_zero_mean_unit_std():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 3, size=200)
    scale = np.array([1.0, 14.0, 0.01])[groups]  # NER-, classification-, BLEU-like scales
    advantages = (rng.normal(size=200) * scale + 3 * groups).astype(np.float32)
    out = normalize_within(advantages, groups)
    assert out.dtype == np.float32
    for g in range(3):
        assert out[groups == g].mean() == pytest.approx(0.0, abs=1e-5)
        assert out[groups == g].std() == pytest.approx(1.0, abs=1e-4)
    pooled = normalize_within(advantages, np.zeros_like(groups))
    assert pooled.mean() == pytest.approx(0.0, abs=1e-5) and pooled.std() == pytest.approx(1.0)
    # pooled statistics leave the large-scale task dominant; per task they do not
    assert pooled[groups == 1].std() > 100 * pooled[groups == 2].std()


@pytest.mark.parametrize("algo", ON_POLICY)
def test_task_advantages_are_standardised_within_each_task(algo):
    model = _model(algo, "task")
    if algo != "reinforce":
        assert "TaskNormalized" in type(model.rollout_buffer).__name__
    if algo in ("ppo", "maskable_ppo", "trpo"):
        assert model.normalize_advantage is False  # no second, pooled per-minibatch pass
    model.learn(64)
    advantages, tasks = _advantages_by_task(model)
    assert set(np.unique(tasks)) == {0, 1}  # both tasks in the rollout
    for task in (0, 1):
        assert advantages[tasks == task].mean() == pytest.approx(0.0, abs=1e-4)
        assert advantages[tasks == task].std() == pytest.approx(1.0, abs=1e-3)


def test_pooled_advantages_are_standardised_over_the_rollout_not_per_task():
    model = _model("ppo", "pooled")
    model.learn(64)
    advantages, tasks = _advantages_by_task(model)
    assert advantages.mean() == pytest.approx(0.0, abs=1e-4)
    assert advantages.std() == pytest.approx(1.0, abs=1e-3)
    means = [advantages[tasks == t].mean() for t in (0, 1)]
    assert max(abs(m) for m in means) > 1e-3  # per-task means are not forced to zero


def test_task_advantages_need_a_task_id_and_reject_off_policy():
    model = _model("ppo", "task", env_id="lmgym/NER-v0", data_dir="sample")
    with pytest.raises(ValueError, match="needs a MultiTask env"):
        model.learn(64)
    with pytest.raises(ValueError, match="not 'dqn'"):
        apply_buffer_options({"advantages": "task"}, "dqn")
    with pytest.raises(ValueError, match="choose one of"):
        apply_buffer_options({"advantages": "per-task"}, "ppo")


def test_per_task_logger_records_each_tasks_return_and_metric():
    from stable_baselines3.common.logger import KVWriter, Logger

    assert episode_task({"episode_metrics": {"ner/entity_f1": 0.5}}) == "ner"
    assert episode_task({"episode_metrics": {"accuracy": 1.0}}) is None
    dumps: list[dict] = []

    class Capture(KVWriter):
        def write(self, key_values, key_excluded, step=0):
            dumps.append(dict(key_values))

    model = _model("ppo", "task")
    model.set_logger(Logger(folder=None, output_formats=[Capture()]))
    model.learn(256, callback=PerTaskLogger())
    logged = {k for d in dumps for k in d}
    assert {"tasks/ner/ep_rew_mean", "tasks/ner/entity_f1", "tasks/sst2/accuracy"} <= logged
    assert {"tasks/ner/approx_kl", "tasks/sst2/approx_kl"} <= logged

    logger = PerTaskLogger()
    seen: dict[str, float] = {}
    sink = Logger(folder=None, output_formats=[])
    sink.record = lambda key, value, exclude=None: seen.__setitem__(key, value)
    logger.model = SimpleNamespace(logger=sink)
    logger.locals = {
        "infos": [
            {"episode": {"r": 2.0, "l": 4}, "episode_metrics": {"ner/entity_f1": 0.5}},
            {"episode": {"r": 1.0, "l": 1}, "episode_metrics": {"sst2/accuracy": 1.0}},
            {"episode": {"r": 0.0, "l": 2}, "episode_metrics": {"ner/entity_f1": 0.0}},
            {},  # a step that ended no episode
        ]
    }
    logger._on_step()
    logger._on_rollout_end()
    assert seen == {
        "tasks/ner/ep_rew_mean": 1.0,
        "tasks/ner/ep_len_mean": 3.0,
        "tasks/ner/entity_f1": 0.25,
        "tasks/ner/episodes": 2,
        "tasks/sst2/ep_rew_mean": 1.0,
        "tasks/sst2/ep_len_mean": 1.0,
        "tasks/sst2/accuracy": 1.0,
        "tasks/sst2/episodes": 1,
    }


@pytest.mark.parametrize("algo", ON_POLICY)
def test_per_task_kl_is_zero_before_an_update_and_positive_after(algo):
    model = _model(algo, "task")
    _, callback = model._setup_learn(64, PerTaskLogger())
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    rollout = callback._rollout
    assert rollout is not None, "the rollout is kept at its end"
    before = callback.task_kl(rollout)
    assert set(before) == {"ner", "sst2"}
    assert all(abs(v) < 1e-7 for v in before.values()), before  # float noise only
    model.train()
    after = callback.task_kl(rollout)
    noise = max(abs(v) for v in before.values())
    assert all(v > max(1e-8, 10 * noise) for v in after.values()), (before, after)
    seen: dict[str, float] = {}
    model.logger.record = lambda key, value, exclude=None: seen.__setitem__(key, value)
    callback.on_rollout_start()
    assert seen == pytest.approx({f"tasks/{t}/approx_kl": v for t, v in after.items()})


def test_train_script_logs_per_task_values_on_multitask_runs_only(tmp_path):
    """agents.train adds PerTaskLogger when the env says its family is multitask."""
    import csv

    from agents import train as train_module
    from tests.test_agents_train import MICRO_HP

    def columns(env_id: str, name: str) -> set[str]:
        argv = [env_id, "--algo", "ppo", "--backbone", "tiny", "--total-timesteps", "64",
                "--n-envs", "2", "--env-kwarg", "data_dir=sample", "--hp", "n_steps=32",
                "--hp", "advantages=task" if "MultiTask" in env_id else "advantages=minibatch",
                "--log-dir", str(tmp_path), "--run-name", name, "--eval-freq", "-1",
                "--verbose", "0", *MICRO_HP]  # fmt: skip
        assert train_module.main(argv) == 0
        with open(tmp_path / name / "progress.csv") as f:
            return set(next(csv.reader(f)))

    assert {"tasks/ner/ep_rew_mean", "tasks/sst2/accuracy"} <= columns("lmgym/MultiTask-v0", "mt")
    assert not any(c.startswith("tasks/") for c in columns("lmgym/SST2-v0", "one"))


def test_dqn_learns_on_the_mix_with_task_adapters_and_acts_within_each_task():
    """DQN over MultiTask-v0: one Q head per task behind its adapter, greedy and exploring
    actions always inside the episode's task's legal actions."""
    cls, policy, kwargs = ALGOS["dqn"]
    venv = make_vec_env("lmgym/MultiTask-v0", n_envs=2, seed=0, **TASKS)
    pk = {**MICRO, **env_policy_kwargs(venv), "net_arch": [32]}
    model = cls(policy, venv, seed=0, device="cpu", policy_kwargs=pk, **kwargs)
    adapters = [m for m in model.policy.q_net.modules() if type(m).__name__ == "Adapter"]
    assert len(adapters) == 2, "one adapter per task"
    before = [p.detach().clone() for p in model.policy.q_net.parameters()]
    model.learn(96)
    moved = sum(
        not np.allclose(a.numpy(), b.detach().numpy())
        for a, b in zip(before, model.policy.q_net.parameters(), strict=True)
    )
    assert moved > 0, "the Q network trained"
    obs = venv.reset()
    for _ in range(40):
        masks = venv.env_method("action_masks")
        actions, _ = model.predict(obs, deterministic=False)
        assert all(m[a] for m, a in zip(masks, actions, strict=True))
        obs, *_ = venv.step(actions)
