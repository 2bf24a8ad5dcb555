"""Data layer: locating files, reading formats, tokenising and caching.

See :mod:`lmgym.data.paths` for the search order and :mod:`lmgym.data.cache` for the
on-disk cache.
"""

from lmgym.data.catalog import DATASETS, SPLITS, DatasetInfo
from lmgym.data.errors import DataFormatError, DatasetNotFoundError, LmgymDataError, TokenizerError
from lmgym.data.paths import DATA_DIR_ENV, SAMPLE, SAMPLES_DIR
from lmgym.data.tokenization import TokenizerInfo, resolve_tokenizer

__all__ = [
    "DATASETS",
    "DATA_DIR_ENV",
    "SAMPLE",
    "SAMPLES_DIR",
    "SPLITS",
    "DataFormatError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "LmgymDataError",
    "TokenizerError",
    "TokenizerInfo",
    "resolve_tokenizer",
]
