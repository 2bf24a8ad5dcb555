"""Where a result came from: the code's commit, the machine, the library versions.

The one place that answers these questions for ``lmgym bench``, the sidecar JSON of a
saved model (:func:`agents.evaluate.save_model`) and the leaderboard's records
(:mod:`benchmarks.records`), so all three report the same commit string.

>>> commit = git_commit()  # e.g. "1a472b3" or "1a472b3+dirty"; None outside a checkout
>>> sorted(versions())[:2]  # doctest: +SKIP
['gymnasium', 'lmgym']
"""

from __future__ import annotations

import datetime as _dt
import importlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions a result records (those not installed are left out).
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

#: The folder holding the ``lmgym`` package: a source checkout, or site-packages.
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def git_commit(root: str | Path | None = None) -> str | None:
    """Short ``HEAD`` of the checkout lmgym runs from, ``+dirty`` with uncommitted tracked changes.

    :param root: the checkout to ask (default: the one holding this ``lmgym`` package).
    :return: e.g. ``"1a472b3+dirty"``; ``None`` when ``root`` is not the top of a git
        checkout (an installed package) or git is not available.
    """
    root = Path(root) if root is not None else SOURCE_ROOT
    if not (root / ".git").exists():  # a folder in a checkout, or a worktree's .git file
        return None

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if dirty else "")) or None


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (missing ones left out), plus ``python``.

    :param packages: distribution names as ``pip`` spells them.
    """
    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    found["python"] = platform.python_version()
    return found


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_model() -> str:
    """The CPU's model name and core count, e.g. ``"AMD EPYC 7B13 (2 cores)"``."""
    return f"{cpu_name()} ({os.cpu_count()} cores)"


def device_name(device: str) -> str:
    """Human-readable device: the GPU's name for a CUDA device, else :func:`cpu_model`.

    torch is imported only for a ``cuda`` device (a caller asking about one has it).

    :param device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``...
    """
    if device.startswith("cuda"):
        try:
            torch: Any = importlib.import_module("torch")
        except ImportError:
            return cpu_model()
        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    return cpu_model()


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (``None`` where the OS has none)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info() -> dict[str, Any]:
    """Provenance of a measurement: CPU, load, Python, platform, versions, commit, date."""
    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions(),
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


__all__ = [
    "PACKAGES",
    "cpu_model",
    "cpu_name",
    "device_name",
    "git_commit",
    "load_average",
    "machine_info",
    "versions",
]
