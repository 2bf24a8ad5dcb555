"""Score a policy on a whole split with the task's corpus-level metric.

``lmgym.evaluate(policy, env_id, split="test", **make_kwargs)`` plays every example of the
split exactly once (the native vector env with ``shuffle=False``: slot ``i`` of ``n`` plays
examples ``i, i+n, ...``) and returns the corpus metrics of the task family — seqeval
entity F1 over all sentences for NER (not a mean of sentence scores), accuracy for
classification, corpus sacreBLEU/chrF for translation, SQuAD EM/F1 for QA.

``policy`` may be

* a Stable-Baselines3 model (anything with ``predict(obs, deterministic=...)``; models
  whose ``predict`` takes ``action_masks`` — MaskablePPO — get the env's masks),
* any callable ``obs -> action`` on a single observation,
* ``"expert"`` (gold actions: the upper bound), ``"random"`` (uniform over valid
  actions), or ``"majority"`` (the most frequent gold action of the train split; the
  standard majority-class baseline for classification, all-``O`` for NER).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from lmgym.envs.base import LmgymVectorEnv

POLICY_NAMES = ("expert", "random", "majority")


def _vector_env(env_id: str, n_envs: int, make_kwargs: dict[str, Any]) -> LmgymVectorEnv:
    """The native vector env of ``env_id`` iterating the split in order."""
    spec = gym.spec(env_id)
    if spec.vector_entry_point is None:
        raise ValueError(f"{env_id} has no native vector env; lmgym.evaluate needs one")
    venv = gym.make_vec(
        env_id,
        num_envs=n_envs,
        vectorization_mode="vector_entry_point",
        **{**spec.kwargs, **make_kwargs, "shuffle": False},
    ).unwrapped
    if not isinstance(venv, LmgymVectorEnv):
        raise TypeError(f"{env_id}'s vector entry point is not an lmgym vector env")
    return venv


def _majority_action(venv: LmgymVectorEnv, make_kwargs: dict[str, Any], env_id: str) -> int:
    core = venv.core
    if hasattr(core, "label_counts"):
        if getattr(core, "split", "train") != "train":
            train: Any = gym.make(env_id, **{**make_kwargs, "split": "train"}).unwrapped
            return int(np.argmax(train.core.label_counts))
        return int(np.argmax(core.label_counts))
    if hasattr(core, "tags"):
        return core.tags.index("O")
    raise ValueError(f"no majority baseline is defined for the {core.family} family")


def _batched_policy(
    policy: Any,
    venv: LmgymVectorEnv,
    seed: int,
    deterministic: bool,
    env_id: str,
    make_kwargs: dict[str, Any],
) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """Turn any accepted ``policy`` into ``batch_obs -> int actions``."""
    if isinstance(policy, str):
        if policy not in POLICY_NAMES:
            raise ValueError(
                f"policy={policy!r}: pass a model, a callable, or one of {POLICY_NAMES}"
            )
        if policy == "expert":
            return lambda obs: venv.expert_actions()
        if policy == "random":
            rng = np.random.default_rng(seed)

            def random_actions(obs: dict[str, np.ndarray]) -> np.ndarray:
                masks = venv.action_masks()
                noise = rng.random(masks.shape)
                return np.argmax(np.where(masks, noise, -1.0), axis=1)

            return random_actions
        action = _majority_action(venv, make_kwargs, env_id)
        return lambda obs: np.full(venv.num_envs, action, dtype=np.int64)
    if hasattr(policy, "predict"):
        takes_masks = "action_masks" in inspect.signature(policy.predict).parameters

        def model_actions(obs: dict[str, np.ndarray]) -> np.ndarray:
            if takes_masks:
                actions, _ = policy.predict(
                    obs, deterministic=deterministic, action_masks=venv.action_masks()
                )
            else:
                actions, _ = policy.predict(obs, deterministic=deterministic)
            return np.asarray(actions).reshape(venv.num_envs)

        return model_actions
    if callable(policy):
        return lambda obs: np.array(
            [int(policy({k: v[i] for k, v in obs.items()})) for i in range(venv.num_envs)],
            dtype=np.int64,
        )
    raise TypeError(
        f"cannot evaluate a {type(policy).__name__}: pass an SB3 model, a callable obs -> action, or one of {POLICY_NAMES}"
    )


def evaluate(
    policy: Any,
    env_id: str,
    split: str = "test",
    *,
    n_envs: int = 64,
    seed: int = 0,
    deterministic: bool = True,
    max_examples: int | None = None,
    return_records: bool = False,
    **make_kwargs: Any,
) -> dict[str, Any]:
    """Play ``policy`` over every example of ``split`` and return corpus-level metrics.

    :param policy: an SB3 model, a callable ``obs -> action``, or ``"expert"``/``"random"``/``"majority"``.
    :param env_id: a registered lmgym id, e.g. ``"lmgym/NER-v0"``.
    :param split: ``"train"``, ``"validation"`` or ``"test"``.
    :param n_envs: episodes played in parallel (the native vector env's ``num_envs``).
    :param seed: seed of the random baseline.
    :param deterministic: greedy actions for SB3 models.
    :param max_examples: score only the first ``max_examples`` examples (quick checks; of
        every task, for MultiTask).
    :param return_records: also return the per-episode records under ``"records"``.
    :param make_kwargs: passed to the env (``data_dir=``, ``tokenizer=``, ...).
    :return: the family's corpus metrics plus ``env_id``, ``split`` and ``episodes``.
    """
    make_kwargs = {**make_kwargs, "split": split}
    venv = _vector_env(env_id, 1, make_kwargs)
    wanted = venv.core.evaluation_examples(max_examples)
    target = len(wanted)
    if min(n_envs, target) > 1:
        venv = _vector_env(env_id, min(n_envs, target), make_kwargs)
    venv.sampler.order = wanted
    act = _batched_policy(policy, venv, seed, deterministic, env_id, make_kwargs)

    records: dict[int, dict[str, Any]] = {}
    scored = set(wanted.tolist())
    obs, info = venv.reset(seed=seed)
    current = info["example_id"].copy()
    while len(records) < target:
        obs, _, terminated, truncated, info = venv.step(act(obs))
        for slot in np.flatnonzero(terminated | truncated):
            example = int(current[slot])
            if example in scored and example not in records:
                records[example] = venv.core.episode_record(venv.state, int(slot))
        # NEXT_STEP autoreset: finished slots restart on the following step (reward 0).
        if "example_id" in info:
            restarted = info["_example_id"]
            current[restarted] = info["example_id"][restarted]
    ordered = [records[int(i)] for i in wanted]
    result: dict[str, Any] = {"env_id": env_id, "split": split, "episodes": target}
    result.update(venv.core.corpus_metrics(ordered))
    if return_records:
        result["records"] = ordered
    return result
