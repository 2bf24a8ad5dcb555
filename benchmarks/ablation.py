"""Recipe ablation: PPO (or same-budget supervised) on one env with hyperparameter overrides.

    python -m benchmarks.ablation run lmgym/SST2-v0 --steps 2048 --seed 0 \\
        --hp '{"learning_rate": 1e-3}' --policy '{"critic_encoder_grad": false}' --out runs.jsonl
    python -m benchmarks.ablation run lmgym/NER-v0 --steps 4096 --supervised --out runs.jsonl
    python -m benchmarks.ablation diagnose lmgym/SST2-v0     # where the gradient goes
    python -m benchmarks.ablation table runs.jsonl            # config -> mean +- std (seeds)
    python -m benchmarks.ablation bandit lmgym/SST2-v0 --loss pg --eps 1e-8   # see below
    python -m benchmarks.ablation curve lmgym/NER-v0 --steps 32768 --eval-every 4096 \\
        --train-args "--hp learning_rate=3e-4 --hp ent_coef=0.03" --out runs.jsonl
    python -m benchmarks.ablation curves runs.jsonl           # final validation score per config

``run`` starts from the *pre-recipe* PPO settings below (the shipped YAML before the recipe
work), applies ``--hp`` / ``--policy`` / ``--env`` overrides, trains ``--steps`` env steps
(``--supervised``: behaviour cloning on as many expert steps, ``n_epochs`` passes over
all of them at PPO's lr; rows without ``"protocol": "whole"``, made before 2026-12-08,
streamed them in PPO's rollout-sized chunks, ``n_epochs`` passes each) and appends one JSON line with the
validation score of the first ``--eval`` examples. Hyperparameters are chosen on these
validation scores only; the leaderboard reports test. ``diagnose`` measures, on one
rollout of the untrained policy, the encoder gradient norm of the policy loss and of the
value loss apart, and after ``--steps`` of training how much the action probabilities
vary across inputs (a policy that ignores its input has spread ~0).
``bandit`` isolates the one-step update of A2C and REINFORCE on a one-step task: the same
policy, optimizer and batches (``--batch`` fresh training examples a step, Adam at ``--lr``
with ``--eps``, or ``--optimizer sgd`` with ``--momentum``), with one loss: cross-entropy on the gold label (``ce``), the sampled policy
gradient with batch-standardised rewards (``pg``), or the exact gradient of the expected
reward (``exact``, no sampling); ``--balanced`` weights rewards by ``1 / (K p(label))``. Every
32 steps it prints the mean and spread over validation inputs of the first action's
probability and the validation accuracy (docs/LEARNING.md).
``curve`` starts from the *shipped* recipe instead: ``agents.train`` with the YAML of
``--algo`` plus ``--train-args`` (its own flags, e.g. ``--hp KEY=VALUE``), no behaviour-cloning
warm start unless the flags ask for one (``--warm-start N``), the validation score every
``--eval-every`` env steps; it appends one JSON line with the resolved settings and the
curve. ``curves`` tabulates such lines (final validation score, mean ± std over seeds).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

#: PPO settings before the recipe work (agents/hyperparams/ppo.yml, tiny backbone)
BEFORE: dict[str, Any] = dict(
    n_steps=64, batch_size=64, n_epochs=4, learning_rate=3e-4, gamma=1.0, gae_lambda=0.95,
    clip_range=0.2, ent_coef=0.0, vf_coef=0.5, max_grad_norm=1.0, target_kl=0.05,
)  # fmt: skip


def build(env_id: str, seed: int, hp: dict[str, Any], policy: dict[str, Any], env: dict[str, Any]):
    """PPO with :data:`BEFORE` + ``hp`` on 8 envs of ``env_id``."""
    from stable_baselines3 import PPO

    from agents import TransformerPolicy
    from agents.buffers import rollout_buffer_class
    from lmgym.sb3 import make_vec_env

    hp = {**BEFORE, **hp}
    buffer = rollout_buffer_class(hp.pop("minibatch", "random"), "ppo")
    if buffer is not None:
        hp["rollout_buffer_class"] = buffer
    venv = make_vec_env(env_id, 8, seed=seed, **env)
    return PPO(TransformerPolicy, venv, seed=seed, verbose=0,
               policy_kwargs={"backbone": "tiny", **policy}, **hp)  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    import lmgym
    from agents import pretrain

    hp, policy, env = json.loads(args.hp), json.loads(args.policy), json.loads(args.env_kwargs)
    model = build(args.env, args.seed, hp, policy, env)
    started = time.perf_counter()
    if args.supervised:  # all the labelled steps at once, as the leaderboard's baseline
        pretrain(model, args.env, steps=max(1, args.steps // model.batch_size),
                 batch_size=model.batch_size, lr=float(model.learning_rate),
                 epochs=model.n_epochs, seed=args.seed, **env)  # fmt: skip
    else:
        model.learn(args.steps)
    seconds = time.perf_counter() - started
    family = model.env.get_attr("core", [0])[0].family
    metric = "entity_f1" if family == "ner" else "accuracy"
    score_kwargs = {k: v for k, v in env.items() if k not in ("reward_mode", "balance_power")}
    result = lmgym.evaluate(model, args.env, split="validation", max_examples=args.eval,
                            **score_kwargs)  # fmt: skip
    row = {"env": args.env, "supervised": args.supervised, "hp": hp, "policy": policy,
           **({"protocol": "whole"} if args.supervised else {}),
           "env_kwargs": env, "seed": args.seed, "steps": args.steps, "metric": metric,
           "score": round(float(result[metric]), 4), "train_s": round(seconds, 1)}  # fmt: skip
    if "token_accuracy" in result:
        row["token_accuracy"] = round(float(result["token_accuracy"]), 4)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    return row


def diagnose(args: argparse.Namespace) -> dict[str, Any]:
    """Encoder gradient of policy vs value loss; input-dependence of the trained policy."""
    import gymnasium as gym
    import torch as th
    from stable_baselines3.common.utils import obs_as_tensor

    hp, policy = json.loads(args.hp), json.loads(args.policy)
    model = build(args.env, args.seed, hp, policy, {})
    model.learn(model.n_steps * model.n_envs)  # one rollout + update, then measure on a fresh one
    model.policy.set_training_mode(False)
    model.collect_rollouts(
        model.env, model._init_callback(None), model.rollout_buffer, model.n_steps
    )
    batch = next(model.rollout_buffer.get(None))
    encoder = list(model.policy.features_extractor.encoder.parameters())
    norms = {}
    for name in ("policy", "value"):
        model.policy.zero_grad()
        values, log_prob, _ = model.policy.evaluate_actions(
            batch.observations, batch.actions.long().flatten()
        )
        adv = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
        loss = (
            -(adv * log_prob).mean()
            if name == "policy"
            else model.vf_coef * th.nn.functional.mse_loss(batch.returns, values.flatten())
        )
        loss.backward()
        grads = [(p.grad**2).sum() for p in encoder if p.grad is not None]
        norms[name] = float(th.sqrt(sum(grads))) if grads else 0.0
    model.learn(args.steps, reset_num_timesteps=False)
    env = gym.make(args.env, split="validation", shuffle=False)
    rows = [env.reset(seed=0)[0]] + [env.reset()[0] for _ in range(63)]  # first states
    stacked = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    with th.no_grad():
        probs = model.policy.get_distribution(
            obs_as_tensor(stacked, model.device)
        ).distribution.probs
    out = {"env": args.env, "hp": hp, "policy": policy, "encoder_grad_policy_loss": norms["policy"],
           "encoder_grad_value_loss": norms["value"], "prob_spread_over_inputs":
           [round(float(x), 4) for x in probs.std(0)], "prob_mean": [round(float(x), 4) for x in probs.mean(0)]}  # fmt: skip
    print(json.dumps(out))
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(out) + "\n")
    return out


def bandit(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One-step updates with ``args.loss`` on fixed batches (see the module doc)."""
    import gymnasium as gym
    import torch as th
    from stable_baselines3.common.utils import obs_as_tensor

    env_kwargs = json.loads(args.env_kwargs)
    policy = build(args.env, args.seed, {}, json.loads(args.policy), env_kwargs).policy
    if args.optimizer == "adam":
        optimizer = th.optim.Adam(policy.parameters(), lr=args.lr, eps=args.eps)
    else:
        optimizer = th.optim.SGD(policy.parameters(), lr=args.lr, momentum=args.momentum)

    def states(split: str, n: int, first: int) -> tuple[dict[str, th.Tensor], th.Tensor]:
        env = gym.make(args.env, split=split, **env_kwargs)
        rows, infos = zip(*(env.reset(seed=first + i) for i in range(n)), strict=True)
        labels = env.unwrapped.core.data["labels"][[info["example_id"] for info in infos]]
        obs = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
        return obs_as_tensor(obs, policy.device), th.as_tensor(labels, dtype=th.long)

    val_obs, val_y = states("validation", args.eval, 0)
    train_obs, train_y = states("train", args.steps * args.batch, 10_000)
    counts = th.bincount(train_y, minlength=policy.action_space.n).clamp(min=1)
    weight = len(train_y) / (len(counts) * counts) if args.balanced else th.ones(len(counts))
    generator = th.Generator().manual_seed(args.seed)
    out, running = [], None
    for step in range(args.steps):
        part = slice(step * args.batch, (step + 1) * args.batch)
        policy.set_training_mode(True)
        dist = policy.get_distribution({k: v[part] for k, v in train_obs.items()}).distribution
        if args.center:  # no input-blind shift: logits minus their batch mean
            shift = dist.logits.mean(0, keepdim=True)
            running = shift.detach() if running is None else 0.9 * running + 0.1 * shift.detach()
            dist = th.distributions.Categorical(logits=dist.logits - shift)
        y = train_y[part]
        if args.loss == "ce":
            loss = th.nn.functional.cross_entropy(dist.logits, y)
        elif args.loss == "pg":
            a = th.multinomial(dist.probs.detach(), 1, generator=generator).squeeze(1)
            r = (a == y).float() * weight[y]
            loss = -((r - r.mean()) / (r.std() + 1e-8) * dist.log_prob(a)).mean()
        else:
            loss = -(dist.probs.gather(1, y[:, None]).squeeze(1) * weight[y]).mean()
        optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % 32 == 0:
            policy.set_training_mode(False)
            with th.no_grad():
                logits = policy.get_distribution(val_obs).distribution.logits
                probs = th.softmax(logits - (running if args.center else 0), dim=1)
            row = {"loss": args.loss, "optimizer": args.optimizer, "lr": args.lr,
                   "eps": args.eps, "momentum": args.momentum, "balanced": args.balanced,
                   "center": args.center,
                   "seed": args.seed, "step": step + 1, "p0_mean": round(float(probs[:, 0].mean()), 3),
                   "p0_spread": round(float(probs[:, 0].std()), 3),
                   "accuracy": round(float((probs.argmax(1) == val_y).float().mean()), 3)}  # fmt: skip
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def curve(args: argparse.Namespace) -> dict[str, Any]:
    """``agents.train`` with the shipped YAML + ``--train-args``; its validation curve."""
    from agents.train import main as train

    with tempfile.TemporaryDirectory(prefix="lmgym-curve-") as tmp:
        argv = [args.env, "--algo", args.algo, "--backbone", args.backbone, "--seed", str(args.seed),
                "--total-timesteps", str(args.steps), "--eval-freq", str(args.eval_every),
                "--eval-max-examples", str(args.eval), "--threads", "1", "--log-dir", tmp,
                "--run-name", "run", "--verbose", "0", "--no-progress-bar", "--device", "cpu",
                "--pretrain-steps", "0", *shlex.split(args.train_args)]  # fmt: skip
        started = time.perf_counter()
        if train(argv) != 0:
            raise RuntimeError(f"agents.train failed: {' '.join(argv)}")
        row = curve_record(Path(tmp) / "run")
    row["train_s"] = round(time.perf_counter() - started, 1)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    return row


def curve_record(run_dir: Path) -> dict[str, Any]:
    """One JSON line for an ``agents.train`` run folder: its flags, what they resolved to, and
    the validation curve ``[[env steps, score], ...]`` of the env's primary metric. Points
    before the last come from inside a rollout (SB3's callback timing: the policy then has
    the updates of the rollouts before it); the last is the final policy."""
    args = json.loads((run_dir / "args.json").read_text())
    resolved = args["resolved"]
    rows = list(csv.DictReader((run_dir / "progress.csv").open()))
    columns = {key for row in rows for key in row}
    metric = next(
        k for k in ("eval/entity_f1", "eval/accuracy", "eval/f1", "eval/bleu") if k in columns
    )
    scores = [float(row[metric]) for row in rows if row.get(metric)]
    warm = 1 if args.get("warm_start") else 0  # --warm-start: the first point is step 0
    steps = [min((i + 1 - warm) * args["eval_freq"], resolved["total_timesteps"])
             for i in range(len(scores))]  # fmt: skip
    # the evaluation at the last env step ran before that rollout's update and agents.train
    # evaluates again after it: a step keeps its last score, the final policy's
    kept = dict(zip(steps, scores, strict=True))
    steps, scores = list(kept), list(kept.values())
    flags = [f"--hp {x}" for x in args["hp"]] + [f"--env-kwarg {x}" for x in args["env_kwarg"]]
    for key in ("warm_start", "kl_coef", "kl_target", "anchor_coef", "sil_coef"):
        if args.get(key):
            flags.append(f"--{key.replace('_', '-')} {args[key]}")
    keep = ("learning_rate", "ent_coef", "n_steps", "batch_size", "n_epochs", "target_kl")
    settings = {
        k: _number(resolved["algo_kwargs"][k]) for k in keep if k in resolved["algo_kwargs"]
    }
    return {
        "env": args["env_id"], "algo": args["algo"], "backbone": resolved["policy_kwargs"]["backbone"],
        "seed": args["seed"], "steps": resolved["total_timesteps"], "eval_examples": args["eval_max_examples"],
        "train_args": flags, "warm_start": args.get("warm_start") or 0,
        "resolved": {**settings, "reward_mode": resolved["make_kwargs"].get("reward_mode")},
        "metric": metric.split("/", 1)[1], "curve": [[s, round(v, 4)] for s, v in zip(steps, scores, strict=True)],
        "score": round(scores[-1], 4) if scores else None,
    }  # fmt: skip


def _number(value: Any) -> Any:
    """Settings as floats where numeric (the YAML's ``0`` and a flag's ``0.0`` alike)."""
    return (
        float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    )


def _unresolved_flags(record: dict[str, Any]) -> dict[str, Any]:
    """The settings a record's flags chose that ``resolved`` does not list (KL control, the anchor,
    ``--hp`` setup keys such as ``pretrain_batch_size``), so that they split the table's rows."""
    extra: dict[str, Any] = {}
    for flag in record["train_args"]:
        name, _, value = flag.partition(" ")
        if name in ("--kl-coef", "--kl-target", "--anchor-coef"):
            extra[name[2:].replace("-", "_")] = value
        elif name == "--hp":
            key, _, value = value.partition("=")
            if key not in record["resolved"]:
                extra[key] = value
    return extra


def curves_table(paths: list[str]) -> str:
    """Markdown: final validation score per (env, algo, backbone, env steps, resolved settings,
    warm start), mean ± std over seeds. Settings are what the run resolved to, so records made
    under an older YAML stay comparable."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for path in paths:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            settings = ", ".join(
                f"{k}={_number(v):g}" if isinstance(_number(v), float) else f"{k}={v}"
                for k, v in {**r["resolved"], **_unresolved_flags(r)}.items()
                if v is not None
            )
            key = (r["env"].split("/")[-1], r["algo"], r["backbone"], r["steps"], settings,
                   r["warm_start"], r["metric"])  # fmt: skip
            groups[key].append(r["score"])
    lines = ["| env | algo | backbone | env steps | settings | warm start | metric | validation | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (env, algo, backbone, steps, settings, warm, metric), scores in sorted(groups.items()):
        spread = f" ± {np.std(scores, ddof=1):.3f}" if len(scores) > 1 else ""
        lines.append(f"| {env} | {algo} | {backbone} | {steps:,} | {settings} | {warm or '-'} | "
                     f"{metric} | {np.mean(scores):.3f}{spread} | {len(scores)} |")  # fmt: skip
    return "\n".join(lines)


def table(paths: list[str]) -> str:
    """Markdown: one row per (env, config), validation mean +- std over seeds."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    seen: set[str] = set()
    for path in paths:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            key = json.dumps({k: v for k, v in r.items() if k not in ("score", "train_s",
                              "token_accuracy")}, sort_keys=True)  # fmt: skip
            if "score" not in r or key in seen:  # a rerun of the same seed is deterministic
                continue
            seen.add(key)
            config = ("supervised" if r["supervised"] else "PPO", json.dumps(r["hp"], sort_keys=True),
                      json.dumps(r["policy"], sort_keys=True), json.dumps(r["env_kwargs"], sort_keys=True))  # fmt: skip
            groups[(r["env"], r["steps"], *config)].append(r["score"])
    lines = ["| env | steps | learner | changes to the pre-recipe PPO | validation | seeds |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for (env, steps, learner, hp, policy, env_kwargs), scores in sorted(groups.items()):
        changes = ", ".join(f"{k}={_short(v)}" for part in (hp, policy, env_kwargs)
                            for k, v in json.loads(part).items()
                            if k not in ("text_column", "label_column")) or "none"  # fmt: skip
        spread = f" ± {np.std(scores, ddof=1):.3f}" if len(scores) > 1 else ""
        lines.append(f"| {env.split('/')[-1]} | {steps} | {learner} | {changes} | "
                     f"{np.mean(scores):.3f}{spread} | {len(scores)} |")  # fmt: skip
    return "\n".join(lines)


def _short(value: Any) -> Any:
    """``data_files={split: .../<name>/<split>.tsv}`` shown as the dataset's name (the
    folder after ``derived/`` for :func:`benchmarks.datasets.prepare` builds)."""
    if isinstance(value, dict) and value and all(isinstance(v, str) for v in value.values()):
        folders = {_dataset_name(Path(v)) for v in value.values()}
        return folders.pop() if len(folders) == 1 else value
    return value


def _dataset_name(path: Path) -> str:
    parts = path.parts
    return parts[parts.index("derived") + 1] if "derived" in parts[:-1] else path.parent.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks.ablation", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "diagnose"):
        p = sub.add_parser(name)
        p.add_argument("env")
        p.add_argument("--steps", type=int, default=2048)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--hp", default="{}", help="JSON: PPO constructor overrides (+ minibatch)")
        p.add_argument("--policy", default="{}", help="JSON: policy kwargs")
        p.add_argument("--env-kwargs", default="{}", help="JSON: gym.make kwargs")
        p.add_argument("--eval", type=int, default=400, help="validation examples scored")
        p.add_argument("--supervised", action="store_true")
        p.add_argument("--out", default=None, help="append the JSON line here")
    b = sub.add_parser("bandit")
    b.add_argument("env")
    b.add_argument("--loss", choices=("ce", "pg", "exact"), default="pg")
    b.add_argument("--steps", type=int, default=128, help="updates")
    b.add_argument("--batch", type=int, default=16, help="training examples per update")
    b.add_argument("--lr", type=float, default=1e-3)
    b.add_argument("--eps", type=float, default=1e-5, help="Adam eps (SB3's policies: 1e-5)")
    b.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    b.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    b.add_argument("--balanced", action="store_true", help="rewards weighted 1 / (K p(label))")
    b.add_argument("--center", action="store_true", help="train on logits minus their batch mean")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--policy", default='{"critic_encoder_grad": false}', help="JSON: policy kwargs")
    b.add_argument("--env-kwargs", default='{"tokenizer": "minilm"}', help="JSON: gym.make kwargs")
    b.add_argument("--eval", type=int, default=400, help="validation examples scored")
    c = sub.add_parser("curve")
    c.add_argument("env")
    c.add_argument("--algo", default="ppo")
    c.add_argument("--backbone", default="tiny")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--steps", type=int, default=4096)
    c.add_argument("--eval-every", type=int, default=1024, help="env steps between evaluations")
    c.add_argument("--eval", type=int, default=500, help="validation examples scored")
    c.add_argument("--train-args", default="", help="agents.train flags, e.g. '--hp ent_coef=0.03'")
    c.add_argument("--out", default=None, help="append the JSON line here")
    for name in ("table", "curves"):
        sub.add_parser(name).add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.command in ("table", "curves"):
        print((table if args.command == "table" else curves_table)(args.paths))
        return 0
    import torch as th

    th.set_num_threads(1)
    {"run": run, "diagnose": diagnose, "bandit": bandit, "curve": curve}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
