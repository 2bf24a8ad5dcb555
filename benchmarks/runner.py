"""One leaderboard run: a baseline, supervised fine-tuning, or RL with the ``agents`` code.

* ``random`` / ``majority`` / ``expert``: :func:`lmgym.evaluate` with that baseline.
* ``supervised``: the same policy (PPO's, same backbone, same env kwargs and so the same
  tokenizer: :func:`run_setup`) fine-tuned on the env's expert actions with the run's
  budget, via :func:`agents.pretrain`: ``steps`` labelled transitions passed over
  ``epochs`` times in minibatches of ``batch_size`` at the behaviour-cloning learning rate
  (:func:`supervised_recipe`, from ``agents/hyperparams/ppo.yml`` for the backbone).
  Each point of its curve is a fresh policy trained on the first ``n`` labelled examples
  (``n`` = ``eval_every`` doubling up to ``steps``: :func:`supervised_budgets`), so every
  point, the last (scored on test) included, is supervised learning at that budget; the
  record's ``test_curve`` gives each point's test score too. (It once
  streamed ``eval_every``-sized chunks through one policy, ``epochs`` passes each, which
  over-fitted the last chunk and forgot the earlier ones: MiniLM NER, 16 epochs, 0.642 vs
  0.695 test F1 on 3,072 words.)
* any algorithm of ``agents.train`` (ppo, a2c, trpo, maskable_ppo, dqn, reinforce):
  ``agents.train`` is run in chunks of ``eval_every`` env steps (``--resume`` between
  chunks; resuming is exact, so this equals one uninterrupted run), and the saved model is
  scored on the validation split after each chunk (the learning curve) and on the test
  split at the end. The YAML's behaviour-cloning warm start (``pretrain_steps``) is off
  unless the spec's ``hyperparams`` turn it on: it would spend labelled data outside the
  budget that the supervised baseline is held to.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym

import lmgym
from benchmarks.records import cpu_model, device_name, git_commit, versions
from lmgym.envs.core import FAMILY_METRIC  # noqa: F401  (the one table; re-exported here)

BASELINES = ("random", "majority", "expert")


def run_setup(config: Any, algo: str | None = None) -> dict[str, Any]:
    """The env kwargs and policy kwargs a run trains with, as ``agents.train`` resolves them.

    The YAML entry of ``algo`` (default: the run's, PPO's for baselines) for the env and
    backbone gives ``env_kwargs`` (e.g. ``tokenizer: minilm``, the vocabulary every backbone
    reads) and ``policy_kwargs``; the spec's ``make_kwargs`` and ``hyperparams`` override
    them. RL runs and the supervised baseline both read their observations through this,
    so they share env, tokenizer, backbone and budget.

    :param config: a :class:`benchmarks.leaderboard.RunConfig`.
    :param algo: the YAML file to read (``agents/hyperparams/<algo>.yml``).
    :return: ``{"make_kwargs": ..., "policy_kwargs": ...}``.
    """
    from agents.train import ALGOS, load_hyperparams

    name = algo or (config.algo if config.algo in ALGOS else "ppo")
    hp = load_hyperparams(name, config.env, config.backbone)
    hp.update(config.hyperparams)
    make_kwargs = {**(hp.get("env_kwargs") or {}), **config.make_kwargs}
    policy_kwargs = dict(hp.get("policy_kwargs") or {})
    return {"make_kwargs": make_kwargs, "policy_kwargs": policy_kwargs}


def primary_metric(env_id: str, make_kwargs: dict[str, Any]) -> str:
    """The corpus metric ``env_id`` is judged by (``env.unwrapped.metric``)."""
    metric = gym.make(env_id, **make_kwargs).unwrapped.metric
    if metric is None:
        raise ValueError(f"{env_id} has no single primary metric (a MultiTask env?)")
    return metric


def _flags(flag: str, values: dict[str, Any]) -> list[str]:
    """``flag KEY=VALUE`` per item (``--env-kwarg``, ``--hp``); non-strings as JSON, which the
    flags read as YAML, so mappings (MultiTask's ``tasks``) and ``None`` survive the trip."""
    out: list[str] = []
    for key, value in values.items():
        out += [flag, f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return out


def run_one(config: Any) -> dict[str, Any]:
    """Train/evaluate ``config`` (a :class:`benchmarks.leaderboard.RunConfig`); return its record."""
    metric = primary_metric(config.env, config.make_kwargs)
    record: dict[str, Any] = {
        "env": config.env, "algo": config.algo, "backbone": config.backbone, "seed": config.seed,
        "metric": metric, "device": device_name(config.device), "cpu": cpu_model(),
        "versions": versions(), "commit": git_commit(), "curve": [], "steps": 0,
        "make_kwargs": dict(config.make_kwargs), "variant": config.variant,
    }  # fmt: skip
    if config.algo in BASELINES:  # the RL runs' env kwargs: QA's windows follow the tokenizer
        make_kwargs = run_setup(config)["make_kwargs"]
        result = lmgym.evaluate(
            config.algo,
            config.env,
            split="test",
            seed=config.seed,
            max_examples=config.test_examples,
            **make_kwargs,
        )
        record.update(metrics=_numbers(result), make_kwargs=make_kwargs)
        return record
    if config.algo == "supervised":
        return {**record, **_supervised(config, metric)}
    return {**record, **_reinforcement(config, metric)}


def _numbers(result: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in result.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def supervised_recipe(env: str, backbone: str) -> dict[str, Any]:
    """The supervised baseline's lr, minibatch and epochs (:func:`agents.train.supervised_recipe`;
    imported on call, so this module loads without torch)."""
    from agents.train import supervised_recipe as recipe

    return recipe(env, backbone)


def _validation_score(model: Any, config: Any, metric: str, make_kwargs: dict[str, Any]) -> float:
    """``metric`` of ``model`` on the first ``config.eval_examples`` validation examples
    (one point of a learning curve)."""
    result = lmgym.evaluate(
        model, config.env, split="validation", max_examples=config.eval_examples, **make_kwargs
    )
    return float(result[metric])


def _test_metrics(model: Any, config: Any, make_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The numeric metrics of ``model`` on the first ``config.test_examples`` test examples."""
    result = lmgym.evaluate(
        model, config.env, split="test", max_examples=config.test_examples, **make_kwargs
    )
    return _numbers(result)


def supervised_budgets(steps: int, eval_every: int, batch: int) -> list[int]:
    """Labelled-example budgets of the supervised curve, in minibatches of ``batch``: ``eval_every``
    doubling up to ``steps``, then ``steps`` itself (each a fresh model, so the whole curve costs
    at most twice its last point)."""
    total = max(1, steps // batch)
    budgets, n = [], max(1, eval_every // batch)
    while n < total:
        budgets.append(n)
        n *= 2
    return [b * batch for b in [*budgets, total]]


def _supervised(config: Any, metric: str) -> dict[str, Any]:
    from stable_baselines3 import PPO

    from agents import TransformerPolicy, env_policy_kwargs, pretrain
    from lmgym.sb3 import make_vec_env

    setup = run_setup(config, "ppo")
    make_kwargs = setup["make_kwargs"]
    recipe = supervised_recipe(config.env, config.backbone)
    batch = recipe["batch_size"]
    curve: list[list[float]] = []
    tests: list[list[float]] = []  # the test metric at each budget: how many labels RL is worth
    for budget in supervised_budgets(config.steps, config.eval_every, batch):
        # a fresh policy per budget, fine-tuned on the first `budget` labelled examples of the
        # same stream (one seed: the budgets are nested) for the recipe's epochs
        venv = make_vec_env(config.env, config.n_envs, seed=config.seed, **make_kwargs)
        policy_kwargs = {
            "backbone": config.backbone,
            **env_policy_kwargs(venv),
            **setup["policy_kwargs"],
        }
        model = PPO(TransformerPolicy, venv, seed=config.seed, device=config.device, verbose=0,
                    policy_kwargs=policy_kwargs)  # fmt: skip
        pretrain(
            model,
            config.env,
            steps=budget // batch,
            batch_size=batch,
            lr=recipe["lr"],
            epochs=recipe["epochs"],
            seed=config.seed,
            **make_kwargs,
        )
        curve.append([budget, _validation_score(model, config, metric, make_kwargs)])
        metrics = _test_metrics(model, config, make_kwargs)
        tests.append([budget, metrics[metric]])
        venv.close()
    steps = int(curve[-1][0])
    return {
        "metrics": metrics,
        "curve": curve,
        "test_curve": tests,
        "steps": steps,
        "recipe": {**recipe, "updates": steps // batch * recipe["epochs"], "fresh_per_point": True},
        "make_kwargs": make_kwargs,
    }


def _train_argv(
    config: Any, env: str, steps: int, tmp: str, name: str, make_kwargs: dict[str, Any],
    hyperparams: dict[str, Any],
) -> list[str]:  # fmt: skip
    """``agents.train`` flags for ``steps`` env steps of ``env`` saved to ``<tmp>/<name>.zip``,
    quiet, one thread, without the YAML's behaviour-cloning warm start."""
    return [
        env, "--algo", config.algo, "--backbone", config.backbone, "--seed", str(config.seed),
        "--device", config.device, "--n-envs", str(config.n_envs), "--total-timesteps", str(steps),
        "--eval-freq", "-1", "--log-dir", tmp, "--run-name", name, "--save-path", str(Path(tmp) / f"{name}.zip"),
        "--verbose", "0", "--no-progress-bar", "--threads", "1", *_flags("--env-kwarg", make_kwargs),
        *_flags("--hp", {"pretrain_steps": 0, **hyperparams}),
    ]  # fmt: skip


def _source_run(config: Any, tmp: str) -> tuple[list[str], dict[str, Any]]:
    """Train ``config.init_from`` (the run a transfer starts from); return the flags that
    start the target run from its encoder, and what the record says about it."""
    from agents.train import main as train

    source = dict(config.init_from)
    argv = _train_argv(config, source["env"], source["steps"], tmp, "source",
                       source.get("make_kwargs", {}), source.get("hyperparams", {}))  # fmt: skip
    if train(argv) != 0:
        raise RuntimeError(f"agents.train failed: {' '.join(argv)}")
    return ["--init-from", str(Path(tmp) / "source.zip")], source


def _reinforcement(config: Any, metric: str) -> dict[str, Any]:
    from agents import load_model
    from agents.train import main as train

    curve = []
    extra: dict[str, Any] = {}
    # a warm start spends part of the labelled budget before RL: the curve's x is labelled
    # examples (warm start + env steps), its first point the warm start alone
    warm = config.warm_start
    if not 0 <= warm < config.steps:
        raise ValueError(f"warm_start={warm} must be in [0, steps={config.steps})")
    with tempfile.TemporaryDirectory(prefix="lmgym-run-") as tmp:
        path = Path(tmp) / "run.zip"
        steps, started = 0, False
        # resumed chunks are told the warm start's size too: the supervised anchor
        # (--anchor-coef) collects the same labelled demonstrations again
        warm_flags = ["--warm-start", str(warm)] if warm else []
        init_flags = list(warm_flags)
        if config.init_from:
            source_flags, extra["init_from"] = _source_run(config, tmp)
            init_flags += source_flags
        while steps < config.steps - warm:
            target = (
                0 if warm and not started else min(config.steps - warm, steps + config.eval_every)
            )
            argv = _train_argv(config, config.env, target, tmp, "run", config.make_kwargs,
                               config.hyperparams)  # fmt: skip
            argv += ["--resume", *warm_flags] if started else init_flags
            started = True
            if train(argv) != 0:
                raise RuntimeError(f"agents.train failed: {' '.join(argv)}")
            model, saved = load_model(path, device=config.device)
            make_kwargs = {k: v for k, v in saved.get("make_kwargs", {}).items() if k != "split"}
            if make_kwargs != run_setup(config)["make_kwargs"]:
                raise RuntimeError(
                    f"agents.train ran {config.env} with {make_kwargs}, not the "
                    f"{run_setup(config)['make_kwargs']} that the baselines use"
                )
            steps = int(model.num_timesteps)
            curve.append([warm + steps, _validation_score(model, config, metric, make_kwargs)])
            if warm and steps == 0:
                extra["warm_start"] = {"examples": warm, "validation": curve[-1][1],
                                       "metrics": _test_metrics(model, config, make_kwargs)}  # fmt: skip
            if warm and curve[-1][1] > max((score for _, score in curve[:-1]), default=-1.0):
                for suffix in (".zip", ".json"):  # the best on validation so far, sidecar too
                    shutil.copyfile(path.with_suffix(suffix), Path(tmp) / f"best{suffix}")
        metrics = _test_metrics(model, config, make_kwargs)
        if warm:
            extra["selected"] = _selected(curve, extra["warm_start"], metrics, config, tmp)
    return {"metrics": metrics, "curve": curve, "steps": steps, "make_kwargs": make_kwargs, **extra}


def _selected(
    curve: list[list[float]], warm: dict[str, Any], final: dict[str, Any], config: Any, tmp: str
) -> dict[str, Any]:
    """The checkpoint a warm-started run keeps: the best curve point on validation (the warm
    start is a candidate, so it never ends below it on validation), and its test metrics."""
    from agents import load_model

    best = max(range(len(curve)), key=lambda i: (curve[i][1], -i))  # earliest of ties
    if best == len(curve) - 1:
        metrics = final
    elif best == 0:
        metrics = warm["metrics"]
    else:
        model, saved = load_model(Path(tmp) / "best.zip", device=config.device)
        kwargs = {k: v for k, v in saved.get("make_kwargs", {}).items() if k != "split"}
        metrics = _test_metrics(model, config, kwargs)
    return {"examples": curve[best][0], "validation": curve[best][1], "metrics": metrics}
