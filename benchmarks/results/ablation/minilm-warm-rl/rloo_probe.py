"""Probe: RLOO (k samples of each sentence, leave-one-out baseline) after the MiniLM warm start.

Same warm start as probe.py; then, each iteration, ``--sentences`` training sentences are
each tagged ``--k`` times by the sampled policy, every sample gets the advantage
``F1_i - mean_{j != i} F1_j`` (sentence entity F1), and one optimizer step follows
``-mean_i A_i * sum_t log pi(a_t | s_t)``. Prints validation F1 on 500 sentences.

    python rloo_probe.py ITERS SENTENCES K OPT LR EVAL_EVERY $T
"""

import json
import sys

import numpy as np
import torch as th
from probe import setup
from stable_baselines3.common.utils import obs_as_tensor

from lmgym.evaluation import _vector_env


def rollout(model, venv, examples, k, temperature=1.0, expert=False, gumbel=None):
    """Tag each example k times; return per-sample obs lists, actions, sentence F1."""
    n = len(examples) * k
    venv.sampler.order = np.repeat(examples, k)
    venv.sampler.position[:] = np.arange(n)
    obs, info = venv.reset(seed=0)
    steps_obs, steps_act, steps_slot = [], [], []
    alive = np.ones(n, dtype=bool)
    f1 = np.zeros(n)
    model.policy.set_training_mode(False)
    while alive.any():
        with th.no_grad():
            dist = model.policy.get_distribution(obs_as_tensor(obs, model.device))
            logits = dist.distribution.logits / temperature
            if gumbel is None:
                actions = th.distributions.Categorical(logits=logits).sample().cpu().numpy()
            else:  # fixed noise: the same samples for the same policy (common random numbers)
                actions = (logits + gumbel[:, len(steps_act)]).argmax(-1).cpu().numpy()
        if expert:  # teacher forcing: the gold tag (behaviour cloning's states and targets)
            actions = venv.expert_actions()
        idx = np.flatnonzero(alive)
        steps_obs.append({key: value[idx].copy() for key, value in obs.items()})
        steps_act.append(actions[idx])
        steps_slot.append(idx)
        obs, _, terminated, truncated, info = venv.step(actions)
        ended = (terminated | truncated) & alive
        if ended.any():
            f1[ended] = info["episode_metrics"]["entity_f1"][ended]
            alive &= ~ended
    cat = {key: np.concatenate([o[key] for o in steps_obs]) for key in steps_obs[0]}
    return cat, np.concatenate(steps_act), np.concatenate(steps_slot), f1


def log_prob(model, obs, actions, temperature=1.0):
    """``log pi_T(a | s)`` with gradients, pi_T = softmax(logits / T)."""
    logits = model.policy.get_distribution(obs).distribution.logits / temperature
    return th.log_softmax(logits, -1).gather(1, actions.long().view(-1, 1)).squeeze(1)


def rloo_advantages(f1, k):
    """Leave-one-out advantage of each of the k samples of a sentence (samples grouped)."""
    groups = f1.reshape(-1, k)
    return (groups - (groups.sum(1, keepdims=True) - groups) / (k - 1)).reshape(-1)


def backward(model, obs, actions, slots, sample_adv, k, scale, temperature=1.0):
    """Accumulate the gradient of ``-scale * sum_i A_i sum_t log pi_T(a_t | s_t)`` (rows of
    samples with ``A_i != 0``); returns how many rows that is."""
    step_adv = sample_adv[slots]
    keep = np.flatnonzero(step_adv != 0)
    # order rows by sentence so that one sentence's words sit in one chunk (encoder dedup)
    keep = keep[np.argsort(slots[keep] // k, kind="stable")]
    model.policy.set_training_mode(True)
    for lo in range(0, len(keep), 512):
        rows = keep[lo : lo + 512]
        o = obs_as_tensor({key: v[rows] for key, v in obs.items()}, model.device)
        logp = log_prob(model, o, th.as_tensor(actions[rows]), temperature)
        (-(th.as_tensor(step_adv[rows], dtype=th.float32) * logp).sum() * scale).backward()
    return len(keep)


def main(iters, sentences, k, opt, lr, eval_every, argv):
    model, plan, _, score = setup(argv)
    venv = _vector_env("lmgym/NER-v0", sentences * k, {**plan.make_kwargs, "split": "train"})
    rng = np.random.default_rng(0)
    params = [p for p in model.policy.parameters() if p.requires_grad]
    optim = th.optim.SGD(params, lr=lr) if opt == "sgd" else th.optim.Adam(params, lr=lr)
    curve, train_f1 = [(0, score())], []
    print(json.dumps({"it": 0, "val": curve[-1][1]}), flush=True)
    for it in range(1, iters + 1):
        examples = rng.integers(venv.core.n_examples, size=sentences)
        obs, actions, slots, f1 = rollout(model, venv, examples, k)
        train_f1.append(float(f1.mean()))
        optim.zero_grad()
        nonzero = backward(model, obs, actions, slots, rloo_advantages(f1, k), k, 1 / len(f1))
        optim.step()
        if it % eval_every == 0:
            curve.append((it, score()))
        print(
            json.dumps(
                {
                    "it": it,
                    "train_f1": train_f1[-1],
                    "nonzero": nonzero,
                    "val": curve[-1][1] if curve[-1][0] == it else None,
                }
            ),
            flush=True,
        )
    print(
        json.dumps(
            {
                "probe": "rloo",
                "iters": iters,
                "sentences": sentences,
                "k": k,
                "opt": opt,
                "lr": lr,
                "argv": argv,
                "curve": curve,
                "train_f1": train_f1,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    a = sys.argv
    main(int(a[1]), int(a[2]), int(a[3]), a[4], float(a[5]), int(a[6]), a[7:])
