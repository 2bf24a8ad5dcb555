"""``make demo`` / ``python -m agents.demo``: train a PPO tagger on CoNLL-2003 and show it learnt.

In about two minutes on 2 CPU cores: PPO with the shipped recipe
(``agents/hyperparams/ppo.yml``, tiny from-scratch encoder, the balanced per-tag reward)
trains on ``lmgym/NER-v0`` for ``--steps`` words, with a progress bar; then a table of
held-out entity F1 (seqeval, the first ``--eval-sentences`` validation sentences) before
and after training, next to random, majority ("always O") and supervised fine-tuning of
the same network on the same number of labelled words; then one validation sentence with
entities, tagged by the trained agent under the gold tags.

Uses ``$LMGYM_DATA_DIR`` when it holds CoNLL-2003, else the bundled sample (which runs,
but is too small to learn from).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from rich.console import Console
from rich.table import Table

import lmgym
from agents import TransformerPolicy, pretrain
from agents.train import SETUP_KEYS, load_hyperparams, supervised_recipe

ENV_ID = "lmgym/NER-v0"


def build(make_kwargs: dict[str, Any], seed: int) -> Any:
    """PPO with the shipped NER recipe for the tiny backbone."""
    from stable_baselines3 import PPO

    from lmgym.sb3 import make_vec_env

    hp = load_hyperparams("ppo", ENV_ID, "tiny")
    venv = make_vec_env(ENV_ID, int(hp["n_envs"]), seed=seed, **make_kwargs, **hp["env_kwargs"])
    algo_kwargs = {k: v for k, v in hp.items() if k not in SETUP_KEYS}
    policy_kwargs = {"backbone": "tiny", **hp.get("policy_kwargs", {})}
    return PPO(TransformerPolicy, venv, seed=seed, verbose=0, policy_kwargs=policy_kwargs,
               **algo_kwargs)  # fmt: skip


def tagged_sentence(model: Any, make_kwargs: dict[str, Any], max_tries: int = 200) -> str:
    """The first short validation sentence with two or more entities, tagged by ``model``."""
    env = gym.make(ENV_ID, split="validation", shuffle=False, render_mode="ansi", **make_kwargs)
    core: Any = env.unwrapped.core  # type: ignore[attr-defined]
    obs, _ = env.reset(seed=0)
    for _ in range(max_tries):
        example = int(env.unwrapped.state["example"][0])  # type: ignore[attr-defined]
        wanted = core.data["n_gold"][example] >= 2 and core.data["n_words"][example] <= 14
        done = False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(int(action))
            done = terminated or truncated
        if wanted:
            text = "\n".join(env.render().splitlines()[:3])  # type: ignore[union-attr]
            f1 = info["episode_metrics"]["entity_f1"]
            return f"{text}\n(sentence entity F1 {f1:.2f})"
        obs, _ = env.reset()
    return "(no validation sentence with two entities found)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agents.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4096, help="env steps (words) of PPO")
    parser.add_argument("--eval-sentences", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    th.set_num_threads(args.threads)
    console = Console()
    root = os.environ.get("LMGYM_DATA_DIR")
    real = bool(root and (Path(root) / "conll2003").is_dir())
    make_kwargs: dict[str, Any] = {} if real else {"data_dir": "sample"}
    where = f"CoNLL-2003 from {root}" if real else "the bundled sample (set LMGYM_DATA_DIR)"
    console.print(f"[bold]PPO on {ENV_ID}[/bold], {where}, {args.steps} training words")

    def score(policy: Any) -> dict[str, float]:
        return lmgym.evaluate(
            policy, ENV_ID, split="validation", max_examples=args.eval_sentences, **make_kwargs
        )

    started = time.perf_counter()
    model = build(make_kwargs, args.seed)
    rows = [("random", score("random")), ("majority (always O)", score("majority"))]
    rows.append(("PPO before training", score(model)))
    model.learn(args.steps, progress_bar=True)
    rows.append((f"PPO after {args.steps} steps", score(model)))
    console.print(f"trained in {time.perf_counter() - started:.0f} s; supervised baseline next")

    supervised = build(make_kwargs, args.seed)
    recipe = supervised_recipe(ENV_ID, "tiny")  # the leaderboard's supervised baseline
    pretrain(supervised, ENV_ID, steps=args.steps // recipe["batch_size"],
             batch_size=recipe["batch_size"], lr=recipe["lr"], epochs=recipe["epochs"],
             seed=args.seed, **make_kwargs)  # fmt: skip
    rows.append((f"supervised, {args.steps} labelled words", score(supervised)))

    table = Table(title=f"entity F1 on {args.eval_sentences} held-out validation sentences")
    for column in ("policy", "entity F1", "precision", "recall", "token accuracy"):
        table.add_column(column, justify="right" if column != "policy" else "left")
    for name, result in rows:
        table.add_row(
            name,
            *(f"{result[k]:.3f}" for k in ("entity_f1", "entity_precision", "entity_recall")),
            f"{result['token_accuracy']:.3f}",
        )
    console.print(table)
    console.print("\n[bold]A validation sentence[/bold] (gold tags above the agent's):")
    console.print(
        tagged_sentence(model, make_kwargs), markup=False, highlight=False, soft_wrap=True
    )
    console.print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0 if np.isfinite(rows[-2][1]["entity_f1"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
