"""Text classification: read a text, choose its label (SST-2, TREC, any TSV/CSV)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lmgym.data.errors import DataFormatError, LmgymDataError
from lmgym.data.loaders import LabelledText, read_table, read_trec
from lmgym.data.sources import Source, dataset_source, file_source
from lmgym.envs.base import LmgymEnv, vector_env
from lmgym.envs.core import LabelScoring, State, sel
from lmgym.envs.dataset import DataArgs, DatasetCore, cls_sep

#: Readable names of the catalogued datasets' labels.
LABEL_NAMES = {"sst2": {"0": "negative", "1": "positive"}}


def _source(
    dataset: str | None,
    data_files: Any,
    split: str,
    data_dir: Any,
    columns: tuple[Any, Any],
    delimiter: str | None,
) -> Source:
    if data_files is not None:
        return file_source(
            data_files, split, lambda p: read_table(p, columns[0], columns[1], delimiter)
        )
    if dataset is None:
        raise LmgymDataError(
            "lmgym/TextClassification-v0 needs your data: pass data_files='train.tsv' or "
            "{'train': ..., 'validation': ..., 'test': ...} plus text_column= and label_column="
        )
    if dataset == "trec":
        return dataset_source("trec", split, data_dir, read_trec, hub_reader=_trec_from_hub)
    return dataset_source(
        dataset,
        split,
        data_dir,
        lambda p: read_table(p, *columns, delimiter),
        hub_reader=_sst2_from_hub,
    )


def _sst2_from_hub(data: Any) -> list[LabelledText]:
    return [LabelledText(r["sentence"], str(r["label"])) for r in data]


def _trec_from_hub(data: Any) -> list[LabelledText]:
    names = data.features["coarse_label"].names
    return [LabelledText(r["text"], names[r["coarse_label"]]) for r in data]


class ClassificationCore(LabelScoring, DatasetCore[LabelledText]):
    """Batched one-step classification. See :class:`TextClassificationEnv`."""

    family = "classification"
    gold_key = "labels"
    augment_ops = ("drop", "swap", "mask")

    def __init__(
        self,
        *,
        dataset: str | None = None,
        text_column: str | tuple[str, ...] = "text",
        label_column: str | tuple[str, ...] = "label",
        delimiter: str | None = None,
        labels: tuple[str, ...] | None = None,
        max_length: int = 64,
        augment: Mapping[str, float] | None = None,
        **data: Any,
    ) -> None:
        """:param data: the split, its files and the tokenizer (:class:`DataArgs`)."""
        args = DataArgs.of(self, data)
        self.set_sizes(max_length=(max_length, 3))
        self.dataset = dataset
        columns = (text_column, label_column)
        train = self.open_data(args, _source, dataset, columns, delimiter)
        self.labels = (
            tuple(labels) if labels is not None else tuple(sorted({e.label for e in train.load()}))
        )
        if len(self.labels) < 2:
            raise LmgymDataError(
                f"found {len(self.labels)} label(s) in the train split; classification needs at least 2"
            )
        self.label_names = tuple(
            LABEL_NAMES.get(dataset or "", {}).get(label, label) for label in self.labels
        )
        self.fit_tokenizer(
            args.tokenizer, lambda: (e.text for e in train.load()), train.digest, args.vocab_size
        )
        self.set_augment(augment)
        self.load_arrays(
            "classification",
            "cls",
            self._source.digest,
            self.token_info.digest,
            self.labels,
            max_length,
        )
        self.label_counts = np.bincount(self.data["labels"], minlength=len(self.labels))

        n = len(self.labels)
        self._ones = np.ones((1, n), dtype=np.int8)
        self.define_spaces(n)

    #: The raw texts of the split (loaded lazily).
    examples = DatasetCore.records

    def _build(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        examples = self.examples()
        index = {label: i for i, label in enumerate(self.labels)}
        info, L = self.token_info, self.max_length
        labels = np.zeros(len(examples), dtype=np.int32)
        for i, example in enumerate(examples):
            if example.label not in index:
                raise DataFormatError(
                    self._source.path or "hub data",
                    example.line or None,
                    f"label {example.label!r} is not in the train split's label set {self.labels}; pass labels=(...) or fix the file",
                )
            labels[i] = index[example.label]
        encodings = self.tokenizer.encode_batch(
            [e.text for e in examples], add_special_tokens=False
        )
        n_truncated = sum(len(e.ids) > L - 2 for e in encodings)
        arrays = {**self.row_arrays([cls_sep(e.ids, L, info) for e in encodings]), "labels": labels}
        return arrays, {"n_examples": len(examples), "n_truncated": n_truncated}

    def init_state(self, batch_size: int) -> State:
        return {**self.row_state(batch_size), "pred": np.full(batch_size, -1, dtype=np.int32)}

    def load_examples(self, state: State, slots: np.ndarray, example_ids: np.ndarray) -> None:
        self.load_rows(state, slots, example_ids)
        state["pred"][slots] = -1

    def observe(self, state: State, slots: np.ndarray | None = None) -> dict[str, np.ndarray]:
        rows = self.row_observation(state, slots)
        k = len(rows["input_ids"])
        return {**rows, "action_mask": np.broadcast_to(self._ones, (k, len(self.labels)))}

    def action_masks(self, state: State, slots: np.ndarray | None = None) -> np.ndarray:
        return np.ones((len(state["example"][sel(slots)]), len(self.labels)), dtype=bool)

    def render_text(self, state: State, slot: int) -> str:
        ex, pred = int(state["example"][slot]), int(state["pred"][slot])
        gold = int(self.data["labels"][ex])
        chosen = self.label_names[pred] if pred >= 0 else "?"
        mark = "" if pred < 0 else ("  ✓" if pred == gold else "  ✗")
        return (
            f"text {self.examples()[ex].text}\ngold {self.label_names[gold]}\npred {chosen}{mark}"
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "labels": len(self.labels), "truncated": self.n_truncated}


class TextClassificationEnv(LmgymEnv):
    """Text classification as a one-step episode (SST-2, TREC, or your own TSV/CSV).

    ## Description
    Each episode shows one text; the agent answers with a label and the episode ends.
    Scored with accuracy.

    ## Action Space
    ``Discrete(n_labels)``: an index into ``env.unwrapped.core.labels`` (the train split's
    labels, sorted; SST-2: ``0`` negative, ``1`` positive; TREC: ABBR DESC ENTY HUM LOC NUM).

    ## Observation Space
    | key | dtype | shape | meaning |
    |---|---|---|---|
    | input_ids | int32 | (max_length,) | ``[CLS]`` text sub-words ``[SEP]``, padded |
    | attention_mask | int8 | (max_length,) | 1 on real tokens |
    | action_mask | int8 | (n_labels,) | all ones (every label is valid) |

    ## Rewards
    1 for the gold label, 0 otherwise (optimum 1.0 per episode).

    ## Starting State
    A text drawn uniformly from the split (``shuffle=True``) or the next one in order.

    ## Episode End
    Termination after the single step; ``info["episode_metrics"]["accuracy"]``.

    ## Arguments
    ``split``, ``data_dir``, ``tokenizer``, ``max_length=64`` (longer texts are truncated,
    counted in ``core.n_truncated``), ``shuffle``, ``render_mode``. The generic
    ``lmgym/TextClassification-v0`` also takes ``data_files`` (a path or ``{split: path}``),
    ``text_column``, ``label_column``, ``delimiter`` (tab for .tsv, comma otherwise) and
    ``labels``. ``augment`` (off by default): e.g. ``{"drop": 0.1, "swap": 0.05, "mask": 0.1}``
    perturbs training episodes' tokens (:mod:`lmgym.envs.augment`; ignored on other splits).

    >>> import gymnasium as gym, lmgym
    >>> env = gym.make("lmgym/SST2-v0", data_dir="sample")
    >>> env.action_space
    Discrete(2)
    >>> env.unwrapped.core.label_names  # action i answers label_names[i]
    ('negative', 'positive')

    ## Version History
    * v0: initial release.
    """

    core_class = ClassificationCore


TextClassificationVectorEnv = vector_env(TextClassificationEnv)
