"""Throughput benchmark: env-steps/s of every registered lmgym env, all execution modes.

``lmgym bench`` (or ``python benchmarks/throughput.py``) measures, for each registered id:

* ``single``: one env from ``gym.make`` (reset when an episode ends);
* ``sync``: :class:`gymnasium.vector.SyncVectorEnv` of ``--sync-envs`` single envs;
* ``native``: the native vector env (``gym.make_vec``, default ``copy=True``) at each
  ``--num-envs``, plus ``copy=False`` at the largest N that is at most 1024;
* ``sb3``: the :mod:`lmgym.sb3` adapter (when Stable-Baselines3 is installed).

Every step uses random *valid* actions: the env's ``action_masks()`` is called each step
and an action drawn uniformly among the valid ones (rejection sampling from a precomputed
pool of candidates, see :class:`MaskedActionSampler`). The time of the mask call, of the
action draw and of ``step`` are measured separately: ``steps/s`` counts ``step`` only,
``loop/s`` all three. Each measurement lasts ``--seconds`` and at least until ``N``
episodes have ended, so expensive episode ends (sentence BLEU, SQuAD F1) are included.
Results are printed as a table; ``--output PATH`` also writes them atomically as JSON,
next to their provenance from :mod:`lmgym.provenance` (CPU model, load, library
versions, git commit).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from lmgym.data.errors import LmgymDataError
from lmgym.data.paths import DATA_DIR_ENV, SAMPLE, SAMPLES_DIR
from lmgym.provenance import load_average, machine_info

#: Extra make kwargs of ids that need data of their own (they have no catalogued dataset).
_OWN_DATA = {
    "lmgym/TextClassification-v0": lambda root: {
        "data_files": str(root / "sst2" / "train.tsv"),
        "text_column": "sentence",
        "label_column": "label",
    },
}
DEFAULT_NUM_ENVS = (64, 1024, 4096)


def sample_kwargs(env_id: str) -> dict[str, Any]:
    """Make kwargs that run ``env_id`` on the bundled sample data."""
    return data_kwargs(env_id, SAMPLE)


def data_kwargs(env_id: str, data_dir: str) -> dict[str, Any]:
    """Make kwargs that run ``env_id`` on ``data_dir`` (``"sample"`` or a data folder)."""
    own = _OWN_DATA.get(env_id)
    if own is not None:
        return own(SAMPLES_DIR if data_dir == SAMPLE else Path(data_dir))
    return {"data_dir": data_dir}


class MaskedActionSampler:
    """Uniformly random valid actions for ``bool[n, n_actions]`` masks, cheaply.

    Each row tries ``k`` candidates from a precomputed pool of uniform actions and keeps
    the first valid one (uniform over the valid actions); rows where none is valid fall
    back to ``argmax(u * mask)`` over all actions. The pool holds flat indices into the
    mask array, so the check is one ``take``.
    """

    def __init__(self, n: int, n_actions: int, seed: int = 0, k: int = 8, pool: int = 64) -> None:
        self.n, self.n_actions, self.k = n, n_actions, k
        self.rng = np.random.default_rng(seed)
        dtype = np.int32 if n * n_actions < 2**31 else np.int64
        self.candidates: np.ndarray = self.rng.integers(
            0, n_actions, size=(pool, n, k), dtype=dtype
        )
        self.flat: np.ndarray = (
            self.candidates + (np.arange(n, dtype=dtype) * n_actions)[None, :, None]
        )
        self.rows = np.arange(n)
        self.i = 0

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        p = self.i = (self.i + 1) % len(self.candidates)
        valid = np.take(masks.reshape(-1), self.flat[p])
        first = valid.argmax(axis=1)
        actions = self.candidates[p][self.rows, first].astype(np.int64)
        missing = ~valid[self.rows, first]
        if missing.any():
            rows = np.flatnonzero(missing)
            u = self.rng.random((len(rows), self.n_actions), dtype=np.float32)
            actions[rows] = (u * masks[rows]).argmax(axis=1)
        return actions


# -- measurements ---------------------------------------------------------------------------------
def _timed_loop(
    n: int,
    masks: Callable[[], np.ndarray],
    step: Callable[[np.ndarray], int],
    sampler: MaskedActionSampler,
    seconds: float,
    min_steps: int,
) -> dict[str, Any]:
    """Run ``masks -> sampler -> step`` (``step`` returns how many episodes ended) for at
    least ``seconds`` and ``min_steps`` calls, and until ``n`` episodes have ended, so that
    tasks whose episodes all end together (translation with random actions runs every
    slot to the length limit) have their expensive episode ends inside the measurement
    (capped at ``20 * seconds``). Rates are over the whole span; ``thirds_steps_per_s``
    (the span cut in three) shows how much other processes on the machine disturbed it."""
    for _ in range(3):  # warm-up
        step(sampler(masks()))
    clock = time.perf_counter
    t_mask = t_act = 0.0
    step_times: list[float] = []
    episodes = 0
    start = clock()
    while True:
        t0 = clock()
        m = masks()
        t1 = clock()
        a = sampler(m)
        t2 = clock()
        episodes += step(a)
        t3 = clock()
        t_mask += t1 - t0
        t_act += t2 - t1
        step_times.append(t3 - t2)
        elapsed = t3 - start
        if (
            len(step_times) >= min_steps
            and elapsed >= seconds
            and (episodes >= n or elapsed >= 20 * seconds)
        ):
            break
    steps = len(step_times)
    t_step = float(np.sum(step_times))
    thirds = [
        n * len(part) / float(np.sum(part))
        for part in np.array_split(np.array(step_times), 3)
        if len(part)
    ]
    return {
        "num_envs": n,
        "iterations": steps,
        "episodes": episodes,
        "steps_per_s": n * steps / t_step,
        "loop_steps_per_s": n * steps / (t_mask + t_act + t_step),
        "step_us": 1e6 * t_step / steps,
        "mask_us": 1e6 * t_mask / steps,
        "action_us": 1e6 * t_act / steps,
        "thirds_steps_per_s": thirds,
    }


def _vector_step(env: Any) -> Callable[[np.ndarray], int]:
    def step(actions: np.ndarray) -> int:
        _, _, terminated, truncated, _ = env.step(actions)
        return int(np.count_nonzero(terminated | truncated))

    return step


def bench_single(env_id: str, kwargs: dict[str, Any], seconds: float) -> dict[str, Any]:
    env: Any = gym.make(env_id, **kwargs)
    env.reset(seed=0)
    sampler = MaskedActionSampler(1, env.action_space.n)
    unwrapped = env.unwrapped

    def step(action: np.ndarray) -> int:
        _, _, terminated, truncated, _ = env.step(int(action[0]))
        if terminated or truncated:
            env.reset()
            return 1
        return 0

    result = _timed_loop(1, lambda: unwrapped.action_masks()[None], step, sampler, seconds, 20)
    env.close()
    return result


def bench_sync(env_id: str, kwargs: dict[str, Any], n: int, seconds: float) -> dict[str, Any]:
    env: Any = gym.make_vec(env_id, num_envs=n, vectorization_mode="sync", **kwargs)
    env.reset(seed=0)
    sampler = MaskedActionSampler(n, env.single_action_space.n)
    result = _timed_loop(
        n, lambda: np.stack(env.call("action_masks")), _vector_step(env), sampler, seconds, 3
    )
    env.close()
    return result


def bench_native(
    env_id: str, kwargs: dict[str, Any], n: int, seconds: float, copy: bool = True
) -> dict[str, Any]:
    env: Any = gym.make_vec(
        env_id, num_envs=n, vectorization_mode="vector_entry_point", copy=copy, **kwargs
    )
    env.reset(seed=0)
    sampler = MaskedActionSampler(n, env.single_action_space.n)
    result = _timed_loop(n, env.unwrapped.action_masks, _vector_step(env), sampler, seconds, 10)
    env.close()
    return {**result, "copy": copy}


def bench_sb3(env_id: str, kwargs: dict[str, Any], n: int, seconds: float) -> dict[str, Any]:
    from sb3_contrib.common.maskable.utils import get_action_masks

    import lmgym.sb3

    env: Any = lmgym.sb3.make_vec_env(env_id, n_envs=n, seed=0, **kwargs)
    env.reset()
    sampler = MaskedActionSampler(n, env.action_space.n)

    def step(actions: np.ndarray) -> int:
        return int(np.count_nonzero(env.step(actions)[2]))

    result = _timed_loop(n, lambda: get_action_masks(env), step, sampler, seconds, 10)
    env.close()
    return result


def bench_env(
    env_id: str, kwargs: dict[str, Any], args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, Any]:
    """Every mode for one env id; a mode that fails is recorded with its error."""
    row: dict[str, Any] = {
        "env_id": env_id,
        "data": kwargs.get("data_dir", kwargs.get("data_files")),
    }
    try:
        env: Any = gym.make_vec(
            env_id, num_envs=1, vectorization_mode="vector_entry_point", **kwargs
        )
    except LmgymDataError as exc:
        if kwargs == sample_kwargs(env_id):
            row["error"] = f"{type(exc).__name__}: {exc}"
            return row
        # No real data for this one here: measure it on the bundled sample instead (and say so).
        log(f"{env_id}: {type(exc).__name__}; falling back to the sample data")
        kwargs = sample_kwargs(env_id)
        row["data"] = f"{SAMPLE} (real data not found)"
        return {**bench_env(env_id, kwargs, args, log), "data": row["data"]}
    except Exception as exc:  # noqa: BLE001 - a benchmark reports and moves on
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    core = env.unwrapped.core
    row.update(family=core.family, n_actions=core.n_actions, n_examples=core.n_examples)
    env.close()
    native_ns = list(args.num_envs)
    plan: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if not args.skip_single:
        plan.append(("single", lambda: bench_single(env_id, kwargs, args.seconds)))
    if args.sync_envs > 0:
        plan.append(("sync", lambda: bench_sync(env_id, kwargs, args.sync_envs, args.seconds)))
    for n in native_ns:
        plan.append(
            (f"native_{n}", functools.partial(bench_native, env_id, kwargs, n, args.seconds))
        )
    small = [n for n in native_ns if n <= 1024]
    if small:
        plan.append(
            (
                f"native_{max(small)}_nocopy",
                lambda: bench_native(env_id, kwargs, max(small), args.seconds, copy=False),
            )
        )
    if args.sb3_envs > 0 and _has_sb3():
        plan.append(("sb3", lambda: bench_sb3(env_id, kwargs, args.sb3_envs, args.seconds)))
    for name, run in plan:
        log(f"{env_id}: {name}")
        try:
            row[name] = run()
        except Exception as exc:  # noqa: BLE001
            row[name] = {"error": f"{type(exc).__name__}: {exc}"}
    sync = row.get("sync", {}).get("steps_per_s")
    same = row.get(f"native_{args.sync_envs}", {}).get("steps_per_s")
    if sync and same:
        row["native_over_sync"] = same / sync
    return row


def _has_sb3() -> bool:
    try:
        import sb3_contrib  # noqa: F401
        import stable_baselines3  # noqa: F401
    except ImportError:
        return False
    return True


# -- output ------------------------------------------------------------------------------------
def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically (non-JSON values as ``str``).

    :param path: destination; its folder is created if needed.
    :param payload: the document.
    """
    from lmgym.data.cache import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


# -- report ----------------------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.0f}"


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    small = [n for n in args.num_envs if n <= 1024]
    loop_n = max(small) if small else args.num_envs[0]
    table = Table(
        title="lmgym env-steps/s (step only; loop = step + action_masks + random valid action)"
    )
    table.add_column("env")
    table.add_column("single", justify="right")
    table.add_column(f"sync N={args.sync_envs}", justify="right")
    for n in args.num_envs:
        table.add_column(f"native N={n}", justify="right")
    if small:
        table.add_column(f"N={loop_n} copy=False", justify="right")
    table.add_column(f"native/sync N={args.sync_envs}", justify="right")
    table.add_column(f"loop N={loop_n}", justify="right")
    table.add_column(f"sb3 N={args.sb3_envs}", justify="right")

    def get(row: dict[str, Any], key: str, field: str = "steps_per_s") -> float | None:
        return row.get(key, {}).get(field) if isinstance(row.get(key), dict) else None

    for row in rows:
        if "error" in row:
            table.add_row(row["env_id"], "[red]skipped[/red]")
            continue
        name = row["env_id"] + (
            " (sample data)"
            if str(row.get("data", "")).startswith(SAMPLE) and args.data_dir != SAMPLE
            else ""
        )
        cells = [name, _fmt(get(row, "single")), _fmt(get(row, "sync"))]
        cells += [_fmt(get(row, f"native_{n}")) for n in args.num_envs]
        if small:
            cells.append(_fmt(get(row, f"native_{loop_n}_nocopy")))
        ratio = row.get("native_over_sync")
        cells.append(f"{ratio:.0f}x" if ratio else "-")
        cells.append(_fmt(get(row, f"native_{loop_n}", "loop_steps_per_s")))
        cells.append(_fmt(get(row, "sb3")))
        table.add_row(*cells)
    console = Console(width=None if sys.stdout.isatty() else 220)
    console.print(table)
    errors = [(r["env_id"], "make", r["error"]) for r in rows if "error" in r]
    errors += [
        (r["env_id"], k, v["error"])
        for r in rows
        for k, v in r.items()
        if isinstance(v, dict) and "error" in v
    ]
    for env_id, mode, error in errors:
        console.print(f"[red]{env_id} {mode}: {error}[/red]")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lmgym bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--envs", nargs="*", default=None, help="env ids (default: every registered lmgym id)"
    )
    parser.add_argument(
        "--num-envs",
        type=int,
        nargs="+",
        default=None,
        help=f"native vector sizes (default {' '.join(map(str, DEFAULT_NUM_ENVS))}; --quick: 64 1024)",
    )
    parser.add_argument(
        "--sync-envs",
        type=int,
        default=1024,
        help="SyncVectorEnv size, also the N of the native/sync ratio (0 = skip)",
    )
    parser.add_argument(
        "--sb3-envs",
        type=int,
        default=1024,
        help="SB3 adapter size (0 = skip; needs stable-baselines3)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="time per measurement (default 1.0; --quick: 0.25)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help=f"data folder or 'sample' (default ${DATA_DIR_ENV} if set, else sample; --quick: sample)",
    )
    parser.add_argument(
        "--output",
        "--json",
        dest="output",
        type=Path,
        default=None,
        help="also write the results (with their provenance) to this JSON file (default: print only)",
    )
    parser.add_argument("--skip-single", action="store_true", help="do not measure the single env")
    parser.add_argument("--quick", action="store_true", help="short run on the sample data")
    args = parser.parse_args(argv)
    if args.num_envs is None:
        args.num_envs = [64, 1024] if args.quick else list(DEFAULT_NUM_ENVS)
    if args.seconds is None:
        args.seconds = 0.25 if args.quick else 1.0
    if args.data_dir is None:
        env_dir = os.environ.get(DATA_DIR_ENV)
        args.data_dir = SAMPLE if args.quick or not env_dir else env_dir
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns a process exit code (0, or 1 if an env could not be measured)."""
    import lmgym  # noqa: F401  (registers the envs)

    args = parse_args(argv)
    env_ids = args.envs or [
        s.id
        for s in gym.registry.values()
        if s.namespace == "lmgym" and s.vector_entry_point is not None
    ]
    log = (
        (lambda msg: print(msg, file=sys.stderr, flush=True))
        if sys.stderr.isatty()
        else (lambda msg: None)
    )
    meta = machine_info()  # provenance, kept apart from the measurements ("results")
    rows = []
    for env_id in env_ids:
        rows.append(bench_env(env_id, data_kwargs(env_id, args.data_dir), args, log))
    meta["load_average_after"] = load_average()
    payload = {
        "meta": meta,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": rows,
    }
    if args.output is not None:
        write_json_atomic(args.output, payload)
    print_table(rows, args)
    written = args.output if args.output is not None else "not written (pass --output PATH)"
    print(
        f"{meta['cpu']} ({meta['cpu_count']} cores), load {meta['load_average']}, commit {meta['git_commit']}; data {args.data_dir}; JSON: {written}"
    )
    return 1 if any("error" in r for r in rows) else 0


__all__ = ["MaskedActionSampler", "data_kwargs", "main", "sample_kwargs"]


if __name__ == "__main__":  # python -m lmgym.bench (same as lmgym bench)
    sys.exit(main())
