"""The data pipeline every family core shares: :class:`DatasetCore`.

A family core subclasses :class:`DatasetCore` and, in ``__init__``, calls three methods in
order; everything else it writes is what makes the family itself (how a record becomes
observation rows, the legal actions, the transition and its reward, the episode metrics):

1. :meth:`~DatasetCore.open_split`: where the split's records come from (``self._source``;
   the records load lazily through :meth:`~DatasetCore.records`) and the train split's
   source, which the tokenizer and label sets are fitted on. The built-in families take
   the split, its files and the tokenizer as :class:`DataArgs` (their ``**data``) and open
   it with :meth:`~DatasetCore.open_data`.
2. :meth:`~DatasetCore.fit_tokenizer`: ``self.tokenizer`` from the ``tokenizer=`` argument
   (None trains a WordPiece on the train texts, cached), ``self.token_info``.
3. :meth:`~DatasetCore.load_arrays`: the tokenised split as read-only arrays
   (``self.data``), built once by the family's ``_build`` and memory-mapped from the
   on-disk cache afterwards (keyed by a fingerprint of everything ``_build`` reads).

Rows are ``[CLS] ... [SEP]`` sequences padded with the pad id (:func:`cls_sep`,
:func:`pad_rows`, :meth:`~DatasetCore.row_arrays`); ``data["lengths"]`` gives each row's
length, from which :meth:`~DatasetCore.load_rows` writes the attention mask when an
episode starts, and :meth:`~DatasetCore.row_state` / :meth:`~DatasetCore.row_observation`
hold and show them.
A worked example (a toy POS-tagging family) is in ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

import numpy as np
from gymnasium import spaces

from lmgym.data.cache import cached_arrays, fingerprint
from lmgym.data.sources import Source
from lmgym.data.tokenization import TokenizerInfo, resolve_tokenizer
from lmgym.envs.augment import Augmenter
from lmgym.envs.core import Slots, State, TaskCore, check_choice, int_box, sel

_POSITIONS: dict[int, np.ndarray] = {}


def positions(n: int) -> np.ndarray:
    """``arange(n)`` (read-only, cached)."""
    out = _POSITIONS.get(n)
    if out is None:
        out = _POSITIONS[n] = np.arange(n)
        out.setflags(write=False)
    return out


_ROW_STARTS: dict[tuple[int, int], np.ndarray] = {}


def row_starts(n: int, width: int) -> np.ndarray:
    """``arange(n) * width`` (read-only, cached): flat index of each row of an ``[n, width]`` array."""
    starts = _ROW_STARTS.get((n, width))
    if starts is None:
        starts = _ROW_STARTS[(n, width)] = np.arange(n, dtype=np.int64) * width
        starts.setflags(write=False)
    return starts


def cls_sep(ids: list[int], max_length: int, info: TokenizerInfo) -> list[int]:
    """``[CLS] ids [SEP]``, ``ids`` cut to fit ``max_length``."""
    return [info.cls_id, *ids[: max_length - 2], info.sep_id]


def pad_rows(rows: list[list[int]], max_length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``int32[n, max_length]`` rows padded with ``pad_id``, and ``int32[n]`` their lengths."""
    input_ids = np.full((len(rows), max_length), pad_id, dtype=np.int32)
    lengths = np.zeros(len(rows), dtype=np.int32)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        lengths[i] = len(row)
    return input_ids, lengths


def write_back(state: State, slots: Slots, **values: np.ndarray) -> None:
    """Store per-slot results computed on ``state[key][slots]`` copies (a no-op for
    ``slots=None``, where :func:`~lmgym.envs.core.sel` gave views updated in place)."""
    if slots is not None:
        for key, value in values.items():
            state[key][slots] = value


@dataclass(frozen=True)
class DataArgs:
    """The arguments every built-in dataset family takes besides its own: which split the
    episodes play, where its records are and how they are tokenised. A family core takes
    them as ``**data`` (``NERCore(split="validation", data_dir="sample")``) and reads them
    with :meth:`of`.

    :param split: the split the episodes play: ``"train"``, ``"validation"`` or ``"test"``.
    :param data_dir: the folder holding the catalogued datasets (None: ``$LMGYM_DATA_DIR``;
        ``"sample"``: the small copies bundled with lmgym).
    :param data_files: your own files instead of the catalogued dataset: one path for every
        split, or ``{split: path}``.
    :param tokenizer: the observation tokenizer: None (a WordPiece trained on the train
        split, cached), ``"minilm"``, a ``tokenizer.json`` path or a tokenizer object.
    :param vocab_size: the size of that trained WordPiece.
    """

    split: str = "train"
    data_dir: str | os.PathLike | None = None
    data_files: str | os.PathLike | dict[str, Any] | None = None
    tokenizer: Any = None
    vocab_size: int = 8000

    @classmethod
    def of(cls, core: object, data: Mapping[str, Any]) -> DataArgs:
        """The data arguments in ``data``, a family core's ``**data``; any other name raises
        the ``TypeError`` Python raises for an unknown keyword of ``core``'s constructor."""
        names = {f.name for f in fields(cls)}
        for name in data:
            if name not in names:
                raise TypeError(
                    f"{type(core).__qualname__}.__init__() got an unexpected keyword argument {name!r}"
                )
        return cls(**data)


#: The type of a family's raw records (``DatasetCore[TaggedSentence]``: NER's sentences).
Record = TypeVar("Record")


class DatasetCore(TaskCore, Generic[Record]):
    """A :class:`~lmgym.envs.core.TaskCore` over one split of a dataset (see the module doc).

    Sets ``split``, ``_source``, ``tokenizer``, ``token_info``, ``data``, ``n_examples`` and
    ``n_truncated`` (rows cut to fit, when ``_build`` reports it). The type argument is the
    type of the split's records (what :meth:`records` returns).
    """

    max_length: int
    split: str
    _source: Source
    token_info: TokenizerInfo
    data: dict[str, np.ndarray]
    n_truncated: int = 0
    _records: list[Record] | None = None
    #: the ``augment=`` operations the family supports (:mod:`lmgym.envs.augment`)
    augment_ops: tuple[str, ...] = ()
    augmenter: Augmenter | None = None
    #: the ``reward_mode=`` values the family accepts
    reward_modes: tuple[str, ...] = ()
    reward_mode: str

    # -- construction ---------------------------------------------------------------------
    def set_reward_mode(self, reward_mode: str) -> None:
        """Keep ``reward_mode``; ``ValueError`` naming :attr:`reward_modes` if it is not one."""
        check_choice("reward_mode", reward_mode, self.reward_modes)
        self.reward_mode = reward_mode

    def set_sizes(self, **sizes: tuple[int, int]) -> None:
        """Keep each ``name=(value, minimum)`` as ``self.name``; ``ValueError`` naming the
        first value below its minimum."""
        for name, (value, minimum) in sizes.items():
            if value < minimum:
                raise ValueError(f"{name}={value}: must be >= {minimum}")
        for name, (value, _) in sizes.items():
            setattr(self, name, value)

    def open_split(self, source_of: Callable[[str], Source], split: str) -> Source:
        """Open ``split`` (``source_of(split)``) and return the train split's source.

        :param source_of: the family's source lookup, called with a split name.
        :param split: the split the episodes play.
        """
        self.split = split
        self._source = source_of(split)
        self._records = None
        return self._source if split == "train" else source_of("train")

    def open_data(
        self, args: DataArgs, lookup: Callable[..., Source], dataset: str | None, *extra: Any
    ) -> Source:
        """:meth:`open_split` for ``args.split`` of a family whose source lookup is called
        ``lookup(dataset, data_files, split, data_dir, *extra)`` (every built-in family's).

        :param args: the family's :class:`DataArgs`.
        :param lookup: the family's source lookup (``conll_source``, ``squad_source``...).
        :param dataset: the catalogued dataset (the family's ``dataset=`` argument).
        :param extra: the lookup's own arguments (tag column, languages...).
        """
        return self.open_split(
            lambda name: lookup(dataset, args.data_files, name, args.data_dir, *extra), args.split
        )

    def fit_tokenizer(
        self,
        spec: Any,
        train_texts: Callable[[], Iterable[str]],
        source_digest: str,
        vocab_size: int,
    ) -> None:
        """``self.tokenizer`` from ``spec`` (see :func:`~lmgym.data.tokenization.resolve_tokenizer`).

        :param spec: the env's ``tokenizer=`` argument.
        :param train_texts: the texts a default WordPiece is trained on (called only then).
        :param source_digest: identifies those texts (the trained vocabulary's cache key).
        :param vocab_size: size of a trained vocabulary.
        """
        self.tokenizer = resolve_tokenizer(
            spec, train_texts=train_texts, source_digest=source_digest, vocab_size=vocab_size
        )
        self.token_info = TokenizerInfo.of(self.tokenizer)

    def set_augment(self, augment: Mapping[str, float] | None) -> None:
        """Check the ``augment=`` argument and keep it for the train split only (other splits
        ignore it: evaluation never sees augmented text). Call after :meth:`fit_tokenizer`."""
        if augment is None:
            return
        if not self.augment_ops:
            raise ValueError(f"augment: the {self.family} family takes no text augmentation")
        mask_id = self.tokenizer.token_to_id("[MASK]")
        augmenter = Augmenter(
            augment,
            self.augment_ops,
            self.family,
            self.token_info.unk_id if mask_id is None else mask_id,
            self.token_info.pad_id,
        )
        if self.split == "train":
            self.augmenter, self.augments = augmenter, True

    def augment_examples(
        self, state: State, slots: np.ndarray, rngs: list[np.random.Generator]
    ) -> None:
        if self.augmenter is None:
            return
        rows = state["input_ids"][slots]
        lengths = self.augmenter.apply(rows, state["attention_mask"][slots].sum(axis=1), rngs)
        state["input_ids"][slots] = rows
        state["attention_mask"][slots] = positions(self.max_length) < lengths[:, None]

    def load_arrays(self, name: str, *key: Any) -> dict[str, Any]:
        """``self.data`` from the on-disk cache ``name`` (built by ``self._build()`` on a miss).

        :param name: the cache folder (one per family).
        :param key: everything ``_build`` depends on (hashed with :func:`fingerprint`).
        :return: the build's metadata (``n_examples``, optional ``n_truncated``, ...).
        """
        arrays, meta = cached_arrays(name, fingerprint(*key), self._build)
        self.data = arrays
        self.n_examples = int(meta["n_examples"])
        if "n_truncated" in meta:
            self.n_truncated = int(meta["n_truncated"])
        return meta

    def _build(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The tokenised split: arrays (first axis = example) and metadata with
        ``n_examples``. Called once per cache key."""
        raise NotImplementedError(f"{type(self).__name__} must implement _build()")

    def row_arrays(self, rows: list[list[int]]) -> dict[str, np.ndarray]:
        """The token ``rows`` as ``_build`` returns them (beside the family's own arrays):
        ``input_ids`` padded to ``max_length`` and their ``lengths``, what :meth:`load_rows`
        reads."""
        input_ids, lengths = pad_rows(rows, self.max_length, self.token_info.pad_id)
        return {"input_ids": input_ids, "lengths": lengths}

    def records(self) -> list[Record]:
        """The raw records of the split (loaded on first use: render, evaluation, builds)."""
        if self._records is None:
            self._records = self._source.load()
        return self._records

    # -- the token rows in the episode state -------------------------------------------------
    def row_state(self, batch_size: int) -> State:
        """``example``, ``input_ids`` (pad) and ``attention_mask`` (0) for ``batch_size`` slots."""
        n, L = batch_size, self.max_length
        return {
            "example": np.zeros(n, dtype=np.int64),
            "input_ids": np.full((n, L), self.token_info.pad_id, dtype=np.int32),
            "attention_mask": np.zeros((n, L), dtype=np.int8),
        }

    def load_rows(self, state: State, slots: np.ndarray, example_ids: np.ndarray) -> None:
        """Write the examples' ids, token rows and attention masks into ``slots``."""
        lengths = self.data["lengths"].take(example_ids)[:, None]
        if len(slots) == len(state["example"]) and np.array_equal(slots, positions(len(slots))):
            # Every slot restarts (one-step episodes): gather straight into the state.
            np.take(self.data["input_ids"], example_ids, axis=0, out=state["input_ids"])
            np.less(positions(self.max_length), lengths, out=state["attention_mask"])
            state["example"][:] = example_ids
            return
        state["example"][slots] = example_ids
        state["input_ids"][slots] = self.data["input_ids"].take(example_ids, axis=0)
        state["attention_mask"][slots] = positions(self.max_length) < lengths

    def row_spaces(self) -> dict[str, spaces.Box]:
        """The ``input_ids`` and ``attention_mask`` entries of the observation space."""
        L = self.max_length
        return {
            "input_ids": int_box(self.token_info.vocab_size - 1, (L,)),
            "attention_mask": int_box(1, (L,), dtype=np.int8),
        }

    def define_spaces(self, n_actions: int, **entries: spaces.Box) -> None:
        """``single_action_space = Discrete(n_actions)`` and ``single_observation_space``:
        the token rows (:meth:`row_spaces`), the family's ``entries`` and ``action_mask``
        (``int8[n_actions]``, 1 = legal), the key every family's policies mask with."""
        self.single_action_space = spaces.Discrete(n_actions)
        self.single_observation_space = spaces.Dict(
            {
                **self.row_spaces(),
                **entries,
                "action_mask": int_box(1, (n_actions,), dtype=np.int8),
            }
        )

    def row_observation(self, state: State, slots: Slots = None) -> dict[str, np.ndarray]:
        """The ``input_ids`` and ``attention_mask`` entries of the selected slots."""
        s = sel(slots)
        return {"input_ids": state["input_ids"][s], "attention_mask": state["attention_mask"][s]}


__all__ = [
    "DataArgs",
    "DatasetCore",
    "cls_sep",
    "pad_rows",
    "positions",
    "row_starts",
    "write_back",
]
