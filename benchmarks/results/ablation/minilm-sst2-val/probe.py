"""Validation probe behind docs/LEARNING.md's MiniLM SST-2 sweep (the records beside it).

    PYTHONPATH=. python benchmarks/results/ablation/minilm-sst2-val/probe.py \
        lmgym/SST2-v0 ppo HEAD_LR_SCALE SEED [STEPS] ['{"ent_coef": 0.0}']

One leaderboard run (benchmarks.runner.run_one) of PPO or supervised with MiniLM, 2,048 env
steps, validation curve on the first 400 sentences of the held-out validation split
(commit 4977feb and later), test scored on 1 example only (not used).
"""

import json
import sys
import time
from pathlib import Path

from benchmarks.leaderboard import RunConfig
from benchmarks.runner import run_one

env, algo, scale, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
steps = int(sys.argv[5]) if len(sys.argv) > 5 else 2048
extra = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
out = Path(
    f"benchmarks/results/ablation/minilm-sst2-val/{env.split('/')[1]}__{algo}__{scale:g}__{seed}__{steps}{'__' + '_'.join(f'{k}{v}' for k, v in extra.items()) if extra else ''}.json"
)
if out.exists():
    sys.exit(0)
hp = {"policy_kwargs": {"critic_encoder_grad": False, "head_lr_scale": scale}, **extra}
eval_examples = 400 if "SST2" in env else 100
cfg = RunConfig(
    spec="headlr",
    env=env,
    algo=algo,
    backbone="minilm",
    seed=seed,
    steps=steps,
    eval_every=1024,
    eval_examples=eval_examples,
    test_examples=1,
    device="cpu",
    n_envs=8,
    hyperparams=hp,
)
t = time.time()
rec = run_one(cfg)
rec["wall_time_s"] = time.time() - t
rec["hyperparams"] = hp
out.write_text(json.dumps(rec))
print(out.name, rec["curve"], round(rec["wall_time_s"]))
