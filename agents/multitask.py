"""Per-task logging for multi-task RL on ``lmgym/MultiTask-v0``.

A MultiTask episode reports its metrics under its task's name (``info["episode_metrics"]
== {"ner/entity_f1": ..., "ner/token_accuracy": ...}``). :class:`PerTaskLogger` averages,
over each rollout, every task's episode return, length and metrics and records them as
``tasks/<task>/ep_rew_mean``, ``tasks/<task>/ep_len_mean``, ``tasks/<task>/<metric>`` and
``tasks/<task>/episodes`` next to SB3's pooled ``rollout/ep_rew_mean``, and each update's
KL per task as ``tasks/<task>/approx_kl`` (on-policy algorithms), so one can see which task
a multi-task policy is learning and which one its updates move. ``agents.train`` adds it to MultiTask runs (on a
single-task env it would record nothing).

Per-task advantage normalisation lives in :mod:`agents.buffers` (``advantages=task``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.callbacks import BaseCallback


def episode_task(info: dict[str, Any]) -> str | None:
    """The task of a finished MultiTask episode (the prefix of its metric names), else ``None``."""
    names = list(info.get("episode_metrics") or ())
    if not names or "/" not in names[0]:
        return None
    return names[0].split("/", 1)[0]


class PerTaskLogger(BaseCallback):
    """Record each task's episode return, length and metrics, averaged over a rollout, and
    (on-policy algorithms, ``kl=True``) each task's KL between the policy that collected a
    rollout and the policy its update produced.

    The KL is SB3's ``approx_kl`` estimator, ``mean((r - 1) - log r)`` with ``r`` the
    probability ratio of the rollout's actions, taken over each task's steps of the whole
    rollout once the update is done (SB3's ``train/approx_kl`` averages it over minibatches
    during the update). The rollout is kept at its end and scored when the next one starts,
    so ``tasks/<task>/approx_kl`` is written beside the ``train/approx_kl`` of the same
    update; it costs one extra forward pass per rollout, without gradients.

    :param kl: log per-task KL (needs a rollout buffer with ``log_probs``).
    """

    def __init__(self, kl: bool = True) -> None:
        super().__init__()
        self.kl = kl
        self._values: dict[str, list[float]] = defaultdict(list)
        self._rollout: dict[str, Any] | None = None
        self._names: list[str] | None = None

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", ()):
            task = episode_task(info)
            if task is None or "episode" not in info:
                continue
            self._values[f"tasks/{task}/ep_rew_mean"].append(float(info["episode"]["r"]))
            self._values[f"tasks/{task}/ep_len_mean"].append(float(info["episode"]["l"]))
            for name, value in info["episode_metrics"].items():
                self._values[f"tasks/{name}"].append(float(value))
        return True

    def _on_rollout_end(self) -> None:
        counts: dict[str, int] = {}
        for key, values in self._values.items():
            self.logger.record(key, float(np.mean(values)))
            task = key.split("/")[1]
            if key.endswith("/ep_rew_mean"):
                counts[task] = len(values)
        for task, n in counts.items():
            self.logger.record(f"tasks/{task}/episodes", n)
        self._values.clear()
        buffer = getattr(self.model, "rollout_buffer", None)
        observations = getattr(buffer, "observations", None)
        if self.kl and isinstance(observations, dict) and "task_id" in observations:
            masks = getattr(buffer, "action_masks", None)
            self._rollout = {
                "obs": {k: v.copy() for k, v in observations.items()},
                "actions": buffer.actions.copy(),
                "log_probs": buffer.log_probs.copy(),
                "masks": None if masks is None else masks.copy(),
            }

    def _on_rollout_start(self) -> None:
        if self._rollout is not None:
            for task, kl in self.task_kl(self._rollout).items():
                self.logger.record(f"tasks/{task}/approx_kl", kl)
            self._rollout = None

    def task_names(self) -> list[str]:
        if self._names is None:
            try:
                self._names = list(self.training_env.get_attr("task_names")[0])
            except (AttributeError, IndexError):
                self._names = []
        return self._names

    def task_kl(self, rollout: dict[str, Any], batch_size: int = 256) -> dict[str, float]:
        """``{task: approx KL}`` of the current policy against the one that collected ``rollout``."""
        import torch as th

        policy = self.model.policy
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in rollout["obs"].items()}
        actions = rollout["actions"].reshape(len(flat["task_id"]), -1)
        old = rollout["log_probs"].reshape(-1)
        masks = rollout["masks"]
        if masks is not None:
            masks = masks.reshape(len(old), -1)
        new = np.empty_like(old)
        was_training = policy.training
        policy.set_training_mode(False)
        with th.no_grad():
            for start in range(0, len(old), batch_size):
                part = slice(start, start + batch_size)
                obs = {k: th.as_tensor(v[part], device=policy.device) for k, v in flat.items()}
                act = th.as_tensor(actions[part], device=policy.device)
                if isinstance(policy.action_space, spaces.Discrete):
                    act = act.long().flatten()
                extra = {} if masks is None else {"action_masks": masks[part]}
                _, log_prob, _ = policy.evaluate_actions(obs, act, **extra)
                new[part] = log_prob.cpu().numpy()
        policy.set_training_mode(was_training)
        log_ratio = new - old
        kl = np.exp(log_ratio) - 1.0 - log_ratio
        tasks = flat["task_id"].reshape(-1)
        names = self.task_names()
        return {
            (names[k] if k < len(names) else f"task{k}"): float(kl[tasks == k].mean())
            for k in np.unique(tasks).astype(int)
        }
