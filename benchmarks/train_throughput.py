"""PPO training throughput: env-steps/s of rollout collection and of the update, per config,
and what PPO pays per trained token next to supervised fine-tuning of the same backbone.

    python -m benchmarks.train_throughput                       # MiniLM, SST-2, CPU, n_envs 8
    python -m benchmarks.train_throughput --env lmgym/NER-v0 --backbone tiny minilm \
        --variant exact-off default episodes
    python -m benchmarks.train_throughput --device cuda --n-envs 64 256 1024 --dtype none bf16

For every ``n_envs`` x ``dtype`` it builds SB3 ``PPO`` with ``agents.TransformerPolicy``
on :func:`lmgym.sb3.make_vec_env` (the hyperparameters of ``agents/hyperparams/ppo.yml``
for the env and backbone; ``n_steps`` rollout steps per env), runs one warm-up iteration,
then times ``--iterations`` iterations with callbacks at rollout start/end, so collection
(env + policy forward) and update (``n_epochs`` passes of forward + backward) are
measured apart in the same run. Env-steps/s = steps collected / seconds.

Per trained token, on the same sentences: the *trained tokens* are the unpadded tokens of
the episodes in the timed rollouts (a sentence counts once however many words, i.e.
steps, it has). PPO's *encoder tokens* are every position the encoder ran over (after
dedup, cache and padding trim). Both ratios are divided by ``n_epochs + 1`` (one rollout
pass, then ``n_epochs`` update passes), so 1.0 means "each sentence encoded once per
pass", and the wall-time ratio is against one supervised forward + backward + optimizer
step of token classification (the same encoder, a linear tag head, cross-entropy; the
distinct sentences of the timed rollouts in batches of ``--supervised-batch``).
``--variant`` picks the encoder and sampling setup: ``default`` (dedup + cache, SB3's
random minibatches), ``exact-off`` (dedup and cache off: every step re-encodes its
sentence) and ``episodes`` (default + episode-grouped minibatches). Results go to
``benchmarks/results/train_throughput_<device>.json`` (atomically; ``benchmarks.report``
adds them to ``LEADERBOARD.md``), with the device name,
CPU model, library versions and commit.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
#: encoder / sampling setups compared (see the module doc)
VARIANTS = ("default", "exact-off", "episodes")


def _timer_callback() -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class Timer(BaseCallback):
        """Wall time of each rollout (collection) and of what follows it (the update), and
        the ``(input_ids, attention_mask)`` of every episode the rollouts hold (once each)."""

        def __init__(self, sync: Any) -> None:
            super().__init__(0)
            self.sync, self.marks, self.sentences = sync, [], []

        def _on_rollout_start(self) -> None:
            self.sync()
            self.marks.append(("start", time.perf_counter()))

        def _on_rollout_end(self) -> None:
            self.sync()
            self.marks.append(("end", time.perf_counter()))
            buffer = self.model.rollout_buffer
            firsts = buffer.episode_starts.astype(bool)
            firsts[0] = True  # an episode carried over from the last rollout is trained here too
            ids, mask = buffer.observations["input_ids"], buffer.observations["attention_mask"]
            for step, env in zip(*np.nonzero(firsts), strict=True):
                self.sentences.append((ids[step, env].astype(np.int64), mask[step, env] > 0))

        def _on_step(self) -> bool:
            return True

    return Timer


def measure(
    env_id: str,
    backbone: str,
    n_envs: int,
    dtype: str | None,
    device: str,
    iterations: int,
    n_steps: int | None = None,
    make_kwargs: dict[str, Any] | None = None,
    policy_kwargs: dict[str, Any] | None = None,
    variant: str = "default",
    supervised_batch: int = 32,
) -> dict[str, Any]:
    """Rollout and update env-steps/s of PPO for one configuration, plus per-token costs."""
    import torch as th
    from stable_baselines3 import PPO

    from agents import TransformerPolicy, env_policy_kwargs
    from agents.buffers import rollout_buffer_class
    from agents.train import SETUP_KEYS, load_hyperparams
    from lmgym.sb3 import make_vec_env

    hp = load_hyperparams("ppo", env_id, backbone)
    kwargs = {**(hp.get("env_kwargs") or {}), **(make_kwargs or {})}
    algo_kwargs = {k: v for k, v in hp.items() if k not in SETUP_KEYS}
    if variant not in VARIANTS:
        raise SystemExit(f"--variant {variant!r}: choose from {', '.join(VARIANTS)}")
    minibatch = "episodes" if variant == "episodes" else hp.get("minibatch", "random")
    buffer_class = rollout_buffer_class(minibatch, "ppo")
    if buffer_class is not None:
        algo_kwargs["rollout_buffer_class"] = buffer_class
    if n_steps is not None:
        algo_kwargs["n_steps"] = n_steps
    per_iteration = n_envs * algo_kwargs["n_steps"]
    # one minibatch size for every n_envs would change the update's cost per sample: keep
    # the YAML's number of minibatches per epoch instead
    minibatches = max(1, (hp.get("n_envs", 8) * hp["n_steps"]) // hp["batch_size"])
    algo_kwargs["batch_size"] = max(1, per_iteration // minibatches)
    algo_kwargs.pop("target_kl", None)  # early stopping would make the update's work vary

    venv = make_vec_env(env_id, n_envs=n_envs, seed=0, **kwargs)
    pk = {"backbone": backbone, **env_policy_kwargs(venv), **(hp.get("policy_kwargs") or {}),
          **(policy_kwargs or {})}  # fmt: skip
    if variant == "exact-off":
        pk["features_extractor_kwargs"] = {"dedup": False, "cache": False}
    if dtype:
        pk["dtype"] = dtype
    model = PPO(TransformerPolicy, venv, device=device, seed=0, verbose=0, policy_kwargs=pk,
                **algo_kwargs)  # fmt: skip

    def sync() -> None:
        if model.device.type == "cuda":
            th.cuda.synchronize()

    timer = _timer_callback()(sync)
    model.learn(per_iteration, callback=timer)  # warm-up: allocator, kernels, caches
    timer.marks.clear()
    timer.sentences.clear()
    extractor = model.policy.features_extractor
    tokens_before = extractor.encoder_tokens
    started = time.perf_counter()
    model.learn(per_iteration * iterations, callback=timer, reset_num_timesteps=False)
    sync()
    total = time.perf_counter() - started
    encoder_tokens = extractor.encoder_tokens - tokens_before
    trained_tokens = sum(int(row[1].sum()) for row in timer.sentences)
    passes = algo_kwargs.get("n_epochs", 10) + 1
    supervised = supervised_step_time(
        extractor.encoder, timer.sentences, int(venv.action_space.n), supervised_batch, model.device
    )
    times = [t for _, t in timer.marks] + [started + total]
    rollout = sum(times[i + 1] - times[i] for i in range(0, 2 * iterations, 2))
    update = total - rollout
    steps = per_iteration * iterations
    venv.close()
    return {
        "env": env_id,
        "backbone": backbone,
        "n_envs": n_envs,
        "dtype": dtype or "fp32",
        "device": device,
        "n_steps": algo_kwargs["n_steps"],
        "batch_size": algo_kwargs["batch_size"],
        "n_epochs": algo_kwargs.get("n_epochs", 10),
        "iterations": iterations,
        "env_steps": steps,
        "rollout_steps_per_s": steps / rollout,
        "update_steps_per_s": steps / update,
        "steps_per_s": steps / total,
        "seconds": total,
        "variant": variant,
        "minibatch": minibatch,
        "trained_tokens": trained_tokens,
        "encoder_tokens": encoder_tokens,
        "encoder_tokens_per_trained_token": encoder_tokens / passes / max(trained_tokens, 1),
        "wall_per_trained_token_s": total / passes / max(trained_tokens, 1),
        "supervised_per_token_s": supervised,
        "wall_vs_supervised": total / passes / max(trained_tokens, 1) / supervised,
    }


def supervised_step_time(
    encoder: Any, sentences: list[Any], n_labels: int, batch_size: int, device: Any
) -> float:
    """Seconds per token of supervised token classification over ``sentences``.

    A copy of ``encoder`` with a linear head over every token, cross-entropy against
    random labels, backward and a fused Adam step, on ``(input_ids, attention_mask)``
    pairs in batches of ``batch_size`` trimmed to each batch's longest sentence (as the
    policy's extractor trims). Timed after one warm-up batch.
    """
    import copy

    import torch as th

    from agents.policies import make_optimizer

    model = copy.deepcopy(encoder).train()
    head = th.nn.Linear(int(model.config.hidden_size), n_labels).to(device)
    params = [*model.parameters(), *head.parameters()]
    optimizer = make_optimizer(th.optim.Adam, params, 1e-5, {"eps": 1e-5})
    ids = th.as_tensor(np.stack([row[0] for row in sentences]), device=device).long()
    mask = th.as_tensor(np.stack([row[1] for row in sentences]), device=device).long()
    labels = th.randint(
        0, n_labels, ids.shape, device=device, generator=th.Generator(device).manual_seed(0)
    )

    def step(rows: slice) -> int:
        m = mask[rows]
        length = int(m.sum(1).max())
        hidden = model(input_ids=ids[rows, :length], attention_mask=m[:, :length]).last_hidden_state
        logits = head(hidden)[m[:, :length].bool()]
        loss = th.nn.functional.cross_entropy(logits, labels[rows, :length][m[:, :length].bool()])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return int(m.sum())

    step(slice(0, batch_size))
    started, tokens = time.perf_counter(), 0
    for start in range(0, len(ids), batch_size):
        tokens += step(slice(start, start + batch_size))
    if device.type == "cuda":
        th.cuda.synchronize()
    return (time.perf_counter() - started) / max(tokens, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks.train_throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--env", nargs="+", default=["lmgym/SST2-v0"])
    parser.add_argument("--backbone", nargs="+", default=["minilm"])
    parser.add_argument("--variant", nargs="+", default=["default"], help=", ".join(VARIANTS))
    parser.add_argument(
        "--supervised-batch", type=int, default=32, help="sentences per supervised batch"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n-envs", type=int, nargs="+", default=[8])
    parser.add_argument("--dtype", nargs="+", default=["none"], help="none | bf16 | fp16")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--n-steps", type=int, default=None, help="rollout steps per env")
    parser.add_argument("--data-dir", default=None, help="passed to gym.make (or 'sample')")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default results/train_throughput_<device>.json)",
    )
    args = parser.parse_args(argv)

    import torch as th

    from benchmarks.records import cpu_model, device_name, git_commit, versions
    from lmgym.bench import write_json_atomic

    if args.threads:
        th.set_num_threads(args.threads)
    make_kwargs = {"data_dir": args.data_dir} if args.data_dir else {}
    rows = []
    grid = [(e, b, v, n, d) for e in args.env for b in args.backbone for v in args.variant
            for n in args.n_envs for d in args.dtype]  # fmt: skip
    for env_id, backbone, variant, n_envs, dtype in grid:
        row = measure(env_id, backbone, n_envs, None if dtype == "none" else dtype, args.device,
                      args.iterations, args.n_steps, make_kwargs, variant=variant,
                      supervised_batch=args.supervised_batch)  # fmt: skip
        rows.append(row)
        print(
            f"{row['env']} {row['backbone']} {variant:<9} n_envs={n_envs:<4} {row['dtype']:<4} "
            f"rollout {row['rollout_steps_per_s']:8.1f}  update {row['update_steps_per_s']:7.1f}  "
            f"overall {row['steps_per_s']:7.1f} env-steps/s  encoder tokens/trained token "
            f"{row['encoder_tokens_per_trained_token']:5.2f}  wall vs supervised "
            f"{row['wall_vs_supervised']:5.2f}x",
            flush=True,
        )
    payload = {
        "device": device_name(args.device),
        "cpu": cpu_model(),
        "torch_threads": th.get_num_threads(),
        "versions": versions(),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }
    out = args.out or HERE / "results" / f"train_throughput_{args.device.split(':')[0]}.json"
    write_json_atomic(out, payload)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
