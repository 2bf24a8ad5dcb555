"""Run a leaderboard grid: env × algorithm × backbone × seed, from a YAML spec.

``lmgym leaderboard benchmarks/specs/quick.yml`` (or ``lmgym leaderboard quick``, a spec
shipped with the package; or ``python -m benchmarks.leaderboard``) trains every
combination with the ``agents`` training code, evaluates on the test split with
:func:`lmgym.evaluate`, and writes one JSON record per run to
``benchmarks/results/<spec name>/`` (``./leaderboard/<spec name>/`` when installed). A run whose record exists is skipped, so an
interrupted grid resumes where it stopped. ``--ray-address auto`` (a running cluster) or
``--ray local`` runs one run per Ray task; records are written the same way.
Then ``python -m benchmarks.report`` builds ``LEADERBOARD.md`` and the plots.

Spec keys: ``name``, ``steps`` (env steps per run), ``eval_every``, ``eval_examples``
(validation examples per learning-curve point), ``test_examples`` (null = whole split),
``device``, ``n_envs``, ``envs`` (id -> {make_kwargs, algos, backbones, derived_data} and any of
``steps``, ``eval_every``, ``eval_examples``, ``test_examples``, ``n_envs``, ``baselines`` to
override the spec's for that env, and ``variants``: name -> {hyperparameter: value,
``make_kwargs`` to add env arguments, ``init_from: {env, steps, make_kwargs, hyperparams}``
to train that run first and start from its encoder (transfer)}, one run of each algorithm
per variant, recorded as ``algo [name]``; baselines use the env's ``make_kwargs`` without the variants'),
``algos``, ``backbones``, ``seeds``, ``hyperparams`` (algo -> {key: value}), ``baselines``
(random, majority, expert, supervised). ``derived_data: NAME`` builds a dataset of
:data:`benchmarks.datasets.BUILDERS` into the lmgym cache and passes its files as
``data_files`` (for ``lmgym/TextClassification-v0`` on data the recipe never saw).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.records import run_id, write_record

HERE = Path(__file__).parent
NO_BACKBONE = "-"
#: spec keys an env entry may override (e.g. fewer test examples where scoring is slow)
ENV_OVERRIDES = ("steps", "eval_every", "eval_examples", "test_examples", "n_envs")


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; picklable so Ray can ship it."""

    spec: str
    env: str
    algo: str
    backbone: str
    seed: int
    steps: int
    eval_every: int
    eval_examples: int | None
    test_examples: int | None
    device: str
    n_envs: int
    make_kwargs: dict[str, Any] = field(default_factory=dict)
    hyperparams: dict[str, Any] = field(default_factory=dict)
    variant: str = ""
    #: train this first ({env, steps, make_kwargs, hyperparams}) and start from its encoder
    init_from: dict[str, Any] | None = None
    #: labelled examples of supervised warm start (``agents.train --warm-start``), counted in
    #: ``steps``: RL then plays ``steps - warm_start`` env steps, so the labelled budget
    #: equals the supervised baseline's
    warm_start: int = 0

    @property
    def run_id(self) -> str:
        return run_id(self.env, self.algo, self.backbone, self.seed, self.variant)


def shipped_specs() -> list[str]:
    """Names of the spec YAMLs installed with this package (``benchmarks/specs/``)."""
    return sorted(path.stem for path in (HERE / "specs").glob("*.yml"))


def find_spec(spec: str | Path) -> Path:
    """``spec`` as a path, else the shipped spec of that name.

    :param spec: a YAML path, or a name such as ``"quick"``.
    """
    path = Path(spec)
    if path.is_file():
        return path
    shipped = HERE / "specs" / f"{spec}.yml"
    if shipped.is_file():
        return shipped
    raise SystemExit(
        f"spec {str(spec)!r}: no such file; pass a spec YAML or one of {', '.join(shipped_specs())}"
    )


def default_out(name: str) -> Path:
    """Where records go without ``--out``: the checkout's results, else ``./leaderboard/``.

    :param name: the spec's name.
    """
    if (HERE.parent / ".git").exists():  # a source checkout: the committed results
        return HERE / "results" / name
    return Path.cwd() / "leaderboard" / name


def load_spec(path: Path) -> dict[str, Any]:
    spec = yaml.safe_load(Path(path).read_text())
    missing = [k for k in ("name", "steps", "envs", "seeds") if k not in spec]
    if missing:
        raise SystemExit(f"{path}: spec is missing {', '.join(missing)}")
    return spec


def expand(spec: dict[str, Any], device: str | None = None) -> list[RunConfig]:
    """Every run of the grid, baselines first (they are cheap)."""
    base = {
        "spec": spec["name"],
        "steps": int(spec["steps"]),
        "eval_every": int(spec.get("eval_every", max(1, spec["steps"] // 5))),
        "eval_examples": spec.get("eval_examples"),
        "test_examples": spec.get("test_examples"),
        "device": device or spec.get("device", "cpu"),
        "n_envs": int(spec.get("n_envs", 8)),
    }
    runs: list[RunConfig] = []
    for env, env_spec in spec["envs"].items():
        env_spec = env_spec or {}
        make_kwargs = env_spec.get("make_kwargs", {})
        if "derived_data" in env_spec:
            from benchmarks.datasets import prepare

            make_kwargs = {**make_kwargs, "data_files": prepare(env_spec["derived_data"])}
        common = {**base, **{k: env_spec[k] for k in ENV_OVERRIDES if k in env_spec}}
        for baseline in env_spec.get("baselines", spec.get("baselines", [])):
            backbones = (
                spec.get("backbones", ["tiny"]) if baseline == "supervised" else [NO_BACKBONE]
            )
            seeds = spec["seeds"] if baseline in ("random", "supervised") else spec["seeds"][:1]
            for backbone in backbones:
                for seed in seeds:
                    runs.append(
                        RunConfig(
                            env=env,
                            algo=baseline,
                            backbone=backbone,
                            seed=seed,
                            make_kwargs=make_kwargs,
                            **common,
                        )
                    )
        variants = env_spec.get("variants") or {"": {}}
        algos = env_spec.get("algos", spec.get("algos", []))
        backbones = env_spec.get("backbones", spec.get("backbones", ["tiny"]))
        for algo, (variant, settings), backbone, seed in itertools.product(
            algos, variants.items(), backbones, spec["seeds"]
        ):
            settings = dict(settings or {})
            extra_kwargs = settings.pop("make_kwargs", {})
            init_from = settings.pop("init_from", None)
            warm_start = int(settings.pop("warm_start", 0))
            hyper = {**spec.get("hyperparams", {}).get(algo, {}), **settings}
            runs.append(
                RunConfig(env=env, algo=algo, backbone=backbone, seed=seed,
                          make_kwargs={**make_kwargs, **extra_kwargs}, hyperparams=hyper,
                          variant=variant, init_from=init_from, warm_start=warm_start,
                          **common)
            )  # fmt: skip
    return runs


def execute(config: RunConfig, out_dir: str) -> str:
    """Run one config and write its record (the unit of work of a Ray task)."""
    from benchmarks.runner import run_one

    started = time.time()
    record = run_one(config)
    record.update(
        run_id=config.run_id,
        spec=config.spec,
        config=asdict(config),
        wall_time_s=time.time() - started,
    )
    return str(write_record(Path(out_dir), record))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmgym leaderboard", description=__doc__.splitlines()[0])
    parser.add_argument(
        "spec",
        nargs="?",
        default="quick",
        help=f"a spec YAML, or the name of a shipped one ({', '.join(shipped_specs())}; default quick)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="record folder (default benchmarks/results/<spec name> in a source checkout, "
        "./leaderboard/<spec name> otherwise)",
    )
    parser.add_argument("--device", default=None, help="override the spec's device (cpu, cuda)")
    parser.add_argument(
        "--ray",
        choices=("off", "local"),
        default="off",
        help="run one run per Ray task on a local Ray",
    )
    parser.add_argument(
        "--ray-address", default=None, help="connect to a Ray cluster (e.g. auto) and run there"
    )
    parser.add_argument("--only", default=None, help="run only run ids containing this text")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    parser.add_argument(
        "--report", action="store_true", help="build LEADERBOARD.md and plots when done"
    )
    args = parser.parse_args(argv)

    spec = load_spec(find_spec(args.spec))
    out = args.out or default_out(spec["name"])
    out.mkdir(parents=True, exist_ok=True)
    runs = [r for r in expand(spec, args.device) if args.only is None or args.only in r.run_id]
    todo = [r for r in runs if not (out / f"{r.run_id}.json").is_file()]
    print(
        f"{spec['name']}: {len(runs)} runs, {len(runs) - len(todo)} done, {len(todo)} to go -> {out}",
        flush=True,
    )
    if args.dry_run:
        for r in todo:
            print(" ", r.run_id)
        return 0
    failures = 0
    if args.ray_address or args.ray == "local":
        import ray

        # Workers import benchmarks/ from this checkout and read data/caches from the same places.
        env_vars = {
            k: v for k, v in os.environ.items() if k.startswith("LMGYM_") or k.startswith("HF_")
        }
        env_vars["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])
        )
        ray.init(
            address=args.ray_address,
            ignore_reinit_error=True,
            log_to_driver=False,
            runtime_env={"env_vars": env_vars},
        )
        task = ray.remote(num_cpus=1)(execute)
        pending = {task.remote(r, str(out)): r for r in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            config = pending.pop(done[0])
            try:
                print("done", ray.get(done[0]), flush=True)
            except Exception as exc:  # one failed run must not lose the others
                failures += 1
                print(f"FAILED {config.run_id}: {exc}", file=sys.stderr, flush=True)
    else:
        for config in todo:
            try:
                print("done", execute(config, str(out)), flush=True)
            except Exception as exc:
                failures += 1
                print(
                    f"FAILED {config.run_id}: {type(exc).__name__}: {exc}",
                    file=sys.stderr,
                    flush=True,
                )
    if args.report:
        from benchmarks.report import main as report

        report([])
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
