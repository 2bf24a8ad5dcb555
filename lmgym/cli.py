"""The ``lmgym`` command: ``list``, ``evaluate``, ``play``, ``bench``, ``train``, ``leaderboard``.

lmgym itself never imports the RL side. Commands that need it are found through entry
points, so any installed package can add one:

* group ``lmgym.commands``: ``name = "module:main [extra]"`` adds ``lmgym name ...``,
  which calls ``main(argv)`` with the rest of the command line (``agents`` registers
  ``train``, ``benchmarks`` registers ``leaderboard``, both in pyproject.toml);
* group ``lmgym.model_loaders``: ``name = "module:load_model [extra]"`` is what
  ``lmgym evaluate MODEL`` calls, ``load_model(path, device=...) -> (policy, sidecar)``
  (``sb3``: :func:`agents.evaluate.load_model`).

An entry point's ``[extra]`` names the lmgym extra it needs; when some of that extra's
requirements are not installed the command stops with the ``pip install`` line that
fixes it. Run from a source checkout, the checkout's own pyproject.toml declares the
entry points (the installed metadata may be older). Nothing is imported until a
command runs, so ``lmgym list`` stays torch-free and fast.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from importlib import metadata
from pathlib import Path
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
        for split in info.splits:
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
        load_model = _model_loader()
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


# -- plug-in commands (entry points) --------------------------------------------------------
COMMANDS_GROUP = "lmgym.commands"
LOADERS_GROUP = "lmgym.model_loaders"
#: The model loader ``lmgym evaluate MODEL`` prefers when several are installed.
DEFAULT_LOADER = "sb3"
#: The folder holding the ``lmgym`` package: a source checkout's root, or site-packages.
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _checkout_entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    """Entry points of ``group`` declared by the source checkout lmgym runs from, if any."""
    pyproject = SOURCE_ROOT / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    try:
        import tomllib
    except ImportError:  # Python 3.10: rely on the installed metadata
        return {}
    project = tomllib.loads(pyproject.read_text()).get("project", {})
    if project.get("name") != "lmgym":
        return {}
    table = project.get("entry-points", {}).get(group, {})
    return {name: metadata.EntryPoint(name, value, group) for name, value in table.items()}


def entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    """Name -> entry point of ``group``: installed packages', then the checkout's (which win).

    :param group: ``lmgym.commands`` or ``lmgym.model_loaders``.
    """
    found = {ep.name: ep for ep in metadata.entry_points(group=group)}
    found.update(_checkout_entry_points(group))
    return found


def _requirements() -> list[str]:
    """lmgym's declared requirements (``Requires-Dist``), empty when lmgym is not installed."""
    try:
        return list(metadata.requires("lmgym") or [])
    except metadata.PackageNotFoundError:
        return []


def missing_requirements(extra: str) -> list[str]:
    """Distributions that lmgym's ``extra`` requires and that are not installed.

    :param extra: an extra of the ``lmgym`` distribution, e.g. ``"agents"``.
    """
    missing = []
    for requirement in _requirements():
        marker = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", requirement)
        name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        if marker is None or marker.group(1) != extra or name is None:
            continue
        try:
            metadata.distribution(name.group(1))
        except metadata.PackageNotFoundError:
            missing.append(name.group(1))
    return missing


def load_entry_point(entry_point: metadata.EntryPoint, what: str) -> Any:
    """``entry_point.load()``, or a ``SystemExit`` naming the ``pip install`` that fixes it.

    :param entry_point: a ``lmgym.commands`` or ``lmgym.model_loaders`` entry point.
    :param what: what the user ran, for the message (e.g. ``"lmgym train"``).
    """
    extras = list(entry_point.extras)
    fix = " and ".join(f"pip install 'lmgym[{extra}]'" for extra in extras) or (
        f"install the package that provides {entry_point.value}"
    )
    missing = [name for extra in extras for name in missing_requirements(extra)]
    if missing:
        raise SystemExit(
            f"`{what}` needs the {'/'.join(extras)} extra: {fix} "
            f"(not installed: {', '.join(missing)})"
        )
    try:
        return entry_point.load()
    except ImportError as exc:
        raise SystemExit(
            f"`{what}` could not import {entry_point.value}: {exc}. Fix: {fix}"
        ) from exc


def _model_loader() -> Any:
    """The ``load_model`` that ``lmgym evaluate MODEL`` uses (``lmgym.model_loaders``)."""
    loaders = entry_points(LOADERS_GROUP)
    if not loaders:
        raise SystemExit(
            "`lmgym evaluate MODEL` needs a model loader: pip install 'lmgym[agents]' "
            "(or evaluate a baseline: expert, random, majority)"
        )
    entry_point = loaders.get(DEFAULT_LOADER) or loaders[sorted(loaders)[0]]
    return load_entry_point(entry_point, "lmgym evaluate MODEL")


def run_command(entry_point: metadata.EntryPoint, argv: list[str]) -> int:
    """Run a ``lmgym.commands`` entry point's ``main(argv)``; returns its exit code.

    :param entry_point: the command's entry point.
    :param argv: the command line after the command's name.
    """
    main = load_entry_point(entry_point, f"lmgym {entry_point.name}")
    return int(main(argv) or 0)


def _bench(argv: list[str]) -> int:
    from lmgym.bench import main as bench

    return bench(argv)


#: Sub-commands of lmgym itself handed whole to a module's ``main(argv)``.
DELEGATES = {
    "bench": (_bench, "env-steps/s of every task (single, Sync, native vector, SB3, multi-task)"),
}


#: Sub-commands lmgym defines itself (a plug-in cannot replace them).
BUILTIN_COMMANDS = ("list", "evaluate", "play")


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

    for name, (_, help_text) in DELEGATES.items():
        p = sub.add_parser(name, help=help_text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    for name, entry_point in sorted(entry_points(COMMANDS_GROUP).items()):
        if name in DELEGATES or name in sub.choices:
            continue
        needs = f", needs lmgym[{','.join(entry_point.extras)}]" if entry_point.extras else ""
        p = sub.add_parser(
            name,
            help=f"`lmgym {name} --help` for its options ({entry_point.module}{needs})",
            add_help=False,
        )
        p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after such a sub-command belongs to its own parser (argparse's REMAINDER
    # would refuse a leading --option such as `bench --quick`).
    if argv and argv[0] in DELEGATES:
        return int(DELEGATES[argv[0]][0](argv[1:]) or 0)
    if argv and argv[0] not in BUILTIN_COMMANDS:
        commands = entry_points(COMMANDS_GROUP)
        if argv[0] in commands:
            return run_command(commands[argv[0]], argv[1:])
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
