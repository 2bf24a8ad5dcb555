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
from typing import Literal

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


#: The UTF-8 byte-order mark some editors write at the start of a file.
UTF8_BOM = b"\xef\xbb\xbf"


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
                if lineno == 1 and raw.startswith(UTF8_BOM):
                    raw = raw[
                        len(UTF8_BOM) :
                    ]  # editors' byte-order mark is not part of the first field
                if b"\x00" in raw:
                    raise DataFormatError(
                        path,
                        lineno,
                        "NUL byte (\\x00) in a text file: the file is binary or corrupt",
                    )
                try:
                    line = raw.decode(encoding)
                except UnicodeDecodeError as exc:
                    raise DataFormatError(
                        path,
                        lineno,
                        f"not valid {encoding} text ({exc.reason}); re-encode the file as {encoding}",
                    ) from exc
                yield lineno, line.rstrip("\r\n")
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
            raise DataFormatError(path, lineno + 1, f"corrupt or truncated file: {exc}") from exc


def read_conll(
    path: str | Path, tag_column: int = -1, encoding: str = "utf-8"
) -> list[TaggedSentence]:
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
                path,
                lineno,
                f"expected {n_columns} whitespace-separated columns, found {len(columns)}",
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
    header = _csv_row(path, 1, header_line, delimiter, csv.QUOTE_MINIMAL)
    found = []
    for wanted in (text_column, label_column):
        names = (wanted,) if isinstance(wanted, str) else tuple(wanted)
        present = [n for n in names if n in header]
        if not present:
            raise DataFormatError(
                path,
                1,
                f"header has no column {' or '.join(map(repr, names))} (columns: {header}); pass text_column=/label_column=",
            )
        found.append(header.index(present[0]))
    text_i, label_i = found
    for lineno, line in lines:
        if not line.strip():
            continue
        row = _csv_row(
            path,
            lineno,
            line,
            delimiter,
            csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL,
        )
        if len(row) != len(header):
            raise DataFormatError(path, lineno, f"expected {len(header)} columns, found {len(row)}")
        label = row[label_i].strip()
        if not label:
            raise DataFormatError(path, lineno, f"empty label in column {label_column!r}")
        examples.append(LabelledText(row[text_i], label, lineno))
    if not examples:
        raise DataFormatError(path, None, "no examples after the header row")
    return examples


def _csv_row(
    path: Path, lineno: int, line: str, delimiter: str, quoting: Literal[0, 1, 2, 3]
) -> list[str]:
    """Split one line with :mod:`csv`; its errors (a lone ``\\r`` inside a line) name the file and line."""
    try:
        return next(csv.reader([line], delimiter=delimiter, quoting=quoting))
    except csv.Error as exc:
        hint = (
            "; a carriage return (\\r) inside the line? use \\n or \\r\\n line endings"
            if "\r" in line
            else ""
        )
        raise DataFormatError(
            path, lineno, f"cannot split the line into columns ({exc}){hint}"
        ) from exc


def read_trec(
    path: str | Path, fine: bool = False, encoding: str = "latin-1"
) -> list[LabelledText]:
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
        with open_text(path, encoding="utf-8-sig") as handle:  # -sig: tolerate a byte-order mark
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, exc.lineno, f"invalid JSON: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, None, f"not valid utf-8 text ({exc.reason})") from exc
    except RecursionError as exc:
        raise DataFormatError(path, None, "JSON nested too deeply to read") from exc
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise DataFormatError(path, None, f"corrupt or truncated file: {exc}") from exc


# -- translation and question answering ------------------------------------------------------
@dataclass(frozen=True)
class ParallelText:
    """One translation pair."""

    source: str
    target: str
    line: int = 0  #: 1-based line in the source file (0 when not from a file)


@dataclass(frozen=True)
class SquadQuestion:
    """One extractive question with its paragraph.

    :param answers: ``(text, answer_start)`` pairs; ``context[start:start + len(text)] == text``.
    :param paragraph: index of the paragraph in the file (questions on one paragraph share it).
    :param where: JSON path of the question in its file (for error messages).
    """

    qid: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]
    paragraph: int
    where: str = ""


@dataclass(frozen=True)
class MultipleChoice:
    """One multiple-choice question; ``answer`` is a 0-based index into ``choices``."""

    question: str
    choices: tuple[str, ...]
    answer: int
    context: str = ""
    qid: str = ""
    line: int = 0  #: 1-based line in the source file (0 when not from a file)


def read_parallel(
    path: str | Path,
    target_path: str | Path | None = None,
    source_column: str = "source",
    target_column: str = "target",
    delimiter: str | None = None,
    encoding: str = "utf-8",
) -> list[ParallelText]:
    """Read a parallel corpus.

    With ``target_path``: two files, one sentence a line, line ``i`` of one translating line
    ``i`` of the other (Multi30k, WMT ``.en``/``.de`` files; ``.gz`` fine). Without: one
    CSV/TSV file with a header row naming ``source_column`` and ``target_column``.
    A line that is empty on both sides is skipped; empty on one side only is an error, as
    are files with different numbers of lines.
    """
    path = Path(path)
    if target_path is None:
        rows = read_table(path, source_column, target_column, delimiter, encoding)
        pairs = []
        for row in rows:
            if not row.text.strip():
                raise DataFormatError(
                    path, row.line, f"empty source sentence in column {source_column!r}"
                )
            pairs.append(ParallelText(row.text, row.label, row.line))
        return pairs
    target_path = Path(target_path)
    sources = list(iter_lines(path, encoding))
    targets = list(iter_lines(target_path, encoding))
    if len(sources) != len(targets):
        longer, n = (
            (path, len(sources)) if len(sources) > len(targets) else (target_path, len(targets))
        )
        raise DataFormatError(
            longer,
            min(len(sources), len(targets)) + 1,
            f"{path.name} has {len(sources)} lines but {target_path.name} has {len(targets)}; "
            f"line i of each file must hold one translation pair (this is the first unpaired line of {longer.name}, {n} lines)",
        )
    pairs = []
    for (lineno, source), (_, target) in zip(sources, targets, strict=True):
        if not source.strip() and not target.strip():
            continue
        if not source.strip() or not target.strip():
            empty = path if not source.strip() else target_path
            raise DataFormatError(
                empty, lineno, "empty sentence while the other side of the pair is not empty"
            )
        pairs.append(ParallelText(source, target, lineno))
    if not pairs:
        raise DataFormatError(path, None, "no sentence pairs (empty file?)")
    return pairs


def _json_line(path: Path, needle: str) -> int | None:
    """1-based line of the first occurrence of ``needle`` in a text file (error reporting only)."""
    try:
        with open_text(path) as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError, DataFormatError):
        return None
    at = text.find(needle)
    return None if at < 0 else text.count("\n", 0, at) + 1


def read_squad(path: str | Path) -> list[SquadQuestion]:
    """Read a SQuAD v1.1 JSON file (``{"data": [{"paragraphs": [{"context", "qas"}]}]}``).

    Every answer must occur in its context at ``answer_start`` (when ``answer_start`` is
    missing, its first occurrence is used). Errors give the JSON path of the offending
    question and its line in the file (official SQuAD files are a single line).
    SQuAD 2.0 unanswerable questions are refused.
    """
    path = Path(path)
    root = read_json(path)

    def fail(where: str, message: str, needle: str | None = None) -> DataFormatError:
        line = _json_line(path, needle) if needle else None
        return DataFormatError(path, line, f"{where}: {message}")

    def field(obj: object, key: str, kind: type, where: str, needle: str | None = None) -> object:
        if not isinstance(obj, dict) or key not in obj:
            raise fail(where, f"missing field {key!r} (expected SQuAD v1.1 format)", needle)
        value = obj[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise fail(
                where,
                f"field {key!r} should be a {kind.__name__}, got {type(value).__name__}",
                needle,
            )
        return value

    def items(obj: object, key: str, where: str, needle: str | None = None) -> list:
        value = field(obj, key, list, where, needle)
        assert isinstance(value, list)
        return value

    questions: list[SquadQuestion] = []
    paragraph_index = 0
    for a, article in enumerate(items(root, "data", "top level")):
        for p, paragraph in enumerate(items(article, "paragraphs", f"data[{a}]")):
            where_p = f"data[{a}].paragraphs[{p}]"
            context = field(paragraph, "context", str, where_p)
            assert isinstance(context, str)
            for k, qa in enumerate(items(paragraph, "qas", where_p)):
                where = f"{where_p}.qas[{k}]"
                qid = qa.get("id") if isinstance(qa, dict) else None
                needle = f'"{qid}"' if isinstance(qid, str) else None
                qid = field(qa, "id", str, where, needle)
                question = field(qa, "question", str, where, needle)
                where = f"{where} (id {qid})"
                if qa.get("is_impossible"):
                    raise fail(
                        where,
                        "unanswerable (SQuAD 2.0) questions are not supported; use SQuAD v1.1 data",
                        needle,
                    )
                answers = items(qa, "answers", where, needle)
                if not answers:
                    raise fail(
                        where, "no answers (every SQuAD v1.1 question has at least one)", needle
                    )
                gold: list[tuple[str, int]] = []
                for j, answer in enumerate(answers):
                    text = field(answer, "text", str, f"{where}.answers[{j}]", needle)
                    assert isinstance(text, str)
                    if not text.strip():
                        raise fail(f"{where}.answers[{j}]", "empty answer text", needle)
                    start = answer.get("answer_start")
                    if start is None:
                        start = context.find(text)
                        if start < 0:
                            raise fail(
                                f"{where}.answers[{j}]",
                                f"answer {text!r} not found in the context",
                                needle,
                            )
                    elif not isinstance(start, int) or isinstance(start, bool):
                        raise fail(
                            f"{where}.answers[{j}]",
                            f"answer_start should be an int, got {start!r}",
                            needle,
                        )
                    elif context[start : start + len(text)] != text:
                        found = context.find(text)
                        hint = (
                            f" (it occurs at character {found})"
                            if found >= 0
                            else " (it does not occur in the context at all)"
                        )
                        raise fail(
                            f"{where}.answers[{j}]",
                            f"answer {text!r} not found in the context at answer_start={start}{hint}",
                            needle,
                        )
                    gold.append((text, start))
                assert isinstance(qid, str) and isinstance(question, str)
                questions.append(
                    SquadQuestion(qid, question, context, tuple(gold), paragraph_index, where)
                )
            paragraph_index += 1
    if not questions:
        raise DataFormatError(path, None, "no questions found (empty 'data'?)")
    return questions


def read_multiple_choice_jsonl(path: str | Path, encoding: str = "utf-8") -> list[MultipleChoice]:
    """Read multiple-choice questions, one JSON object a line.

    Fields: ``question`` (str), ``choices`` (list of at least 2 str), ``answer`` (the
    0-based index of the right choice, or its exact text); optional ``context`` (str, a
    passage shown before the question) and ``id``. Blank lines are skipped.
    """
    path = Path(path)
    examples: list[MultipleChoice] = []
    for lineno, line in iter_lines(path, encoding):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(
                path, lineno, f"invalid JSON (column {exc.colno}): {exc.msg}"
            ) from exc
        except RecursionError as exc:
            raise DataFormatError(path, lineno, "JSON nested too deeply to read") from exc
        if not isinstance(record, dict):
            raise DataFormatError(
                path, lineno, f"expected a JSON object, got {type(record).__name__}"
            )
        for key in ("question", "choices", "answer"):
            if key not in record:
                raise DataFormatError(
                    path, lineno, f"missing field {key!r} (need question, choices, answer)"
                )
        question, choices, answer = record["question"], record["choices"], record["answer"]
        if not isinstance(question, str) or not question.strip():
            raise DataFormatError(path, lineno, "'question' should be a non-empty string")
        if (
            not isinstance(choices, list)
            or len(choices) < 2
            or not all(isinstance(c, str) and c.strip() for c in choices)
        ):
            raise DataFormatError(
                path, lineno, "'choices' should be a list of at least 2 non-empty strings"
            )
        if isinstance(answer, bool) or not isinstance(answer, (int, str)):
            raise DataFormatError(
                path,
                lineno,
                f"'answer' should be a choice index or a choice's text, got {answer!r}",
            )
        if isinstance(answer, int):
            if not 0 <= answer < len(choices):
                raise DataFormatError(
                    path,
                    lineno,
                    f"answer index {answer} out of range for {len(choices)} choices (0-based)",
                )
            index = answer
        else:
            matches = [i for i, c in enumerate(choices) if c == answer]
            if len(matches) != 1:
                what = "is not one of the choices" if not matches else "matches several choices"
                raise DataFormatError(
                    path, lineno, f"answer {answer!r} {what}; give the 0-based index instead"
                )
            index = matches[0]
        context = record.get("context", "")
        if not isinstance(context, str):
            raise DataFormatError(path, lineno, "'context' should be a string")
        qid = record.get("id", "")
        examples.append(MultipleChoice(question, tuple(choices), index, context, str(qid), lineno))
    if not examples:
        raise DataFormatError(path, None, "no questions (empty file?)")
    return examples


class PackedTexts:
    """Many strings stored as two numpy arrays (UTF-8 bytes + offsets), so they can live in
    the on-disk cache and be memory-mapped; ``texts[i]`` decodes one on demand.

    :param data: ``uint8`` concatenated UTF-8 bytes.
    :param offsets: ``int64[n + 1]``: string ``i`` is ``data[offsets[i]:offsets[i + 1]]``.
    """

    def __init__(self, data: object, offsets: object) -> None:
        self.data = data
        self.offsets = offsets

    @staticmethod
    def pack(texts: list[str]) -> dict[str, object]:
        """``{"data": uint8[...], "offsets": int64[n + 1]}`` for :class:`PackedTexts`."""
        import numpy as np

        blobs = [t.encode("utf-8") for t in texts]
        offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(b) for b in blobs])
        data = (
            np.frombuffer(b"".join(blobs), dtype=np.uint8) if blobs else np.zeros(0, dtype=np.uint8)
        )
        return {"data": data, "offsets": offsets}

    def __len__(self) -> int:
        return len(self.offsets) - 1  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> str:
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])  # type: ignore[index]
        return bytes(self.data[lo:hi]).decode("utf-8")  # type: ignore[index]
