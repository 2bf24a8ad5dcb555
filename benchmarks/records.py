"""One JSON record per run: what ran, where, with which code, and what it scored.

Records are written atomically (temporary file + ``os.replace``), so a crashed or
interrupted grid never leaves a half-written record, and a rerun skips every run whose
record exists.
"""

from __future__ import annotations

import json
import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from lmgym.data.cache import atomic_write_text

PACKAGES = (
    "lmgym",
    "gymnasium",
    "numpy",
    "torch",
    "transformers",
    "stable-baselines3",
    "sb3-contrib",
    "tokenizers",
    "seqeval",
    "sacrebleu",
)


def run_id(env: str, algo: str, backbone: str, seed: int) -> str:
    """Stable file-system-safe name ``env__algo__backbone__seed``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{env.split('/')[-1]}__{algo}__{backbone}__{seed}")


def git_commit() -> str:
    """Short ``HEAD`` of this checkout, ``+dirty`` with uncommitted tracked changes."""
    from lmgym.bench import git_commit as head

    return head() or "unknown"


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    found["python"] = platform.python_version()
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def device_name(device: str) -> str:
    """Human-readable device: the GPU's name for CUDA, else the CPU model."""
    if device.startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
        except ImportError:
            pass
    return cpu_model()


def write_record(folder: Path, record: dict[str, Any]) -> Path:
    path = folder / f"{record['run_id']}.json"
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def read_records(folder: Path) -> list[dict[str, Any]]:
    records = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            records.append(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:  # only possible if edited by hand: say which file
            raise ValueError(
                f"{path}: not a valid record ({exc}); delete it to rerun that run"
            ) from exc
    return records
