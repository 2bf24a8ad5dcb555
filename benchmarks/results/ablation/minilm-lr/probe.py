"""Validation probe behind docs/LEARNING.md's MiniLM learning-rate choice (records beside it).

    PYTHONPATH=. python benchmarks/results/ablation/minilm-lr/probe.py ENV ALGO LR SEED [STEPS]

One leaderboard run (benchmarks.runner.run_one) of ALGO (``ppo`` or ``supervised``) with
MiniLM on ENV (``lmgym/NER-v0`` or ``lmgym/SST2-v0``) at learning rate LR instead of the
minilm override's 2e-5, everything else as minilm-recipe.yml. Supervised keeps its recipe's
batch size and epochs; it is also the behaviour cloning that ``--warm-start N --hp
pretrain_lr=LR`` runs, so its curve point at N labelled words is that warm start.
Validation curve every 1,024 steps on the first 100 CoNLL valid sentences or 400 sentences
of SST-2's held-out validation split; test scored on 1 example only (not used).
"""

import json
import sys
import time
from pathlib import Path

import benchmarks.runner as runner
from benchmarks.leaderboard import RunConfig

env, algo, lr, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
steps = int(sys.argv[5]) if len(sys.argv) > 5 else 2048
out = Path(__file__).parent / f"{env.split('/')[1]}__{algo}__{lr:g}__{seed}__{steps}.json"
if out.exists():
    sys.exit(0)
recipe = runner.supervised_recipe
runner.supervised_recipe = lambda env, backbone: {**recipe(env, backbone), "lr": lr}
cfg = RunConfig(
    spec="minilm-lr",
    env=env,
    algo=algo,
    backbone="minilm",
    seed=seed,
    steps=steps,
    eval_every=1024,
    eval_examples=100 if "NER" in env else 400,
    test_examples=1,
    device="cpu",
    n_envs=8,
    hyperparams={} if algo == "supervised" else {"learning_rate": lr},
)
t = time.time()
rec = runner.run_one(cfg)
rec["wall_time_s"] = time.time() - t
rec["learning_rate"] = lr
tmp = out.with_suffix(".tmp")
tmp.write_text(json.dumps(rec))
tmp.replace(out)
print(out.name, rec["curve"], round(rec["wall_time_s"]))
