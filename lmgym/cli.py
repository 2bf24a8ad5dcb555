"""The ``lmgym`` command: ``list``, ``evaluate``, ``play``, ``bench``, ``train``, ``leaderboard``.

Commands that need the RL side (``train``, ``evaluate MODEL``, ``leaderboard``) import
``agents``/``benchmarks`` only when run, so ``lmgym list`` stays torch-free and fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import gymnasium as gym

import lmgym  # noqa: F401  (registers the envs)
from lmgym.data.catalog import DATASETS
from lmgym.data.paths import find_split_file


def lmgym_specs() -> list[gym.envs.registration.EnvSpec]:
    return sorted((s for s in gym.registry.values() if s.namespace == "lmgym"), key=lambda s: s.id)


def _describe(spec: gym.envs.registration.EnvSpec, data_dir: str | None) -> dict[str, Any]:
    module = (
        spec.entry_point.split(":")[0].rsplit(".", 1)[-1]
        if isinstance(spec.entry_point, str)
        else "?"
    )
    dataset = spec.kwargs.get("dataset")
    row: dict[str, Any] = {
        "id": spec.id,
        "task": module,
        "dataset": dataset or "(your data_files=)",
    }
    if dataset in DATASETS:
        info = DATASETS[dataset]
        row["dataset"] = info.title
        placeholders = {
            "src": spec.kwargs.get("source_lang", "en"),
            "tgt": spec.kwargs.get("target_lang", "de"),
        }
        sizes = []
        for split in info.files:
            try:
                found = find_split_file(dataset, split, data_dir, **placeholders) is not None
            except Exception:
                found = False
            size = info.sizes.get(split)
            sizes.append(f"{split} {size:,}" if size else split)
            row.setdefault("found", []).append(found)
        row["splits"] = ", ".join(sizes)
        row["local"] = "yes" if all(row.pop("found")) else "no"
    elif spec.kwargs.get("tasks") is not None or "multitask" in module:
        row["splits"], row["local"] = "those of its tasks", "-"
    else:
        row["splits"], row["local"] = "train, validation, test (files you pass)", "-"
    return row


def cmd_list(args: argparse.Namespace) -> int:
    rows = [_describe(spec, args.data_dir) for spec in lmgym_specs()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="lmgym environments (sizes of the full releases; 'local' = files found)")
    for column in ("id", "task", "dataset", "splits", "local"):
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("id", "task", "dataset", "splits", "local")))
    Console(width=160).print(table)
    return 0


def _make_kwargs(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON when they can be (numbers, booleans)."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--kwarg expects key=value, got {pair!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value
    return kwargs


def cmd_evaluate(args: argparse.Namespace) -> int:
    kwargs = _make_kwargs(args.kwarg)
    if args.data_dir:
        kwargs["data_dir"] = args.data_dir
    policy: Any = args.policy
    env_id = args.env
    if policy not in ("expert", "random", "majority"):
        from agents import load_model  # the RL side, imported only for saved models

        policy, saved = load_model(args.policy, device=args.device)
        env_id = env_id or saved.get("env_id")
        kwargs = {**saved.get("make_kwargs", {}), **kwargs}
    if not env_id:
        raise SystemExit("pass --env ENV_ID (a saved model's env is read from its sidecar JSON)")
    kwargs.pop("split", None)
    result = lmgym.evaluate(
        policy, env_id, split=args.split, max_examples=args.max_examples, **kwargs
    )
    print(json.dumps(result, indent=2))
    return 0


def cmd_play(args: argparse.Namespace) -> int:
    from lmgym.play import play

    kwargs = _make_kwargs(args.kwarg)
    if args.data_dir:
        kwargs["data_dir"] = args.data_dir
    return play(args.env, split=args.split, seed=args.seed, **kwargs)


def _delegate(module: str, hint: str):
    def run(args: argparse.Namespace) -> int:
        import importlib

        try:
            target = importlib.import_module(module)
        except ImportError as exc:
            raise SystemExit(f"`lmgym {args.command}` needs {hint} ({exc})") from exc
        return int(target.main(args.rest) or 0)

    return run


#: Sub-commands handed whole to another module's ``main(argv)``.
DELEGATES = {
    "bench": (
        "lmgym.bench",
        "lmgym's benchmark module",
        "env-steps/s of every task (single, Sync, native vector, SB3, multi-task)",
    ),
    "train": (
        "agents.train",
        "the agents extra: pip install 'lmgym[agents]'",
        "train a policy (see `lmgym train --help`)",
    ),
    "leaderboard": (
        "benchmarks.leaderboard",
        "the benchmarks package (run from a source checkout)",
        "run a leaderboard spec",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmgym", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="every registered env with its task, dataset, splits and sizes")
    p.add_argument(
        "--data-dir", default=None, help="look for local files here instead of $LMGYM_DATA_DIR"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("evaluate", help="score a saved model or a baseline on a whole split")
    p.add_argument(
        "policy", help="path of a model saved by `lmgym train`, or expert|random|majority"
    )
    p.add_argument(
        "--env", default=None, help="env id (read from the model's sidecar when omitted)"
    )
    p.add_argument("--split", default="test")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--max-examples", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--kwarg", action="append", default=[], metavar="KEY=VALUE", help="extra gym.make kwargs"
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("play", help="play an episode by hand in the terminal")
    p.add_argument("env")
    p.add_argument("--split", default="validation")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--kwarg", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_play)

    for name, (module, hint, help_text) in DELEGATES.items():
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_delegate(module, hint))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATES:
        # Everything after the sub-command belongs to the delegate's own parser
        # (argparse's REMAINDER would refuse a leading --option such as `bench --quick`).
        module, hint, _ = DELEGATES[argv[0]]
        return _delegate(module, hint)(argparse.Namespace(command=argv[0], rest=argv[1:]))
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
