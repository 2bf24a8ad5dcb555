"""One JSON record per run: what ran, where, with which code, and what it scored.

Records are written atomically (temporary file + ``os.replace``), so a crashed or
interrupted grid never leaves a half-written record, and a rerun skips every run whose
record exists. Provenance (commit, device, versions) comes from :mod:`lmgym.provenance`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lmgym.data.cache import atomic_write_text
from lmgym.provenance import PACKAGES, cpu_model, device_name, git_commit, versions


def run_id(env: str, algo: str, backbone: str, seed: int, variant: str = "") -> str:
    """Stable file-system-safe name ``env__algo__backbone__seed`` (``algo-variant`` for a
    named variant of an algorithm's settings)."""
    label = f"{algo}-{variant}" if variant else algo
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{env.split('/')[-1]}__{label}__{backbone}__{seed}")


def algo_label(record: dict[str, Any]) -> str:
    """How tables name a record's algorithm: ``ppo``, or ``ppo [pooled]`` for a variant."""
    variant = record.get("variant") or (record.get("config") or {}).get("variant")
    return f"{record['algo']} [{variant}]" if variant else record["algo"]


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


__all__ = [
    "PACKAGES",
    "cpu_model",
    "device_name",
    "git_commit",
    "read_records",
    "run_id",
    "versions",
    "write_record",
]
