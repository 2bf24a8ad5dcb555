"""Probe: validation F1 along one large-sample REINFORCE/RLOO gradient direction, against a
random direction of the same norm (is the expected update harmful, or only its noise?).

    python line_probe.py SENTENCES K TEMPERATURE MODE $T   # MODE: rloo, rloo-pr (with precision/recall), bc
"""

import json
import sys

import numpy as np
import torch as th
from probe import setup
from rloo_probe import backward, rloo_advantages, rollout

import lmgym
from lmgym.evaluation import _vector_env


def main(sentences, k, temperature, argv, mode="rloo"):
    model, plan, _, score = setup(argv)
    kw = {key: v for key, v in plan.make_kwargs.items() if key != "split"}

    def metrics(split):
        out = lmgym.evaluate(model, "lmgym/NER-v0", split=split, max_examples=500, **kw)
        return {
            key: round(out[key], 4) for key in ("entity_f1", "entity_precision", "entity_recall")
        }

    def sampled():
        return lmgym.evaluate(
            model, "lmgym/NER-v0", split="validation", max_examples=500, deterministic=False, **kw
        )["entity_f1"]

    venv = _vector_env("lmgym/NER-v0", 256, {**plan.make_kwargs, "split": "train"})
    rng = np.random.default_rng(0)
    params = [p for p in model.policy.parameters() if p.requires_grad]
    grads = [th.zeros_like(p) for p in params]
    f1s = []
    for _ in range(0, sentences, 256 // k):
        examples = rng.integers(venv.core.n_examples, size=256 // k)
        obs, actions, slots, f1 = rollout(
            model, venv, examples, k, temperature, expert=mode == "bc"
        )
        f1s.append(f1.mean())
        adv = rloo_advantages(f1, k)
        if mode == "bc":  # cross-entropy on the gold tags: the supervised direction
            adv = np.ones_like(adv)
        model.policy.zero_grad()
        backward(model, obs, actions, slots, adv, k, 1 / sentences / k, temperature)
        for g, p in zip(grads, params, strict=True):
            if p.grad is not None:
                g += p.grad
    norm = th.sqrt(sum((g * g).sum() for g in grads))
    print(
        json.dumps({"grad_norm": float(norm), "train_sampled_f1": float(np.mean(f1s))}), flush=True
    )
    base = [p.detach().clone() for p in params]
    gen = th.Generator().manual_seed(0)
    noise = [th.randn(p.shape, generator=gen) for p in params]
    nnorm = th.sqrt(sum((z * z).sum() for z in noise))
    rows = []
    pairs = [("gradient", grads, norm), ("random", noise, nnorm)]
    for name, direction, dnorm in pairs[: 2 if temperature == 1.0 and mode == "rloo" else 1]:
        for alpha in (
            ((0.0, 0.03, 0.1, 0.3, 1.0) if mode == "rloo" else (0.0, 0.03, 0.1, 0.3))
            if name == "gradient"
            else (0.1, 0.3, 1.0)
        ):
            with th.no_grad():
                for p, b, d in zip(params, base, direction, strict=True):
                    p.copy_(b - alpha * d / dnorm)  # descent on the loss = ascent on F1
            row = {"direction": name, "alpha": alpha, "greedy": score(), "sampled": sampled()}
            if mode != "rloo":
                row.update(val=metrics("validation"), train=metrics("train"))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        json.dumps(
            {
                "probe": "line",
                "sentences": sentences,
                "k": k,
                "mode": mode,
                "temperature": temperature,
                "argv": argv,
                "grad_norm": float(norm),
                "rows": rows,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[5:], sys.argv[4])
