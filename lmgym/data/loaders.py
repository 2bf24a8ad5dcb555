"""Readers for the raw file formats. Each returns plain Python records.

Every reader reports a malformed line with the file name and 1-based line number
(:class:`~lmgym.data.errors.DataFormatError`); none of them silently drops or guesses.
Gzip-compressed files (``*.gz``) are read transparently.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmgym.data.errors import DataFormatError


@dataclass(frozen=True)
class TaggedSentence:
    """One NER sentence: words and their BIO tags (same length)."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    line: int = 0  #: 1-based line of the sentence's first word (0 when not from a file)


@dataclass(frozen=True)
class LabelledText:
    """One classification example."""

    text: str
    label: str
    line: int = 0  #: 1-based line in the source file (0 when not from a file)


def open_text(path: str | Path, encoding: str = "utf-8") -> io.TextIOBase:
    """Open a text file, decompressing ``.gz`` files; errors name the file."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
        return open(path, encoding=encoding, newline="")
    except OSError as exc:
        raise DataFormatError(path, None, f"cannot open: {exc}") from exc


def iter_lines(path: str | Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line_without_newline)``; decoding and gzip errors name the file and line.

    Lines are decoded one at a time so a bad byte is reported on the line that holds it.
    """
    path = Path(path)
    lineno = 0
    try:
        handle = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as exc:
        raise DataFormatError(path, None, f"cannot open: {exc}") from exc
    with handle:
        try:
            for lineno, raw in enumerate(handle, start=1):  # noqa: B007
                try:
                    line = raw.decode(encoding)
                except UnicodeDecodeError as exc:
                    raise DataFormatError(
                        path, lineno, f"not valid {encoding} text ({exc.reason}); re-encode the file as {encoding}"
                    ) from exc
                yield lineno, line.rstrip("\r\n")
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise DataFormatError(path, lineno + 1, f"corrupt or truncated file: {exc}") from exc


def read_conll(path: str | Path, tag_column: int = -1, encoding: str = "utf-8") -> list[TaggedSentence]:
    """Read a CoNLL column file: one token a line, blank line between sentences.

    ``-DOCSTART-`` lines are skipped. ``tag_column`` selects the NER column (last by default).
    """
    sentences: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []
    n_columns: int | None = None
    first = 0
    for lineno, line in iter_lines(path, encoding):
        if not line.strip():
            if words:
                sentences.append(TaggedSentence(tuple(words), tuple(tags), first))
                words, tags = [], []
            continue
        columns = line.split()
        if columns[0] == "-DOCSTART-":
            continue
        if n_columns is None:
            n_columns = len(columns)
            if n_columns < 2:
                raise DataFormatError(path, lineno, "expected at least 2 columns (token ... tag)")
        elif len(columns) != n_columns:
            raise DataFormatError(
                path, lineno, f"expected {n_columns} whitespace-separated columns, found {len(columns)}"
            )
        tag = columns[tag_column]
        if tag != "O" and (len(tag) < 3 or tag[:2] not in ("B-", "I-")):
            raise DataFormatError(path, lineno, f"tag {tag!r} is not O, B-TYPE or I-TYPE (IOB2)")
        if not words:
            first = lineno
        words.append(columns[0])
        tags.append(tag)
    if words:
        sentences.append(TaggedSentence(tuple(words), tuple(tags), first))
    if not sentences:
        raise DataFormatError(path, None, "no sentences found (empty file?)")
    return sentences


def read_table(
    path: str | Path,
    text_column: str | tuple[str, ...],
    label_column: str | tuple[str, ...],
    delimiter: str | None = None,
    encoding: str = "utf-8",
) -> list[LabelledText]:
    """Read a CSV/TSV file with a header row; columns are found by name, in any order.

    The delimiter defaults to tab for ``.tsv`` files and comma otherwise. A column may be
    given as a tuple of alternative names (the first present is used): GLUE's SST-2 files
    call the text ``sentence`` in one file and ``content`` in another.
    """
    path = Path(path)
    if delimiter is None:
        delimiter = "\t" if ".tsv" in path.suffixes else ","
    examples: list[LabelledText] = []
    lines = iter_lines(path, encoding)
    try:
        _, header_line = next(lines)
    except StopIteration:
        raise DataFormatError(path, None, "empty file: expected a header row") from None
    header = next(csv.reader([header_line], delimiter=delimiter))
    found = []
    for wanted in (text_column, label_column):
        names = (wanted,) if isinstance(wanted, str) else tuple(wanted)
        present = [n for n in names if n in header]
        if not present:
            raise DataFormatError(
                path, 1, f"header has no column {' or '.join(map(repr, names))} (columns: {header}); pass text_column=/label_column="
            )
        found.append(header.index(present[0]))
    text_i, label_i = found
    for lineno, line in lines:
        if not line.strip():
            continue
        row = next(csv.reader([line], delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL))
        if len(row) != len(header):
            raise DataFormatError(path, lineno, f"expected {len(header)} columns, found {len(row)}")
        label = row[label_i].strip()
        if not label:
            raise DataFormatError(path, lineno, f"empty label in column {label_column!r}")
        examples.append(LabelledText(row[text_i], label, lineno))
    if not examples:
        raise DataFormatError(path, None, "no examples after the header row")
    return examples


def read_trec(path: str | Path, fine: bool = False, encoding: str = "latin-1") -> list[LabelledText]:
    """Read a TREC question-classification file: ``COARSE:fine question text`` a line."""
    examples: list[LabelledText] = []
    for lineno, line in iter_lines(path, encoding):
        if not line.strip():
            continue
        label, _, text = line.partition(" ")
        coarse, colon, fine_label = label.partition(":")
        if not colon or not coarse or not fine_label or not text.strip():
            raise DataFormatError(path, lineno, "expected 'COARSE:fine question text'")
        examples.append(LabelledText(text.strip(), label if fine else coarse, lineno))
    if not examples:
        raise DataFormatError(path, None, "no examples (empty file?)")
    return examples


def read_json(path: str | Path) -> object:
    """Load a JSON file, reporting syntax errors with their line number."""
    try:
        with open_text(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, exc.lineno, f"invalid JSON: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, None, f"not valid utf-8 text ({exc.reason})") from exc
