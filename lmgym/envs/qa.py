"""Extractive question answering: point at the answer span in a paragraph (SQuAD v1.1).

Multiple choice lives in :mod:`lmgym.envs.multiple_choice` (re-exported here).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lmgym.data.loaders import PackedTexts, SquadQuestion
from lmgym.envs.base import LmgymEnv, vector_env
from lmgym.envs.core import State, int_box, sel
from lmgym.envs.dataset import DataArgs, DatasetCore
from lmgym.envs.multiple_choice import (  # noqa: F401  (re-exported: their former home)
    MultipleChoiceQACore,
    MultipleChoiceQAEnv,
    MultipleChoiceQAVectorEnv,
)
from lmgym.envs.qa_windows import WindowTexts, build_windows, squad_source
from lmgym.metrics import NormalizedAnswer, squad_scores

REWARD_MODES = ("f1", "em")
WINDOW_MODES = ("answer", "all")


class QACore(WindowTexts, DatasetCore[SquadQuestion]):
    """Batched two-step span selection. See :class:`QAEnv` for the behaviour."""

    family = "qa"
    reward_modes = REWARD_MODES

    def __init__(
        self,
        *,
        dataset: str = "squad",
        max_length: int = 384,
        doc_stride: int = 128,
        max_query_length: int = 64,
        max_answer_tokens: int = 30,
        windows: str | None = None,
        reward_mode: str = "f1",
        **data: Any,
    ) -> None:
        """:param data: the split, its files and the tokenizer (:class:`DataArgs`)."""
        args = DataArgs.of(self, data)
        self.set_reward_mode(reward_mode)
        if windows is None:
            windows = "answer" if args.split == "train" else "all"
        if windows not in WINDOW_MODES:
            raise ValueError(
                f"windows={windows!r}: choose one of {WINDOW_MODES} (None: 'answer' for train, 'all' otherwise)"
            )
        if max_query_length < 1 or max_length < max_query_length + 4:
            raise ValueError(
                f"max_length={max_length} leaves no room for the context after a question of up to "
                f"max_query_length={max_query_length} tokens: need max_length >= max_query_length + 4"
            )
        self.set_sizes(doc_stride=(doc_stride, 1), max_answer_tokens=(max_answer_tokens, 1))
        self.windows = windows
        self.max_length, self.max_query_length = max_length, max_query_length
        #: In ``windows="all"`` mode position 0 (``[CLS]``) as start means "no answer in this window".
        self.allow_no_answer = windows == "all"
        train = self.open_data(args, squad_source, dataset)

        def train_texts():
            seen: set[int] = set()
            for q in train.load():
                if q.paragraph not in seen:
                    seen.add(q.paragraph)
                    yield q.context
                yield q.question

        self.fit_tokenizer(args.tokenizer, train_texts, train.digest, args.vocab_size)
        meta = self.load_arrays(
            "qa",
            "qa",
            self._source.digest,
            self.token_info.digest,
            max_length,
            doc_stride,
            max_query_length,
            max_answer_tokens,
            windows,
        )
        arrays = self.data
        self.contexts = PackedTexts(arrays["context_data"], arrays["context_offsets"])
        self.question_texts = PackedTexts(arrays["question_data"], arrays["question_offsets"])
        self.question_ids = PackedTexts(arrays["qid_data"], arrays["qid_offsets"])
        self.answer_texts = PackedTexts(arrays["answer_data"], arrays["answer_offsets"])
        self.n_questions = int(meta["n_questions"])
        self.n_unreachable = int(meta["n_unreachable"])
        self.n_long_answers = int(meta["n_long_answers"])
        self.n_query_truncated = int(meta["n_query_truncated"])
        self._arange = np.arange(max_length)
        #: ``_below[k]`` is ``int8[L]``, 1 on positions ``< k``: the mask of positions
        #: ``a <= i < b`` is ``_below[b] - _below[a]`` (two row gathers, no comparisons).
        self._below = (self._arange < np.arange(max_length + 1)[:, None]).astype(np.int8)
        #: Gold answers normalised once, per question (built on the first scored episode).
        self._golds: list[tuple[NormalizedAnswer, ...]] | None = None
        self._context_cache: dict[int, str] = {}
        self._span_scorer = None

        L = max_length
        self.define_spaces(
            L,
            token_type_ids=int_box(1, (L,), dtype=np.int8),
            stage=int_box(1, (1,)),
            start=int_box(L - 1, (1,), low=-1),
        )

    # -- building the windows (cached) ----------------------------------------------------------
    #: The raw questions of the split (loaded lazily).
    questions = DatasetCore.records

    def _build(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return build_windows(self)

    def _end_bounds(
        self, start: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Allowed end positions ``[first, last)`` after choosing ``start``."""
        first = np.maximum(start, lo)
        last = np.minimum(hi, start + self.max_answer_tokens)
        empty = first >= last  # a masked start: allow any context token rather than nothing
        first, last = np.where(empty, lo, first), np.where(empty, hi, last)
        if self.allow_no_answer:
            abstain = start == 0
            first, last = np.where(abstain, 0, first), np.where(abstain, 1, last)
        return first, last

    # -- batched transitions ---------------------------------------------------------------------
    def init_state(self, batch_size: int) -> State:
        n, L = batch_size, self.max_length
        return {
            **self.row_state(n),
            "token_type_ids": np.zeros((n, L), dtype=np.int8),
            "action_mask": np.zeros((n, L), dtype=np.int8),
            "stage": np.zeros((n, 1), dtype=np.int32),
            "start": np.full((n, 1), -1, dtype=np.int32),
            "end": np.full(n, -1, dtype=np.int32),
            "lo": np.zeros(n, dtype=np.int32),
            "hi": np.zeros(n, dtype=np.int32),
            "f1": np.zeros(n, dtype=np.float64),
            "em": np.zeros(n, dtype=np.float64),
        }

    def load_examples(self, state: State, slots: np.ndarray, example_ids: np.ndarray) -> None:
        d, below = self.data, self._below
        lo, hi, length = d["lo"][example_ids], d["hi"][example_ids], d["length"][example_ids]
        state["example"][slots] = example_ids
        state["input_ids"][slots] = d["input_ids"][example_ids]
        state["attention_mask"][slots] = below[length]
        below_lo = below[lo]
        state["token_type_ids"][slots] = below[length] - below_lo  # lo <= length
        mask = below[hi] - below_lo  # lo < hi
        if self.allow_no_answer:
            mask[:, 0] = 1
        state["action_mask"][slots] = mask
        state["lo"][slots], state["hi"][slots] = lo, hi
        state["stage"][slots] = 0
        state["start"][slots] = -1
        state["end"][slots] = -1
        state["f1"][slots] = 0.0
        state["em"][slots] = 0.0

    def step(self, state: State, actions: np.ndarray, slots: np.ndarray | None = None):
        s = sel(slots)
        rows = np.arange(len(actions)) if slots is None else slots
        stage = state["stage"][s, 0]
        reward = np.zeros(len(actions), dtype=np.float32)
        choosing_start = stage == 0
        if choosing_start.any():
            r, a = rows[choosing_start], actions[choosing_start]
            state["start"][r, 0] = a
            state["stage"][r, 0] = 1
            first, last = self._end_bounds(a, state["lo"][r], state["hi"][r])
            state["action_mask"][r] = self._below[last] - self._below[first]  # first < last
        ending = np.flatnonzero(~choosing_start)
        if len(ending):
            r, ends = rows[ending], actions[ending]
            state["end"][r] = ends
            f1, em = self.span_scores(state["example"][r], state["start"][r, 0], ends)
            state["f1"][r], state["em"][r] = f1, em
            reward[ending] = f1 if self.reward_mode == "f1" else em
        terminated = ~choosing_start
        return reward, terminated, np.zeros_like(terminated)

    def observe(self, state: State, slots: np.ndarray | None = None) -> dict[str, np.ndarray]:
        s = sel(slots)
        return {
            **self.row_observation(state, slots),
            "token_type_ids": state["token_type_ids"][s],
            "action_mask": state["action_mask"][s],
            "stage": state["stage"][s],
            "start": state["start"][s],
        }

    def action_masks(self, state: State, slots: np.ndarray | None = None) -> np.ndarray:
        return state["action_mask"][sel(slots)].astype(bool)

    def expert_actions(self, state: State, slots: np.ndarray | None = None) -> np.ndarray:
        s = sel(slots)
        ex = state["example"][s]
        gold_start, gold_end = self.data["gold_start"][ex], self.data["gold_end"][ex]
        lo, hi = state["lo"][s], state["hi"][s]
        no_gold = 0 if self.allow_no_answer else lo
        start_action = np.where(gold_start >= 0, gold_start, no_gold)
        start = state["start"][s, 0]
        first, last = self._end_bounds(start, lo, hi)
        end_ok = (gold_start >= 0) & (gold_end >= first) & (gold_end < last)
        end_action = np.where(end_ok, gold_end, first)
        return np.where(state["stage"][s, 0] == 0, start_action, end_action).astype(np.int64)

    # -- scoring ---------------------------------------------------------------------------------
    def episode_metrics(self, state: State, slots: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "f1": state["f1"][slots].astype(np.float64),
            "exact_match": state["em"][slots].astype(np.float64),
        }

    def episode_record(self, state: State, slot: int) -> dict[str, Any]:
        window = int(state["example"][slot])
        start, end = int(state["start"][slot, 0]), int(state["end"][slot])
        lo, hi = int(self.data["lo"][window]), int(self.data["hi"][window])
        question = int(self.data["question"][window])
        pred = self.prediction(window, start, end)
        return {
            "example_id": window,
            "question_index": question,
            "question_id": self.question_ids[question],
            "prediction": pred,
            # BERT's "max context" score: context tokens on the span's shorter side in this window.
            "context_score": min(start - lo, hi - 1 - end) if pred else -1,
            "answers": self.gold_answers(question),
        }

    def corpus_metrics(self, records: list[dict[str, Any]]) -> dict[str, float]:
        """SQuAD v1.1 EM/F1 (percent) per question, windows combined.

        A question's prediction is the span of its window with the highest ``context_score``
        (the first such window on ties) among windows where the policy gave a span;
        ``""`` when it abstained in all of them (or gave no non-empty span).
        """
        best: dict[int, dict[str, Any]] = {}
        for record in records:
            q = record["question_index"]
            current = best.get(q)
            if current is None or (
                record["prediction"]
                and (
                    not current["prediction"] or record["context_score"] > current["context_score"]
                )
            ):
                best[q] = record
        chosen = list(best.values())
        result = squad_scores(
            [r["answers"] for r in chosen], [r["prediction"] or "" for r in chosen]
        )
        result["windows"] = float(len(records))
        return result

    def render_text(self, state: State, slot: int) -> str:
        window = int(state["example"][slot])
        d = self.data
        lo, hi = int(d["lo"][window]), int(d["hi"][window])
        question = int(d["question"][window])
        context = self.contexts[int(d["question_par"][question])]
        first, _ = self._char_span(window, lo, lo)
        _, last = self._char_span(window, hi - 1, hi - 1)
        start, end = int(state["start"][slot, 0]), int(state["end"][slot])
        text = context[first:last]
        if lo <= start < hi:
            a = self._char_span(window, start, start)[0] - first
            b = self._char_span(window, end, end)[1] - first if start <= end < hi else a
            text = f"{text[:a]}[[{text[a:b]}]]{text[b:]}" if end >= 0 else f"{text[:a]}[[{text[a:]}"
        if int(state["stage"][slot, 0]) == 0:
            pred = "(choosing the start)"
        elif end < 0:
            pred = (
                "(choosing the end)"
                if not (self.allow_no_answer and start == 0)
                else "(no answer here: choosing end 0)"
            )
        else:
            p = self.prediction(window, start, end)
            pred = "(no answer in this window)" if p is None else repr(p)
        lines = [
            f"question {self.question_texts[question]}",
            f"context  {text}",
            f"gold     {' | '.join(self.gold_answers(question))}",
            f"pred     {pred}",
        ]
        return "\n".join(lines)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "questions": self.n_questions,
            "unreachable": self.n_unreachable,
        }


class QAEnv(LmgymEnv):
    """Extractive question answering: point at the answer's first and last token (SQuAD v1.1).

    ## Description
    One (question, paragraph window) per episode. The observation is the question and the
    context encoded together, ``[CLS] question [SEP] context [SEP]``. The agent first
    points at the answer's start token, then at its end token; the span is mapped back to
    the context's characters through the tokenizer's offsets, so the predicted text is an
    exact substring of the paragraph, and scored with SQuAD v1.1's normalised F1 / EM.

    Paragraphs longer than a window are cut into overlapping windows as in BERT's
    ``run_squad.py``: a window holds ``max_length - len(question) - 3`` context tokens and
    the next one starts ``doc_stride`` tokens later. Which windows are episodes:

    * ``windows="answer"`` (default for ``split="train"``): one episode per question, on the
      window that contains its gold answer with the most context on both sides.
    * ``windows="all"`` (default otherwise, what evaluation needs): every window of every
      question is an episode (``core.n_examples`` windows, ``core.n_questions`` questions).
      Position 0 (``[CLS]``) is then also a valid start, meaning "the answer is not in this
      window" (end must then be 0 too), as BERT does for windows without the answer.

    **How evaluation combines windows.** ``core.episode_record`` gives each window's
    ``question_index``/``question_id``, its ``prediction`` (``None`` when the agent said
    "not in this window") and a ``context_score`` (BERT's max-context score: the number of
    context tokens on the span's shorter side inside the window). ``core.corpus_metrics``
    keeps, per question, the span of the window with the highest ``context_score`` (the
    first on ties) among windows that gave a span; a question where every window abstained
    predicts ``""``. The expert abstains in windows without a gold answer and so scores as
    if every question had one window. Run every window (``shuffle=False``, as
    ``lmgym.evaluate`` does) and pass all records.

    ## Action Space
    ``Discrete(max_length)``: a token position in ``input_ids`` (start at stage 0, end at stage 1).

    ## Observation Space
    | key | dtype | shape | meaning |
    |---|---|---|---|
    | input_ids | int32 | (max_length,) | ``[CLS]`` question ``[SEP]`` context window ``[SEP]``, padded |
    | attention_mask | int8 | (max_length,) | 1 on real tokens |
    | token_type_ids | int8 | (max_length,) | 0 on ``[CLS]`` question ``[SEP]``, 1 on context + final ``[SEP]`` |
    | action_mask | int8 | (max_length,) | stage 0: context tokens (+ ``[CLS]`` in ``windows="all"``); stage 1: ``start <= end < start + max_answer_tokens`` inside the context |
    | stage | int32 | (1,) | 0 choose the start, 1 choose the end |
    | start | int32 | (1,) | the chosen start, -1 before |

    ## Rewards
    0 for the start; after the end, ``reward_mode="f1"`` (default): SQuAD token F1 of the
    predicted text against the best gold answer (``metrics.squad_f1``: lower-case, no
    punctuation or articles); ``"em"``: exact match after the same normalisation. Saying
    "not in this window" scores 1 where the window holds no gold answer and 0 where it
    does. Optimum 1.0 per episode. Masked actions are applied, not refused: a span outside
    the context or with ``end < start`` predicts ``""`` (score 0).

    ## Starting State
    A window drawn uniformly from the split (``shuffle=True``) or the next one in order.

    ## Episode End
    Termination after the second step (the end). There is no truncation.
    ``info["episode_metrics"]``: ``f1`` and ``exact_match`` of the window (0-1).
    Corpus metrics (``lmgym.evaluate``): SQuAD v1.1 ``exact_match``/``f1`` in percent, as the
    official ``evaluate-v1.1.py`` computes them, over questions (windows combined as above).

    ## Arguments
    ``split`` (train/validation/test; the offline copy splits the official dev file by
    article, see ``lmgym.data.catalog``), ``data_dir``, ``data_files`` (SQuAD v1.1 JSON of
    your own: a path or ``{split: path}``), ``tokenizer`` (None = WordPiece trained on the
    train contexts and questions, ``"minilm"``, a path, a tokenizer object),
    ``max_length=384``, ``doc_stride=128``, ``max_query_length=64`` (longer questions are cut,
    ``core.n_query_truncated``), ``max_answer_tokens=30``, ``windows``, ``reward_mode``,
    ``shuffle``, ``render_mode``. Gold answers longer than ``max_answer_tokens`` are cut for
    the expert (``core.n_long_answers``); in ``windows="answer"`` mode a question whose answer
    fits no window gets the window holding the answer's start with no gold span
    (``core.n_unreachable``; 0 on SQuAD with the defaults).

    >>> import gymnasium as gym, lmgym
    >>> env = gym.make("lmgym/QA-v0", data_dir="sample")
    >>> obs, info = env.reset(seed=0)
    >>> int(obs["stage"][0]), int(obs["start"][0])
    (0, -1)

    ## Version History
    * v0: initial release.
    """

    core_class = QACore


QAVectorEnv = vector_env(QAEnv)


__all__ = [
    "REWARD_MODES",
    "MultipleChoiceQACore",
    "MultipleChoiceQAEnv",
    "MultipleChoiceQAVectorEnv",
    "QACore",
    "QAEnv",
    "QAVectorEnv",
]
