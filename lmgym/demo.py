"""``make demo`` / ``python -m lmgym.demo``: make ``lmgym/NER-v0``, play a few episodes with a
random and an expert policy, and print the corpus entity F1 of each on the validation split.

Uses the real CoNLL-2003 files when ``$LMGYM_DATA_DIR`` holds them, else the bundled sample.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from rich.console import Console
from rich.table import Table

import lmgym


def main() -> int:
    console = Console()
    root = os.environ.get("LMGYM_DATA_DIR")
    kwargs: dict[str, Any] = (
        {} if root and (Path(root) / "conll2003").is_dir() else {"data_dir": "sample"}
    )
    source = (
        f"$LMGYM_DATA_DIR={root}"
        if not kwargs
        else "the bundled sample (set LMGYM_DATA_DIR for CoNLL-2003)"
    )
    console.print(f"[bold]lmgym/NER-v0[/bold] on {source}")

    env = gym.make("lmgym/NER-v0", render_mode="ansi", split="validation", **kwargs)
    unwrapped: Any = env.unwrapped
    console.print(
        f"observation keys: {sorted(unwrapped.observation_space.spaces)}; actions: {unwrapped.core.tags}"
    )
    rng = np.random.default_rng(0)
    for name in ("random", "expert"):
        obs, _ = env.reset(seed=1)
        done, ret = False, 0.0
        while not done:
            if name == "expert":
                action = unwrapped.expert_action()
            else:
                action = int(rng.choice(np.flatnonzero(obs["action_mask"])))
            obs, reward, terminated, truncated, info = env.step(action)
            ret += float(reward)
            done = terminated or truncated
        console.print(
            f"\n[bold]{name}[/bold] episode (return {ret:g}, sentence F1 {info['episode_metrics']['entity_f1']:.2f}):"
        )
        console.print(env.render(), markup=False, highlight=False)

    table = Table(title="corpus entity F1 on the whole validation split (seqeval)")
    for column in ("policy", "entity F1", "token accuracy", "sentences"):
        table.add_column(column)
    for name in ("random", "majority", "expert"):
        result = lmgym.evaluate(name, "lmgym/NER-v0", split="validation", **kwargs)
        table.add_row(
            name,
            f"{result['entity_f1']:.4f}",
            f"{result['token_accuracy']:.4f}",
            str(result["episodes"]),
        )
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
