"""Find a dataset's files: ``data_dir=`` kwarg, then ``$LMGYM_DATA_DIR``, then the hub.

The search order is the one documented in the README. A failure names the dataset, every
folder that was looked in, and how to provide the data.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmgym.data.catalog import DATASETS, SPLITS, DatasetInfo
from lmgym.data.errors import DatasetNotFoundError, LmgymDataError

DATA_DIR_ENV = "LMGYM_DATA_DIR"
SAMPLE = "sample"
SAMPLES_DIR = Path(__file__).parent / "samples"


def check_split(split: str, info: DatasetInfo | None = None) -> str:
    """Return ``split`` or raise a clear error naming the valid ones."""
    valid = tuple(info.files) if info is not None else SPLITS
    if split not in valid:
        raise LmgymDataError(f"unknown split {split!r}; choose one of {', '.join(valid)}")
    return split


def data_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    """The folders to search, in order: ``data_dir`` (``"sample"`` = bundled samples),
    then ``$LMGYM_DATA_DIR``."""
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(SAMPLES_DIR if str(data_dir) == SAMPLE else Path(data_dir).expanduser())
    elif os.environ.get(DATA_DIR_ENV):
        roots.append(Path(os.environ[DATA_DIR_ENV]).expanduser())
    return roots


def find_split_file(
    dataset: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    **placeholders: str,
) -> Path | None:
    """Return the file holding ``split`` of ``dataset``, or ``None`` if no local copy exists.

    Raises :class:`DatasetNotFoundError` if ``data_dir`` was given explicitly but does
    not exist (a typo should not silently fall through to another source).
    """
    info = DATASETS[dataset]
    check_split(split, info)
    if (
        data_dir is not None
        and str(data_dir) != SAMPLE
        and not Path(data_dir).expanduser().is_dir()
    ):
        raise DatasetNotFoundError(
            f"data_dir={str(data_dir)!r} does not exist or is not a folder; pass the folder "
            f"that contains {dataset}/ (the layout of $LMGYM_DATA_DIR), or data_dir='sample'"
        )
    for root in data_roots(data_dir):
        for name in info.files[split]:
            path = root / dataset / name.format(**placeholders)
            if path.is_file():
                return path
    return None


def not_found(
    dataset: str, split: str, data_dir: str | os.PathLike | None, **placeholders: str
) -> DatasetNotFoundError:
    """Build the error raised when no source could provide ``dataset``/``split``."""
    info = DATASETS[dataset]
    roots = data_roots(data_dir)
    looked = (
        ", ".join(str(r / dataset) for r in roots)
        or "nowhere (no data_dir and $LMGYM_DATA_DIR unset)"
    )
    names = " or ".join(n.format(**placeholders) for n in info.files[split])
    hub = ""
    if info.hub is not None:
        hub = (
            f" lmgym also tries the Hugging Face hub ({info.hub[0]}) when the `datasets` "
            "package is installed and online."
        )
    return DatasetNotFoundError(
        f"{info.title}: no {split!r} split found (looked for {names} in {looked}). "
        f"Download the dataset and either pass data_dir=... to gym.make or set "
        f"${DATA_DIR_ENV} to the folder that contains {dataset}/; use data_dir='sample' "
        f"for the small bundled sample.{hub}"
    )
