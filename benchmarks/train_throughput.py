"""PPO training throughput: env-steps/s of rollout collection and of the update, per config.

    python -m benchmarks.train_throughput                       # MiniLM, SST-2, CPU, n_envs 8
    python -m benchmarks.train_throughput --device cuda --n-envs 64 256 1024 --dtype none bf16

For every ``n_envs`` x ``dtype`` it builds SB3 ``PPO`` with ``agents.TransformerPolicy``
on :func:`lmgym.sb3.make_vec_env` (the hyperparameters of ``agents/hyperparams/ppo.yml``
for the env and backbone; ``n_steps`` rollout steps per env), runs one warm-up iteration,
then times ``--iterations`` iterations with callbacks at rollout start/end, so collection
(env + policy forward) and update (``n_epochs`` passes of forward + backward) are
measured apart in the same run. Env-steps/s = steps collected / seconds. Results go to
``benchmarks/results/train_throughput_<device>.json`` (atomically; ``benchmarks.report``
adds them to ``LEADERBOARD.md``), with the device name,
CPU model, library versions and commit.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def _timer_callback() -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class Timer(BaseCallback):
        """Wall time of each rollout (collection) and of what follows it (the update)."""

        def __init__(self, sync: Any) -> None:
            super().__init__(0)
            self.sync, self.marks = sync, []

        def _on_rollout_start(self) -> None:
            self.sync()
            self.marks.append(("start", time.perf_counter()))

        def _on_rollout_end(self) -> None:
            self.sync()
            self.marks.append(("end", time.perf_counter()))

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
) -> dict[str, Any]:
    """Rollout and update env-steps/s of PPO for one configuration."""
    import torch as th
    from stable_baselines3 import PPO

    from agents import TransformerPolicy, env_policy_kwargs
    from agents.train import SETUP_KEYS, load_hyperparams
    from lmgym.sb3 import make_vec_env

    hp = load_hyperparams("ppo", env_id, backbone)
    kwargs = {**(hp.get("env_kwargs") or {}), **(make_kwargs or {})}
    algo_kwargs = {k: v for k, v in hp.items() if k not in SETUP_KEYS}
    if n_steps is not None:
        algo_kwargs["n_steps"] = n_steps
    per_iteration = n_envs * algo_kwargs["n_steps"]
    # one minibatch size for every n_envs would change the update's cost per sample: keep
    # the YAML's number of minibatches per epoch instead
    minibatches = max(1, (hp.get("n_envs", 8) * hp["n_steps"]) // hp["batch_size"])
    algo_kwargs["batch_size"] = max(1, per_iteration // minibatches)
    algo_kwargs.pop("target_kl", None)  # early stopping would make the update's work vary

    venv = make_vec_env(env_id, n_envs=n_envs, seed=0, **kwargs)
    pk = {"backbone": backbone, **env_policy_kwargs(venv), **(policy_kwargs or {})}
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
    started = time.perf_counter()
    model.learn(per_iteration * iterations, callback=timer, reset_num_timesteps=False)
    sync()
    total = time.perf_counter() - started
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
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks.train_throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--env", default="lmgym/SST2-v0")
    parser.add_argument("--backbone", default="minilm")
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
    for n_envs in args.n_envs:
        for dtype in args.dtype:
            row = measure(args.env, args.backbone, n_envs, None if dtype == "none" else dtype,
                          args.device, args.iterations, args.n_steps, make_kwargs)  # fmt: skip
            rows.append(row)
            print(
                f"{row['env']} {row['backbone']} n_envs={n_envs:<5} {row['dtype']:<5} "
                f"rollout {row['rollout_steps_per_s']:9.1f}  update {row['update_steps_per_s']:9.1f}  "
                f"overall {row['steps_per_s']:9.1f} env-steps/s",
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
