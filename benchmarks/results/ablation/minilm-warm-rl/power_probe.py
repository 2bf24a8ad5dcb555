"""Probe (2026-12-07, fourth session): PPO on the balanced per-word NER reward with its
``balance_power`` changed between phases (a reward curriculum), from scratch or after a warm
start.

    cd benchmarks/results/ablation/minilm-warm-rl
    export LMGYM_DATA_DIR=../../../../../shared/data OMP_NUM_THREADS=1 PYTHONPATH=../../../..
    python power_probe.py 1.0:2048,0.3:2048 lmgym/NER-v0 --backbone minilm --seed 0
        --env-kwarg reward_mode=balanced --eval-freq -1 --log-dir /tmp/runs --run-name pp
        --pretrain-steps 0 --verbose 0 --threads 1

The first argument is ``power:env_steps`` phases; the rest are ``agents.train``'s (the env
must use ``reward_mode=balanced``). Power 1 keeps "always ``O``" from being the easy optimum
from scratch; lower powers move the best tag toward entity F1's (docs/LEARNING.md). Prints
one JSON line: entity F1 on the first 500 CoNLL validation sentences at the start and after
every 512 env steps. Records: ``results.jsonl``.
"""

import json
import sys

from probe import setup

from lmgym.envs.tagging import balanced_weights


def main(phases, argv):
    model, _, callbacks, f1 = setup(argv)
    core = model.get_env().venv.core
    curve, done = [(0, f1())], 0
    for phase in phases.split(","):
        power, steps = phase.split(":")
        core.tag_weights = balanced_weights(core.tags, core.data["gold"], float(power))
        for _ in range(int(steps) // 512):
            model.learn(512, callback=callbacks, reset_num_timesteps=(done == 0))
            done += 512
            curve.append((done, f1()))
    print(
        json.dumps({"probe": "power", "phases": phases, "argv": argv, "curve": curve}), flush=True
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
