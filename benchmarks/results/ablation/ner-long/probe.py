"""NER PPO over a long budget (tiny backbone, pure RL): the probes behind ppo.yml's NER lr and
entropy (docs/LEARNING.md). Each run is ``agents.train`` with the shipped YAML plus the flags
of its row, no behaviour-cloning warm start, validation F1 every ``eval_freq`` env steps::

    python benchmarks/results/ablation/ner-long/probe.py run NAME SEED STEPS EVAL_FREQ [train flags]
    python benchmarks/results/ablation/ner-long/probe.py collect RUNS_DIR > records.jsonl

``run`` trains into ``$PROBE_DIR`` (default /tmp/ner-long); ``collect`` turns each run's
``args.json`` and ``progress.csv`` into one JSON line (config, validation curve, final F1).
The flags the records were made with are in each line's ``flags``.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path


def run(name: str, seed: str, steps: str, eval_freq: str, *flags: str) -> int:
    from agents.train import main

    out = os.environ.get("PROBE_DIR", "/tmp/ner-long")
    return main(["lmgym/NER-v0", "--backbone", os.environ.get("BACKBONE", "tiny"), "--seed", seed,
                 "--total-timesteps", steps, "--eval-freq", eval_freq, "--eval-max-examples",
                 os.environ.get("NEVAL", "500"), "--threads", "1", "--log-dir", out, "--run-name", name,
                 "--verbose", "0", "--no-progress-bar", "--device", "cpu", "--pretrain-steps", "0",
                 *flags])  # fmt: skip


def collect(runs: str) -> None:
    for folder in sorted(Path(runs).iterdir()):
        args = json.loads((folder / "args.json").read_text())
        resolved = args["resolved"]
        curve = []  # evaluations every eval_freq env steps (the callback's points)
        for row in csv.DictReader((folder / "progress.csv").open()):
            if row.get("eval/entity_f1"):
                step = min((len(curve) + 1) * args["eval_freq"], resolved["total_timesteps"])
                curve.append([step, *(round(float(row[f"eval/entity_{k}"]), 4)
                                      for k in ("f1", "precision", "recall"))])  # fmt: skip
        print(json.dumps({
            "name": folder.name, "env": args["env_id"], "backbone": resolved["policy_kwargs"]["backbone"],
            "seed": args["seed"], "steps": resolved["total_timesteps"], "eval_examples": args["eval_max_examples"],
            "flags": args["hp"] + [f"env:{k}" for k in args["env_kwarg"]],
            "learning_rate": resolved["algo_kwargs"]["learning_rate"], "ent_coef": resolved["algo_kwargs"]["ent_coef"],
            "reward_mode": resolved["make_kwargs"].get("reward_mode"),
            "curve [steps, f1, precision, recall]": curve, "final_f1": curve[-1][1] if curve else None,
        }))  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    command, *rest = sys.argv[1:]
    if command == "run":
        sys.exit(run(*rest))
    collect(*rest)
