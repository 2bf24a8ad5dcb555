"""Exceptions raised by the data layer.

Every error names what went wrong *and* how to fix it, so a user who mistypes a path or
feeds a corrupt file never has to read a traceback to know what to do.
"""

from __future__ import annotations

from pathlib import Path


class LmgymDataError(ValueError):
    """Base class of every data-layer error (a ``ValueError``)."""


class DatasetNotFoundError(LmgymDataError, FileNotFoundError):
    """A dataset's files could not be found in any of the places lmgym looks."""


class DataFormatError(LmgymDataError):
    """A data file is corrupt or not in the expected format.

    :param path: the offending file.
    :param line: 1-based line number (``None`` when the problem is not tied to a line).
    :param message: what is wrong and, where possible, what was expected.
    """

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


class TokenizerError(LmgymDataError):
    """A tokenizer could not be loaded or does not fit the data/policy."""


class MiniLMNotFoundError(TokenizerError, ImportError):
    """The all-MiniLM-L6-v2 files (vocab and weights) could not be found.

    An ``ImportError`` too, since the usual fix is installing the optional package.
    """
