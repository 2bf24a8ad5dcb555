"""lmgym in RLlib (Ray): PPO on the new API stack with env runners in separate processes.

Run: ``python -m agents.rllib_example --env-id lmgym/NER-v0 --data-dir sample --iterations 2``.

How the pieces fit:

* **Env creation.** :func:`env_creator` is a module-level function that RLlib pickles to
  each env-runner process; it imports lmgym (registering the ids) and calls ``gym.make``
  there, so the tokenizer and the dataset load lazily inside every worker from the
  on-disk cache (``$LMGYM_CACHE_DIR``), never through pickled global state.
* **Observations.** RLlib's default new-stack encoders (MLP/CNN/LSTM) take a flat
  ``Box``, not a ``Dict``: the ``FlattenObservations`` env-to-module connector
  concatenates the keys of lmgym's ``Dict`` (alphabetical order, the same as Gymnasium's
  ``FlattenObservation``; see docs/ECOSYSTEM.md for the layout per env) into one float
  vector. The token ids then enter an MLP as numbers, which is enough to show the plumbing
  and to train the tiny default model, not to learn language: for that write an RLModule
  that embeds ``input_ids`` (the layout is fixed, so it can slice the flat vector).
* **Masks.** The flat vector carries ``action_mask`` but the default PPO module does not
  apply it. lmgym never refuses a masked action (NER applies and scores it), so training
  is correct, just less sample-efficient than MaskablePPO.
* **Resources.** ``num_cpus`` caps Ray (2 by default), batches are small and the default
  model is ``fcnet_hiddens=[32]``: a smoke-scale config for laptops and CI.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import gymnasium as gym

#: the name :func:`train` registers :func:`env_creator` under (``tune.register_env``).
ENV_NAME = "lmgym"


def env_creator(config: dict[str, Any]) -> gym.Env:
    """Build the lmgym env named by ``config["env_id"]`` (RLlib passes its ``env_config``).

    Every other key of ``config`` goes to ``gym.make`` (``data_dir``, ``split``, ...).
    """
    import lmgym  # noqa: F401  (registers the ids inside the worker process)

    kwargs = {k: v for k, v in dict(config).items() if k != "env_id"}
    return gym.make(config["env_id"], **kwargs)


def register() -> None:
    """Register :func:`env_creator` as ``"lmgym"`` with Ray Tune (call after ``ray.init``)."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, env_creator)


def make_config(
    env_id: str = "lmgym/NER-v0",
    env_kwargs: dict[str, Any] | None = None,
    num_env_runners: int = 2,
    train_batch_size: int = 256,
    minibatch_size: int = 64,
    num_epochs: int = 2,
    hidden: tuple[int, ...] = (32,),
    seed: int = 0,
):
    """A small PPOConfig (new API stack) for ``env_id``.

    :param env_id: a registered lmgym id.
    :param env_kwargs: passed to ``gym.make`` in every env runner (e.g. ``{"data_dir": "sample"}``).
    :param num_env_runners: env-runner processes (0 = sample in the driver).
    :param train_batch_size: env steps per training iteration (over all runners).
    :param minibatch_size: SGD minibatch size.
    :param num_epochs: SGD passes over each batch.
    :param hidden: MLP widths of the default model.
    :param seed: seeds the env runners' envs and the model.
    """
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.connectors.env_to_module import FlattenObservations
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    config = (
        PPOConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .environment(ENV_NAME, env_config={"env_id": env_id, **(env_kwargs or {})})
        .env_runners(
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=1,
            num_cpus_per_env_runner=0.5,
            rollout_fragment_length="auto",
            env_to_module_connector=lambda env, spaces=None, device=None: FlattenObservations(),
        )
        .learners(num_learners=0)
        .training(
            train_batch_size_per_learner=train_batch_size,
            minibatch_size=minibatch_size,
            num_epochs=num_epochs,
            lr=3e-4,
            gamma=0.99,
        )
        .rl_module(
            model_config=DefaultModelConfig(fcnet_hiddens=list(hidden), vf_share_layers=True)
        )
        .debugging(seed=seed)
    )
    return config


def train(
    env_id: str, iterations: int = 1, num_cpus: int = 2, **config_kwargs: Any
) -> list[dict[str, Any]]:
    """Start a small local Ray, train PPO for ``iterations``, shut Ray down; return the results."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    started = not ray.is_initialized()
    if started:
        # include_dashboard=False and no log-to-driver spam: a library example, not a cluster.
        ray.init(
            num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
    try:
        register()
        algo = make_config(env_id, **config_kwargs).build_algo()
        try:
            return [algo.train() for _ in range(iterations)]
        finally:
            algo.stop()
    finally:
        if started:
            ray.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="lmgym/NER-v0")
    parser.add_argument(
        "--data-dir",
        default="sample",
        help="data folder passed to gym.make ('sample' or a path; '' = $LMGYM_DATA_DIR)",
    )
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--num-env-runners", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    env_kwargs = {"data_dir": args.data_dir} if args.data_dir else {}
    results = train(args.env_id, args.iterations, args.num_cpus, env_kwargs=env_kwargs,
                    num_env_runners=args.num_env_runners, seed=args.seed)  # fmt: skip
    for i, result in enumerate(results, start=1):
        runners = result.get("env_runners", {})
        print(
            f"iteration {i}: env_steps={result.get('num_env_steps_sampled_lifetime')} "
            f"episode_return_mean={runners.get('episode_return_mean')} episodes={runners.get('num_episodes')}"
        )


if __name__ == "__main__":
    main()
