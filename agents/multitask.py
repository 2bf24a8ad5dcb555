"""Per-task logging for multi-task RL on ``lmgym/MultiTask-v0``.

A MultiTask episode reports its metrics under its task's name (``info["episode_metrics"]
== {"ner/entity_f1": ..., "ner/token_accuracy": ...}``). :class:`PerTaskLogger` averages,
over each rollout, every task's episode return, length and metrics and records them as
``tasks/<task>/ep_rew_mean``, ``tasks/<task>/ep_len_mean``, ``tasks/<task>/<metric>`` and
``tasks/<task>/episodes`` next to SB3's pooled ``rollout/ep_rew_mean``, so one can see which
task a multi-task policy is learning. ``agents.train`` adds it to MultiTask runs (on a
single-task env it would record nothing).

Per-task advantage normalisation lives in :mod:`agents.buffers` (``advantages=task``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


def episode_task(info: dict[str, Any]) -> str | None:
    """The task of a finished MultiTask episode (the prefix of its metric names), else ``None``."""
    names = list(info.get("episode_metrics") or ())
    if not names or "/" not in names[0]:
        return None
    return names[0].split("/", 1)[0]


class PerTaskLogger(BaseCallback):
    """Record each task's episode return, length and metrics, averaged over a rollout."""

    def __init__(self) -> None:
        super().__init__()
        self._values: dict[str, list[float]] = defaultdict(list)

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
