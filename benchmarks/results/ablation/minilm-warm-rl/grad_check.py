"""Probe: does one RLOO gradient step raise the sampled sentence F1 it estimates?

Fixed training sentences, K samples each drawn with fixed Gumbel noise (common random
numbers), so the objective is the same function of the weights at every step size.

    python grad_check.py SENTENCES K $T
"""

import json
import sys

import numpy as np
import torch as th
from probe import setup
from rloo_probe import backward, rloo_advantages, rollout

from lmgym.evaluation import _vector_env


def main(sentences, k, argv):
    model, plan, _, score = setup(argv)
    venv = _vector_env("lmgym/NER-v0", sentences * k, {**plan.make_kwargs, "split": "train"})
    examples = np.random.default_rng(0).integers(venv.core.n_examples, size=sentences)
    n_actions = venv.single_action_space.n
    gumbel = -th.log(
        -th.log(th.rand(sentences * k, 200, n_actions, generator=th.Generator().manual_seed(0)))
    )
    zero = th.zeros(sentences * k, 200, n_actions)
    params = [p for p in model.policy.parameters() if p.requires_grad]

    def objective(noise):
        return float(rollout(model, venv, examples, k, gumbel=noise)[3].mean())

    obs, actions, slots, f1 = rollout(model, venv, examples, k, gumbel=gumbel)
    model.policy.zero_grad()
    backward(model, obs, actions, slots, rloo_advantages(f1, k), k, 1 / len(f1))
    grads = [p.grad.clone() if p.grad is not None else th.zeros_like(p) for p in params]
    norm = float(th.sqrt(sum((g * g).sum() for g in grads)))
    if norm == 0:
        raise SystemExit("every sample of each sentence scored alike: no gradient; take more")
    base = [p.detach().clone() for p in params]
    rows = []
    for alpha in (0.0, 0.003, 0.01, 0.03, 0.1):
        with th.no_grad():
            for p, b, g in zip(params, base, grads, strict=True):
                p.copy_(b - alpha * g / norm)
        row = {
            "alpha": alpha,
            "predicted_gain": alpha * norm,
            "sampled": objective(gumbel),
            "greedy_train": objective(zero),
            "greedy_val": score(),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        json.dumps(
            {
                "probe": "grad_check",
                "sentences": sentences,
                "k": k,
                "grad_norm": norm,
                "argv": argv,
                "rows": rows,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
