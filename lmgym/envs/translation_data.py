"""Translation data: the target vocabulary (a byte-level BPE by default) and where the
sentence pairs come from (used by :mod:`lmgym.envs.translation`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lmgym.data.cache import atomic_write_text, cache_root, file_digest, fingerprint, locked
from lmgym.data.errors import DatasetNotFoundError, LmgymDataError, TokenizerError
from lmgym.data.loaders import ParallelText, read_parallel
from lmgym.data.paths import find_split_file, not_found
from lmgym.data.sources import Source, dataset_source, file_source
from lmgym.data.tokenization import resolve_tokenizer

#: Special tokens of the default target vocabulary (ids 0 and 1).
TARGET_SPECIAL_TOKENS = ("[PAD]", "[EOS]")
_EOS_NAMES = ("[EOS]", "</s>", "<eos>", "[SEP]", "<|endoftext|>")
_PAD_NAMES = ("[PAD]", "<pad>")


# -- the target vocabulary -------------------------------------------------------------------
def train_target_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE (GPT-2 style) trained on target sentences.

    Byte-level pre-tokenisation makes decoding lossless (no ``[UNK]``, spaces kept), so the
    expert's decoded output equals the reference text up to surrounding whitespace.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(TARGET_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def trained_target_tokenizer(
    texts: Callable[[], Iterable[str]], source_digest: str, vocab_size: int
) -> Tokenizer:
    """Train (or load from the cache) the default target vocabulary over ``texts()``."""
    key = fingerprint("bytelevel-bpe", source_digest, vocab_size)
    path = cache_root() / "tokenizers" / f"{key}.json"
    if not path.is_file():
        with locked(path.with_suffix(".lock")):
            if not path.is_file():
                atomic_write_text(path, train_target_tokenizer(texts(), vocab_size).to_str())
    return Tokenizer.from_file(str(path))


def resolve_target_tokenizer(
    spec: Any, train_texts: Callable[[], Iterable[str]], source_digest: str, vocab_size: int
) -> tuple[Tokenizer, int, int]:
    """The target tokenizer plus its EOS and pad ids.

    A tokenizer without an EOS-like token (``[EOS] </s> <eos> [SEP] <|endoftext|>``) gets
    ``[EOS]`` added as a special token (on lmgym's private copy).
    """
    if spec is None:
        tokenizer = trained_target_tokenizer(train_texts, source_digest, vocab_size)
    else:
        tokenizer = resolve_tokenizer(spec)
    found = [tokenizer.token_to_id(t) for t in _EOS_NAMES if tokenizer.token_to_id(t) is not None]
    if not found:
        tokenizer.add_special_tokens(["[EOS]"])
        found = [tokenizer.token_to_id("[EOS]")]
        if found[0] is None:
            raise TokenizerError("could not add an [EOS] token to the target tokenizer")
    eos = int(found[0])  # type: ignore[arg-type]
    pads = [tokenizer.token_to_id(t) for t in _PAD_NAMES if tokenizer.token_to_id(t) is not None]
    pad = int(pads[0]) if pads and pads[0] is not None else eos
    return tokenizer, eos, pad


# -- where the sentence pairs come from ------------------------------------------------------
def _byte_level_chars() -> dict[str, int]:
    """The byte each character of the byte-level alphabet stands for (GPT-2's
    ``bytes_to_unicode``, which ``tokenizers``' ``ByteLevel`` uses)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    chars = {chr(b): b for b in printable}
    shifted = (b for b in range(256) if b not in chars.values())
    chars.update({chr(256 + k): b for k, b in enumerate(shifted)})
    return chars


class ByteLevelDecoder:
    """``tokenizer.decode_batch(rows, skip_special_tokens=True)`` for a byte-level BPE
    tokenizer, several times faster: each id's bytes are looked up in a table, joined and
    decoded as UTF-8 with replacement characters, as ``tokenizers``' ``ByteLevel`` decoder
    does (``String::from_utf8_lossy``: the same maximal-subpart replacement as Python's
    ``"replace"``).

    Use :meth:`for_tokenizer`, which returns ``None`` for any other kind of tokenizer and
    checks the table against ``decode_batch`` on random rows first.

    :param table: the bytes of each token id (``b""`` for special tokens).
    """

    def __init__(self, table: list[bytes]) -> None:
        self.table = table
        self._objects = np.empty(len(table), dtype=object)  # the same, for decode_rows
        self._objects[:] = table

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, n_check: int = 512) -> ByteLevelDecoder | None:
        """A decoder equal to ``tokenizer``'s, or ``None`` when it is not a plain
        :class:`tokenizers.Tokenizer` with a ``ByteLevel`` decoder or fails the check on
        ``n_check`` random rows (then use ``decode_batch``)."""
        if not isinstance(tokenizer, Tokenizer) or not isinstance(
            tokenizer.decoder, decoders.ByteLevel
        ):
            return None
        chars = _byte_level_chars()
        special = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
        table = []
        for i in range(tokenizer.get_vocab_size(with_added_tokens=True)):
            token = tokenizer.id_to_token(i)
            if token is None or i in special:
                table.append(b"")
            elif all(c in chars for c in token):
                table.append(bytes(chars[c] for c in token))
            else:  # as the decoder does: a token outside the alphabet stands for its UTF-8
                table.append(token.encode("utf-8"))
        decoder = cls(table)
        rng = np.random.default_rng(0)
        rows = [
            rng.integers(0, len(table), int(rng.integers(0, 65))).tolist() for _ in range(n_check)
        ]
        if decoder.decode_batch(rows) != tokenizer.decode_batch(rows, skip_special_tokens=True):
            return None
        return decoder

    def decode_batch(self, rows: list[list[int]]) -> list[str]:
        """The text of each row of token ids (special tokens dropped)."""
        get = self.table.__getitem__
        return [b"".join(map(get, row)).decode("utf-8", "replace") for row in rows]

    def decode_rows(self, ids: np.ndarray, lengths: np.ndarray) -> list[str]:
        """``decode_batch`` of the rows ``ids[k, :lengths[k]]`` of an id array (the bytes
        looked up by numpy: about twice as fast as ``decode_batch(ids.tolist())``)."""
        rows = self._objects[ids].tolist()
        return [
            b"".join(row[:n]).decode("utf-8", "replace")
            for row, n in zip(rows, lengths.tolist(), strict=True)
        ]


def _pair_source(source: Path, target: Path) -> Source:
    for path in (source, target):
        if not path.is_file():
            raise DatasetNotFoundError(f"data file {str(path)!r} does not exist")
    digest = fingerprint("parallel", file_digest(source), file_digest(target))
    return Source(digest, source, lambda: read_parallel(source, target))


def parallel_source(
    dataset: str | None,
    data_files: Any,
    split: str,
    data_dir: Any,
    src: str,
    tgt: str,
    columns: tuple[str, str],
    delimiter: str | None,
) -> Source:
    """One split's sentence pairs: ``data_files`` of your own (a ``(source, target)`` pair of
    files or a TSV/CSV with two columns) or the catalogued ``dataset``'s files."""
    if data_files is not None:
        entry = data_files.get(split) if isinstance(data_files, dict) else data_files
        if isinstance(entry, (tuple, list)):
            if len(entry) != 2:
                raise LmgymDataError(
                    f"data_files[{split!r}] should be one TSV/CSV path or a (source, target) pair of paths, got {entry!r}"
                )
            return _pair_source(Path(entry[0]).expanduser(), Path(entry[1]).expanduser())
        return file_source(
            data_files, split, lambda p: read_parallel(p, None, columns[0], columns[1], delimiter)
        )
    if dataset is None:
        raise LmgymDataError(
            "lmgym/Translation-v0 without a dataset needs your data: data_files={'train': ('train.en', 'train.de'), ...} "
            "or {'train': 'train.tsv', ...} with source_column=/target_column="
        )
    source = find_split_file(dataset, split, data_dir, src=src)
    target = find_split_file(dataset, split, data_dir, src=tgt)
    if source is not None and target is not None:
        return _pair_source(source, target)
    if source is not None or target is not None:
        raise not_found(dataset, split, data_dir, src=tgt if source is not None else src)

    def from_hub(data: Any) -> list[ParallelText]:
        rows = data["translation"] if "translation" in data.column_names else data
        return [ParallelText(r[src], r[tgt]) for r in rows]

    return dataset_source(
        dataset, split, data_dir, lambda p: read_parallel(p), hub_reader=from_hub, src=src
    )
