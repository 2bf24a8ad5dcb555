"""Play an lmgym episode by hand in the terminal (like Minigrid's ``manual_control.py``).

``lmgym play lmgym/NER-v0``: the text, gold and chosen labels are shown after every
step; type an action number (or a label name), ``e`` for the expert's action, ``?`` for
the list of valid actions, ``q`` to quit.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.panel import Panel


def _action_names(core: Any) -> list[str]:
    for attr in ("tags", "label_names", "labels"):
        if hasattr(core, attr):
            return [str(x) for x in getattr(core, attr)]
    return [str(i) for i in range(core.n_actions)]


def play(
    env_id: str,
    split: str = "validation",
    seed: int | None = None,
    input_fn=input,
    console: Console | None = None,
    **kwargs: Any,
) -> int:
    """Interactive loop; returns 0. ``input_fn``/``console`` are injectable for tests."""
    console = console or Console()
    env = gym.make(env_id, split=split, render_mode="ansi", **kwargs)
    unwrapped: Any = env.unwrapped
    core = unwrapped.core
    names = _action_names(core)
    obs, _ = env.reset(seed=seed)
    total = 0.0
    while True:
        console.print(
            Panel(str(env.render() or ""), title=f"{env_id} ({split})  return so far {total:g}")
        )
        valid = np.flatnonzero(unwrapped.action_masks())
        choices = ", ".join(f"{i}={names[i]}" for i in valid[:40]) + (
            " ..." if len(valid) > 40 else ""
        )
        answer = input_fn(f"action [{choices}] (e=expert, q=quit): ").strip()
        if answer in ("q", "quit"):
            return 0
        if answer == "?":
            console.print(choices)
            continue
        if answer == "e":
            action = unwrapped.expert_action()
        elif answer in names:
            action = names.index(answer)
        elif answer.isdigit() and int(answer) < core.n_actions:
            action = int(answer)
        else:
            console.print(f"[red]not an action: {answer!r}[/red]")
            continue
        obs, reward, terminated, truncated, info = env.step(action)
        total += float(reward)
        console.print(f"reward {reward:g}")
        if terminated or truncated:
            console.print(Panel(str(env.render() or ""), title="episode over"))
            console.print(f"return {total:g}; episode metrics {info.get('episode_metrics', {})}")
            again = input_fn("play another? [y/N] ").strip().lower()
            if again != "y":
                return 0
            obs, _ = env.reset()
            total = 0.0
