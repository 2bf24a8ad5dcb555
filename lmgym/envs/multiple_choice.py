"""Multiple-choice question answering: pick one of up to ``max_choices`` options."""

from __future__ import annotations

from typing import Any

import numpy as np

from lmgym.data.errors import DataFormatError, LmgymDataError
from lmgym.data.loaders import MultipleChoice, read_multiple_choice_jsonl
from lmgym.data.sources import Source, dataset_source, file_source
from lmgym.envs.base import LmgymEnv, vector_env
from lmgym.envs.core import LabelScoring, State, int_box, sel
from lmgym.envs.dataset import DataArgs, DatasetCore, positions


def _mc_source(dataset: str | None, data_files: Any, split: str, data_dir: Any) -> Source:
    if data_files is not None:
        return file_source(data_files, split, read_multiple_choice_jsonl)
    if dataset is None:
        raise LmgymDataError(
            "lmgym/MultipleChoiceQA-v0 needs data: data_dir= with an mcqa/ folder, or data_files="
        )
    return dataset_source(dataset, split, data_dir, read_multiple_choice_jsonl)


def _fit(lengths: list[int], budget: int) -> list[int]:
    """Cut the longest parts first until the lengths sum to at most ``budget`` (each keeps >= 1)."""
    if sum(lengths) <= budget:
        return lengths
    low, high = 1, max(lengths)
    while low < high:  # the largest cap c with sum(min(l, c)) <= budget
        mid = (low + high + 1) // 2
        if sum(min(n, mid) for n in lengths) <= budget:
            low = mid
        else:
            high = mid - 1
    return [min(n, low) for n in lengths]


class MultipleChoiceQACore(LabelScoring, DatasetCore[MultipleChoice]):
    """Batched one-step multiple choice. See :class:`MultipleChoiceQAEnv`."""

    family = "multiple_choice"
    gold_key = "answer"

    def __init__(
        self,
        *,
        dataset: str | None = "mcqa",
        max_length: int = 128,
        max_choices: int = 5,
        **data: Any,
    ) -> None:
        """:param data: the split, its files and the tokenizer (:class:`DataArgs`)."""
        args = DataArgs.of(self, data)
        self.set_sizes(max_choices=(max_choices, 2))
        if max_length < 2 * max_choices + 4:
            raise ValueError(
                f"max_length={max_length} is too short for {max_choices} choices: need >= {2 * max_choices + 4}"
            )
        self.max_length = max_length
        train = self.open_data(args, _mc_source, dataset)

        def train_texts():
            for e in train.load():
                if e.context:
                    yield e.context
                yield e.question
                yield from e.choices

        self.fit_tokenizer(args.tokenizer, train_texts, train.digest, args.vocab_size)
        self.load_arrays(
            "multiple_choice",
            "mcqa",
            self._source.digest,
            self.token_info.digest,
            max_length,
            max_choices,
        )
        self.label_counts = np.bincount(self.data["answer"], minlength=max_choices)

        L, C = max_length, max_choices
        self.define_spaces(C, choice_positions=int_box(L - 1, (C,), low=-1))

    #: The raw questions of the split (loaded lazily).
    examples = DatasetCore.records

    def _build(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        examples = self.examples()
        info, L, C = self.token_info, self.max_length, self.max_choices
        n = len(examples)
        rows: list[list[int]] = []
        positions = np.full((n, C), -1, dtype=np.int32)
        n_choices = np.zeros(n, dtype=np.int32)
        answer = np.zeros(n, dtype=np.int32)
        n_truncated = 0
        for i, e in enumerate(examples):
            if len(e.choices) > C:
                raise DataFormatError(
                    self._source.path or "data",
                    e.line or None,
                    f"{len(e.choices)} choices but max_choices={C}; pass max_choices={len(e.choices)} to gym.make",
                )
            parts = ([e.context] if e.context else []) + [e.question, *e.choices]
            encoded = [
                enc.ids or [info.unk_id]
                for enc in self.tokenizer.encode_batch(parts, add_special_tokens=False)
            ]
            fitted = _fit([len(p) for p in encoded], L - 1 - len(parts))
            n_truncated += fitted != [len(p) for p in encoded]
            row = [info.cls_id]
            first_choice = len(parts) - len(e.choices)
            for k, (ids, keep) in enumerate(zip(encoded, fitted, strict=True)):
                if k >= first_choice:
                    positions[i, k - first_choice] = len(row)
                row.extend(ids[:keep])
                row.append(info.sep_id)
            rows.append(row)
            n_choices[i] = len(e.choices)
            answer[i] = e.answer
        arrays = {
            **self.row_arrays(rows),
            "choice_positions": positions,
            "n_choices": n_choices,
            "answer": answer,
        }
        return arrays, {"n_examples": n, "n_truncated": n_truncated}

    def init_state(self, batch_size: int) -> State:
        n, C = batch_size, self.max_choices
        return {
            **self.row_state(n),
            "choice_positions": np.full((n, C), -1, dtype=np.int32),
            "action_mask": np.zeros((n, C), dtype=np.int8),
            "pred": np.full(n, -1, dtype=np.int32),
        }

    def load_examples(self, state: State, slots: np.ndarray, example_ids: np.ndarray) -> None:
        d = self.data
        self.load_rows(state, slots, example_ids)
        state["choice_positions"][slots] = d["choice_positions"][example_ids]
        state["action_mask"][slots] = (
            positions(self.max_choices) < d["n_choices"][example_ids][:, None]
        )
        state["pred"][slots] = -1

    def observe(self, state: State, slots: np.ndarray | None = None) -> dict[str, np.ndarray]:
        s = sel(slots)
        return {
            **self.row_observation(state, slots),
            "choice_positions": state["choice_positions"][s],
            "action_mask": state["action_mask"][s],
        }

    def action_masks(self, state: State, slots: np.ndarray | None = None) -> np.ndarray:
        return state["action_mask"][sel(slots)].astype(bool)

    def render_text(self, state: State, slot: int) -> str:
        ex, pred = int(state["example"][slot]), int(state["pred"][slot])
        e = self.examples()[ex]
        lines = [f"context  {e.context}"] if e.context else []
        lines.append(f"question {e.question}")
        for k, choice in enumerate(e.choices):
            mark = ("→ " if k == pred else "  ") + ("✓" if k == e.answer and pred >= 0 else " ")
            lines.append(f"  {mark} {k}. {choice}")
        return "\n".join(lines)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "truncated": self.n_truncated}


class MultipleChoiceQAEnv(LmgymEnv):
    """Multiple-choice question answering: pick one of up to ``max_choices`` options.

    ## Description
    One question per episode, with its options (and an optional passage) in one sequence:
    ``[CLS] (context [SEP]) question [SEP] choice_0 [SEP] choice_1 [SEP] ...``. The agent
    picks an option; scored with accuracy.

    Data: JSONL, one object a line with ``question`` (str), ``choices`` (list of >= 2 str)
    and ``answer`` — the 0-based index of the right choice, or its exact text (matching
    exactly one choice); optional ``context`` (str) and ``id``. The bundled sample
    (``data_dir="sample"``) is written by the lmgym authors; the catalogued layout is
    ``mcqa/{train,validation,test}.jsonl``; ``data_files=`` takes your own files.

    ## Action Space
    ``Discrete(max_choices)``: the index of a choice (options past the example's count are masked).

    ## Observation Space
    | key | dtype | shape | meaning |
    |---|---|---|---|
    | input_ids | int32 | (max_length,) | the sequence above, padded |
    | attention_mask | int8 | (max_length,) | 1 on real tokens |
    | choice_positions | int32 | (max_choices,) | position of the first token of each choice, -1 padding |
    | action_mask | int8 | (max_choices,) | 1 for the example's choices |

    ## Rewards
    1 for the right choice, 0 otherwise (optimum 1.0 per episode). A masked action is
    applied (and is wrong).

    ## Starting State
    A question drawn uniformly from the split (``shuffle=True``) or the next one in order.

    ## Episode End
    Termination after the single step; ``info["episode_metrics"]["accuracy"]``. Corpus
    metric: accuracy over the split.

    ## Arguments
    ``split``, ``data_dir``, ``data_files`` (a path or ``{split: path}``), ``tokenizer``
    (None = WordPiece trained on the train split's texts, ``"minilm"``, a path, a tokenizer
    object), ``max_length=128`` (when too long, the longest parts are cut first; every part
    keeps at least one token; counted in ``core.n_truncated``), ``max_choices=5`` (an example
    with more is an error naming the line), ``shuffle``, ``render_mode``.

    >>> import gymnasium as gym, lmgym
    >>> env = gym.make("lmgym/MultipleChoiceQA-v0", data_dir="sample")
    >>> env.action_space
    Discrete(5)

    ## Version History
    * v0: initial release.
    """

    core_class = MultipleChoiceQACore


MultipleChoiceQAVectorEnv = vector_env(MultipleChoiceQAEnv)


__all__ = ["MultipleChoiceQACore", "MultipleChoiceQAEnv", "MultipleChoiceQAVectorEnv"]
