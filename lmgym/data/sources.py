"""Load a split's records from local files or, as a last resort, the Hugging Face hub."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from lmgym.data.cache import file_digest, fingerprint
from lmgym.data.catalog import DATASETS, SPLITS
from lmgym.data.errors import DatasetNotFoundError, LmgymDataError
from lmgym.data.paths import find_split_file, not_found

R = TypeVar("R")


class Source:
    """Where one split's records come from: a local file, or a hub dataset.

    :param digest: content fingerprint used as a cache key.
    :param path: local file (``None`` for hub data).
    """

    def __init__(self, digest: str, path: Path | None, load: Callable[[], Any]) -> None:
        self.digest = digest
        self.path = path
        self._load = load

    def load(self) -> Any:
        return self._load()


def dataset_source(
    dataset: str,
    split: str,
    data_dir: str | os.PathLike | None,
    reader: Callable[[Path], R],
    hub_reader: Callable[[Any], R] | None = None,
    **placeholders: str,
) -> Source:
    """Locate ``split`` of a catalogued ``dataset``: local folders first, then the hub.

    A dataset with a ``holdout`` (:class:`lmgym.data.catalog.DatasetInfo`) takes its
    ``train`` and ``validation`` splits apart from the train source (:func:`holdout_rows`).
    """
    holdout = DATASETS[dataset].holdout
    if not holdout or split not in ("train", "validation"):
        return _located_source(dataset, split, data_dir, reader, hub_reader, **placeholders)
    base = _located_source(dataset, "train", data_dir, reader, hub_reader, **placeholders)

    def load() -> Any:
        records = base.load()
        return [records[i] for i in holdout_rows(len(records), holdout, split)]

    return Source(fingerprint("holdout", base.digest, split, holdout), base.path, load)


def _located_source(
    dataset: str,
    split: str,
    data_dir: str | os.PathLike | None,
    reader: Callable[[Path], R],
    hub_reader: Callable[[Any], R] | None,
    **placeholders: str,
) -> Source:
    """The file of ``split`` in the local folders, else the hub's copy."""
    path = find_split_file(dataset, split, data_dir, **placeholders)
    if path is not None:
        return Source(file_digest(path), path, lambda: reader(path))
    info = DATASETS[dataset]
    if data_dir is None and info.hub is not None and hub_reader is not None:
        hub_split = _hub_split(dataset, split)
        records = _try_hub(info.hub, hub_split, hub_reader)
        if records is not None:
            return Source(
                fingerprint("hub", info.hub, hub_split, len(records)),  # type: ignore[arg-type]
                None,
                lambda: records,
            )
    raise not_found(dataset, split, data_dir, **placeholders)


def holdout_rows(n: int, holdout: int, split: str) -> list[int]:
    """Row indices of ``split`` (``train`` or ``validation``) when ``holdout`` of ``n``
    training rows are held out: a fixed sample (seed 0, the same everywhere), at most
    ``n // 5`` of a small copy, in file order.

    >>> holdout_rows(10, 1, "validation"), len(holdout_rows(10, 1, "train"))
    ([4], 9)
    """
    k = min(holdout, n // 5)
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(0).permutation(n)[:k]] = True
    return np.flatnonzero(held if split == "validation" else ~held).tolist()


def file_source(
    data_files: str | os.PathLike | dict[str, Any], split: str, reader: Callable[[Path], R]
) -> Source:
    """``data_files=`` given by the user: one path for every split, or ``{split: path}``."""
    if isinstance(data_files, dict):
        if split not in data_files:
            raise LmgymDataError(
                f"data_files has no {split!r} entry (has {sorted(data_files)}); add it or pick split= from those"
            )
        path = Path(data_files[split]).expanduser()
    else:
        path = Path(data_files).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(f"data file {str(path)!r} for split {split!r} does not exist")
    return Source(file_digest(path), path, lambda: reader(path))


def _hub_split(dataset: str, split: str) -> str:
    if dataset in ("sst2",) and split == "test":
        return "validation"  # GLUE hides SST-2 test labels
    return split if split in SPLITS else "train"


def _try_hub(hub: tuple[str, str | None], split: str, hub_reader: Callable[[Any], R]) -> R | None:
    """Fetch with ``datasets`` when it is installed and online; ``None`` otherwise."""
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return None
    try:
        import datasets  # optional dependency
    except ImportError:
        return None
    try:
        data = datasets.load_dataset(hub[0], hub[1], split=split)
    except Exception:  # offline, unknown dataset, ...: fall back to the clear local error
        return None
    return hub_reader(data)
