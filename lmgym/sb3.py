"""Stable-Baselines3 ``VecEnv`` backed by an lmgym native vector env.

``import lmgym`` never imports this module (Stable-Baselines3 imports torch); import it
yourself where you train::

    from stable_baselines3 import PPO
    import lmgym.sb3

    env = lmgym.sb3.make_vec_env("lmgym/NER-v0", n_envs=64, seed=0, data_dir="sample")
    PPO("MultiInputPolicy", env).learn(10_000)

The adapter steps all ``n_envs`` episodes with one call of the native env (SAME_STEP
autoreset) and produces what SB3's ``DummyVecEnv`` of ``Monitor``-wrapped single envs
produces: per-env info dicts with ``terminal_observation``, ``TimeLimit.truncated``,
``episode`` ``{r, l, t}`` and the env's ``episode_metrics``; ``reset_infos``;
``env_method("action_masks")`` for sb3-contrib's ``MaskablePPO``; ``get_attr``/``seed``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

import lmgym  # noqa: F401  (registers the envs)
from lmgym.envs.base import LmgymVectorEnv

#: Per-env methods of the single env whose batched form the vector env has.
_BATCHED_METHODS = {"action_masks": "action_masks", "expert_action": "expert_actions"}


class LmgymVecEnv(VecEnv):
    """SB3 view of a native lmgym vector env (built with ``autoreset_mode="SameStep"``).

    :param venv: the native vector env; it must autoreset in the same step and return
        copies of its observations (SB3 keeps the previous observation across a step).
    """

    def __init__(self, venv: LmgymVectorEnv) -> None:
        env = venv.unwrapped
        if not isinstance(env, LmgymVectorEnv):
            raise TypeError(
                f"expected an lmgym native vector env, got {type(env).__name__}; use lmgym.sb3.make_vec_env(env_id, n_envs)"
            )
        if env.autoreset_mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                "SB3 needs autoreset in the same step: build the env with autoreset_mode='SameStep' (make_vec_env does)"
            )
        if not env.copy:
            raise ValueError(
                "SB3 keeps the last observation across a step: build the env with copy=True"
            )
        self.venv = env
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        n = env.num_envs
        self._actions = np.zeros(n, dtype=np.int64)
        self._returns = np.zeros(n, dtype=np.float64)
        self._lengths = np.zeros(n, dtype=np.int64)
        self._started = False
        self.t_start = time.time()

    # -- the VecEnv protocol ---------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        seeds = self._seeds
        options = self._options[0] if self._options and self._options[0] else None
        if not self._started or any(s is not None for s in seeds):
            obs, infos = self.venv.reset(seed=list(seeds), options=options)
        else:
            obs, infos = self.venv.reset(options=options)
        self._started = True
        self._reset_seeds()
        self._reset_options()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        self.reset_infos = self._per_env(infos, range(self.num_envs))
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        self._returns += rewards
        self._lengths += 1
        dones = terminated | truncated
        info_list: list[dict[str, Any]] = [
            {"TimeLimit.truncated": t} for t in (truncated & ~terminated).tolist()
        ]
        if dones.any():
            # Per-env dicts are SB3's API; build them from whole columns (tolist + zip), not per key.
            finished = np.flatnonzero(dones)
            elapsed = round(time.time() - self.t_start, 6)
            returns = self._returns[finished]
            if np.array_equal(returns, np.round(returns)):
                rounded = returns.tolist()  # integral returns: round(x, 6) == x
            else:
                rounded = [round(r, 6) for r in returns.tolist()]
            episodes = [
                {"r": r, "l": n, "t": elapsed}
                for r, n in zip(rounded, self._lengths[finished].tolist(), strict=True)
            ]
            final_obs = infos["final_obs"][finished].tolist()
            metrics = self._episode_metrics(infos.get("final_info", {}), finished)
            resets = self._per_env(infos, finished)
            for j, i in enumerate(finished.tolist()):
                info = info_list[i]
                info["terminal_observation"] = final_obs[j]
                info["episode"] = episodes[j]
                if metrics[j] is not None:
                    info["episode_metrics"] = metrics[j]
                self.reset_infos[i] = resets[j]
            self._returns[finished] = 0.0
            self._lengths[finished] = 0
        return obs, rewards.astype(np.float32), dones, info_list

    @staticmethod
    def _episode_metrics(
        final_info: dict[str, Any], finished: np.ndarray
    ) -> list[dict[str, float] | None]:
        """``episode_metrics`` of each finished env as a single env reports them (floats;
        only the metrics that apply to its episode), or None where it has none."""
        metrics = final_info.get("episode_metrics")
        if metrics is None:
            return [None] * len(finished)
        has = final_info["_episode_metrics"][finished].tolist()
        names = [k for k in metrics if k[0] != "_"]
        values = [metrics[k][finished].tolist() for k in names]
        masks = [metrics[f"_{k}"][finished] for k in names]
        if all(m.all() for m in masks):
            return [
                dict(zip(names, row, strict=True)) if h else None
                for h, row in zip(has, zip(*values, strict=True), strict=True)
            ]
        mask_lists = [m.tolist() for m in masks]
        return [
            {k: v for k, v, ok in zip(names, row, oks, strict=True) if ok} if h else None
            for h, row, oks in zip(
                has, zip(*values, strict=True), zip(*mask_lists, strict=True), strict=True
            )
        ]

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The vector env's attribute, once per selected env (all slots share one env)."""
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the vector env (shared by every slot, whatever ``indices``)."""
        setattr(self.venv, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        """Per-env results. ``action_masks`` and ``expert_action`` come from one batched call
        (``bool[n_actions]`` / ``int`` per env); any other method of the vector env is called
        once and its result returned for every selected env."""
        selected = list(self._get_indices(indices))
        batched = _BATCHED_METHODS.get(method_name)
        if batched is not None:
            values = getattr(self.venv, batched)(*method_args, **method_kwargs)
            return list(values) if len(selected) == self.num_envs else [values[i] for i in selected]
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in selected]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        """``Monitor``: True, since the adapter reports Monitor's ``episode`` infos (so
        ``evaluate_policy`` reads them); other wrappers: False."""
        wrapped = issubclass(Monitor, wrapper_class)
        return [wrapped for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]

    def action_masks(self) -> np.ndarray:
        """``bool[n_envs, n_actions]`` in one call (sb3-contrib reads ``env_method``)."""
        return self.venv.action_masks()

    # -- checkpointing -----------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue the current episodes exactly, in this or another
        process: the native env's batch state and sampler (example order, RNGs) and the
        running episode returns. Picklable; the data itself is not included (the env
        that :meth:`set_state` is called on loads it)."""
        return copy.deepcopy(
            {
                "env": self.venv.__getstate__(),
                "returns": self._returns,
                "lengths": self._lengths,
                "started": self._started,
                "reset_infos": self.reset_infos,
                # seeds and options SB3's seed()/set_options() left for the next reset: a
                # checkpoint taken before the first reset (a warm start) must keep them
                "seeds": self._seeds,
                "options": self._options,
            }
        )

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`get_state` of an env made with the same id, ``n_envs`` and
        make kwargs (anything else raises ``ValueError``, naming the difference)."""
        env = copy.deepcopy(state["env"])
        if env["num_envs"] != self.num_envs:
            raise ValueError(
                f"saved state has n_envs={env['num_envs']}, this env {self.num_envs}: resume with --n-envs {env['num_envs']}"
            )
        ours, theirs = self.venv._kwargs, env["_kwargs"]
        if not _same_kwargs(ours, theirs):
            raise ValueError(
                f"saved state is of an env made with {theirs}, this one with {ours}: make the env with the same kwargs"
            )
        self.venv.__dict__.update(env)
        self._returns = state["returns"].copy()
        self._lengths = state["lengths"].copy()
        self._started = state["started"]
        self.reset_infos = copy.deepcopy(state["reset_infos"])
        self._reset_seeds()
        self._reset_options()
        if "seeds" in state:  # states saved before the key existed: no pending seeds
            self._seeds, self._options = list(state["seeds"]), copy.deepcopy(state["options"])

    # -- helpers -----------------------------------------------------------------------------------
    @staticmethod
    def _per_env(infos: dict[str, Any], slots: Any) -> list[dict[str, Any]]:
        """Top-level reset infos (``example_id``, ...) of each slot, as a single env gives them."""
        slots = np.asarray(slots if isinstance(slots, np.ndarray) else list(slots))
        keys = [
            k
            for k, v in infos.items()
            if k[0] != "_" and k not in ("final_obs", "final_info") and isinstance(v, np.ndarray)
        ]
        if not keys:
            return [{} for _ in range(len(slots))]
        # .tolist() turns numpy scalars into Python ones, as the single env returns them.
        columns = [
            infos[k][slots].tolist() if infos[k].ndim == 1 else list(infos[k][slots]) for k in keys
        ]
        masks = [infos[f"_{k}"][slots] for k in keys]
        if all(m.all() for m in masks):
            return [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]
        mask_lists = [m.tolist() for m in masks]
        return [
            {k: v for k, v, ok in zip(keys, row, oks, strict=True) if ok}
            for row, oks in zip(
                zip(*columns, strict=True), zip(*mask_lists, strict=True), strict=True
            )
        ]


def _same_kwargs(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        try:
            if not bool(a[key] == b[key]):
                return False
        except Exception:  # noqa: BLE001 - objects without a usable ==: compare their type
            if type(a[key]) is not type(b[key]):
                return False
    return True


def make_vec_env(
    env_id: str, n_envs: int = 1, seed: int | None = None, **kwargs: Any
) -> LmgymVecEnv:
    """An SB3 ``VecEnv`` of ``n_envs`` episodes of ``env_id`` on one native lmgym vector env.

    :param env_id: a registered lmgym id (``"lmgym/NER-v0"``, ``"lmgym/MultiTask-v0"``, ...).
    :param n_envs: number of parallel episodes.
    :param seed: env ``i`` is seeded ``seed + i`` at the first reset (as SB3's ``make_vec_env``).
    :param kwargs: make kwargs of the env (``data_dir=``, ``tokenizer=``, ``tasks=``, ...).
    """
    for reserved in ("autoreset_mode", "copy", "num_envs"):
        if reserved in kwargs:
            raise ValueError(f"make_vec_env sets {reserved} itself; drop it from the arguments")
    spec = gym.spec(env_id)
    if spec.vector_entry_point is None:
        raise ValueError(
            f"{env_id} has no native vector env (vector_entry_point); lmgym.sb3 needs one"
        )
    venv: Any = gym.make_vec(
        env_id,
        num_envs=n_envs,
        vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.SAME_STEP,
        **kwargs,
    )
    env = LmgymVecEnv(venv)
    if seed is not None:
        env.seed(seed)
    return env


__all__ = ["LmgymVecEnv", "make_vec_env"]
