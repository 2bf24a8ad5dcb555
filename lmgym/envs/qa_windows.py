"""Extractive QA data: SQuAD sources and the question/context windows (BERT's
``run_squad.py`` cutting), used by :mod:`lmgym.envs.qa`."""

from __future__ import annotations

from typing import Any

import numpy as np

from lmgym.batch_squad import BatchSpanScorer, analyse_spans
from lmgym.data.errors import DataFormatError
from lmgym.data.loaders import PackedTexts, SquadQuestion, read_squad
from lmgym.data.sources import Source, dataset_source, file_source
from lmgym.envs.dataset import pad_rows
from lmgym.metrics import NormalizedAnswer, squad_best_f1_em


def squad_source(dataset: str, data_files: Any, split: str, data_dir: Any) -> Source:
    """One split of a SQuAD v1.1 JSON corpus (``data_files`` of your own, or ``dataset``'s)."""
    if data_files is not None:
        return file_source(data_files, split, read_squad)
    return dataset_source(dataset, split, data_dir, read_squad, hub_reader=_squad_from_hub)


def _squad_from_hub(data: Any) -> list[SquadQuestion]:
    paragraphs: dict[str, int] = {}
    out = []
    for r in data:
        p = paragraphs.setdefault(r["context"], len(paragraphs))
        answers = tuple(zip(r["answers"]["text"], r["answers"]["answer_start"], strict=True))
        out.append(SquadQuestion(r["id"], r["question"], r["context"], answers, p))
    return out


def token_span(offsets: np.ndarray, char_start: int, char_end: int) -> tuple[int, int]:
    """First and last context token overlapping ``[char_start, char_end)`` (``(-1, -1)`` if none)."""
    first = int(np.searchsorted(offsets[:, 1], char_start, side="right"))
    last = int(np.searchsorted(offsets[:, 0], char_end, side="left")) - 1
    if first >= len(offsets) or last < first:
        return -1, -1
    return first, last


def window_starts(n_context: int, capacity: int, doc_stride: int) -> list[tuple[int, int]]:
    """``(first token, length)`` of each window, as BERT's ``run_squad.py`` cuts them."""
    out, start = [], 0
    while True:
        length = min(n_context - start, capacity)
        out.append((start, length))
        if start + length >= n_context:
            return out
        start += min(length, doc_stride)


def build_windows(core: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The tokenised windows of a :class:`~lmgym.envs.qa.QACore`'s split (its ``_build``).

    Each question is encoded as ``[CLS] question [SEP] context window [SEP]`` for every
    window (``windows="all"``) or for the one holding its answer with the most context
    around it (``"answer"``); the arrays give each window's row, context bounds
    ``lo``/``hi``, gold span, and the token offsets and texts that map spans back to text.
    """
    questions = core.questions()
    path = core._source.path or "hub data"
    info, L, mat = core.token_info, core.max_length, core.max_answer_tokens
    paragraph_of: dict[int, int] = {}
    contexts: list[str] = []
    for q in questions:
        if q.paragraph not in paragraph_of:
            paragraph_of[q.paragraph] = len(contexts)
            contexts.append(q.context)
    context_enc = core.tokenizer.encode_batch(contexts, add_special_tokens=False)
    question_enc = core.tokenizer.encode_batch(
        [q.question for q in questions], add_special_tokens=False
    )
    offsets = [np.asarray(e.offsets, dtype=np.int32).reshape(-1, 2) for e in context_enc]
    par_base = np.zeros(len(contexts) + 1, dtype=np.int64)
    par_base[1:] = np.cumsum([len(o) for o in offsets])

    rows: list[list[int]] = []
    columns: dict[str, list[int]] = {
        k: [] for k in ("length", "lo", "hi", "win_start", "question", "gold_start", "gold_end")
    }
    answers: list[str] = []
    answer_base = [0]
    n_unreachable = n_long = n_query_truncated = 0
    for qi, (q, q_enc) in enumerate(zip(questions, question_enc, strict=True)):
        p = paragraph_of[q.paragraph]
        ctx_ids, off = context_enc[p].ids, offsets[p]
        if not ctx_ids:
            raise DataFormatError(path, None, f"{q.where or q.qid}: the context has no tokens")
        q_ids = q_enc.ids[: core.max_query_length] or [info.unk_id]
        n_query_truncated += len(q_enc.ids) > core.max_query_length
        lo = len(q_ids) + 2
        spans = []
        for text, char_start in q.answers:
            first, last = token_span(off, char_start, char_start + len(text))
            if first < 0:
                raise DataFormatError(
                    path,
                    None,
                    f"{q.where or q.qid}: answer {text!r} covers no token of the context",
                )
            spans.append((first, last))
        answers.extend(text for text, _ in q.answers)
        answer_base.append(len(answers))
        windows = window_starts(len(ctx_ids), L - lo - 1, core.doc_stride)

        def gold_in(window: tuple[int, int], spans=spans) -> tuple[int, int] | None:
            ws, wl = window
            inside = [(a, b) for a, b in spans if a >= ws and b < ws + wl]
            fitting = [(a, b) for a, b in inside if b - a < mat]
            return fitting[0] if fitting else (inside[0] if inside else None)

        if core.windows == "answer":
            scored = [
                (min(g[0] - w[0], w[0] + w[1] - 1 - g[1]), -k)
                for k, w in enumerate(windows)
                if (g := gold_in(w)) is not None
            ]
            if scored:
                chosen = [windows[-max(scored)[1]]]
            else:
                n_unreachable += 1
                chosen = [
                    next((w for w in windows if w[0] <= spans[0][0] < w[0] + w[1]), windows[0])
                ]
        else:
            chosen = windows
        for ws, wl in chosen:
            gold = gold_in((ws, wl))
            if gold is not None and gold[1] - gold[0] >= mat:
                n_long += 1
                gold = (gold[0], gold[0] + mat - 1)
            row = [info.cls_id, *q_ids, info.sep_id, *ctx_ids[ws : ws + wl], info.sep_id]
            rows.append(row)
            columns["length"].append(len(row))
            columns["lo"].append(lo)
            columns["hi"].append(lo + wl)
            columns["win_start"].append(ws)
            columns["question"].append(qi)
            columns["gold_start"].append(-1 if gold is None else gold[0] - ws + lo)
            columns["gold_end"].append(-1 if gold is None else gold[1] - ws + lo)
    n = len(rows)
    input_ids, _ = pad_rows(rows, L, info.pad_id)
    arrays: dict[str, Any] = {"input_ids": input_ids}
    arrays.update({k: np.asarray(v, dtype=np.int32) for k, v in columns.items()})
    arrays["token_offsets"] = (
        np.concatenate(offsets) if offsets else np.zeros((0, 2), dtype=np.int32)
    )
    arrays["par_base"] = par_base
    arrays["question_par"] = np.array(
        [paragraph_of[q.paragraph] for q in questions], dtype=np.int32
    )
    arrays["answer_base"] = np.asarray(answer_base, dtype=np.int64)
    for name, texts in (
        ("context", contexts),
        ("question", [q.question for q in questions]),
        ("qid", [q.qid for q in questions]),
        ("answer", answers),
    ):
        packed = PackedTexts.pack(texts)
        arrays[f"{name}_data"], arrays[f"{name}_offsets"] = packed["data"], packed["offsets"]
    meta = {
        "n_examples": n,
        "n_questions": len(questions),
        "n_unreachable": n_unreachable,
        "n_long_answers": n_long,
        "n_query_truncated": n_query_truncated,
    }
    return arrays, meta


class WindowTexts:
    """From window positions back to text, and the gold answers: the part of
    :class:`~lmgym.envs.qa.QACore` that reads the packed texts and token offsets."""

    data: dict[str, np.ndarray]
    contexts: PackedTexts
    answer_texts: PackedTexts
    allow_no_answer: bool
    _golds: list[tuple[NormalizedAnswer, ...]] | None
    _context_cache: dict[int, str]
    _span_scorer: BatchSpanScorer | None

    def gold_answers(self, question: int) -> list[str]:
        base = self.data["answer_base"]
        return [self.answer_texts[j] for j in range(int(base[question]), int(base[question + 1]))]

    def normalized_golds(self, question: int) -> tuple[NormalizedAnswer, ...]:
        """The gold answers of ``question``, SQuAD-normalised (all questions done once),
        without repeats: answers equal after normalisation score alike, so the max over
        them is unchanged (SQuAD dev questions often list one answer three times)."""
        return self._all_golds()[question]

    def _all_golds(self) -> list[tuple[NormalizedAnswer, ...]]:
        if self._golds is None:
            base = self.data["answer_base"].tolist()
            answers = [NormalizedAnswer(self.answer_texts[j]) for j in range(base[-1])]
            self._golds = [
                tuple({g.text: g for g in answers[a:b]}.values())
                for a, b in zip(base[:-1], base[1:], strict=True)
            ]
        return self._golds

    def _context(self, paragraph: int) -> str:
        text = self._context_cache.get(paragraph)
        if text is None:
            text = self._context_cache[paragraph] = self.contexts[paragraph]
        return text

    def predictions(
        self, windows: np.ndarray, starts: np.ndarray, ends: np.ndarray
    ) -> list[str | None]:
        """:meth:`prediction` of many ``(window, start, end)`` choices at once."""
        d = self.data
        lo, hi = d["lo"][windows], d["hi"][windows]
        paragraphs = d["question_par"][d["question"][windows]]
        inside = (lo <= starts) & (starts <= ends) & (ends < hi)
        base = d["par_base"][paragraphs] + d["win_start"][windows] - lo
        offsets = d["token_offsets"]
        char_start = np.where(inside, offsets[np.where(inside, base + starts, 0), 0], 0)
        char_end = np.where(inside, offsets[np.where(inside, base + ends, 0), 1], 0)
        abstain = (starts == 0) if self.allow_no_answer else np.zeros(len(windows), dtype=bool)
        out: list[str | None] = []
        for p, a, b, ok, no in zip(
            paragraphs.tolist(),
            char_start.tolist(),
            char_end.tolist(),
            inside.tolist(),
            abstain.tolist(),
            strict=True,
        ):
            out.append(None if no else self._context(p)[a:b] if ok else "")
        return out

    def span_scorer(self) -> BatchSpanScorer:
        """The split's :class:`~lmgym.batch_squad.BatchSpanScorer` (its analysis kept in the
        on-disk cache, keyed by the contexts, token offsets and answers)."""
        if self._span_scorer is None:
            from lmgym.data.cache import array_digest, cached_arrays, fingerprint

            d = self.data
            names = ("context_data", "context_offsets", "token_offsets", "par_base")
            names += ("answer_data", "answer_offsets", "answer_base")
            key = fingerprint(
                "batch-span-scorer-v1", array_digest(*(np.asarray(d[k]) for k in names))
            )
            arrays, _ = cached_arrays(
                "qa_spans",
                key,
                lambda: (
                    analyse_spans(
                        [self.contexts[i] for i in range(len(self.contexts))],
                        d["token_offsets"],
                        d["par_base"],
                        [self.answer_texts[j] for j in range(len(self.answer_texts))],
                        d["answer_base"],
                    ),
                    {},
                ),
            )
            self._span_scorer = BatchSpanScorer(arrays)
        return self._span_scorer

    def span_scores(
        self, windows: np.ndarray, starts: np.ndarray, ends: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """SQuAD ``(F1, EM)`` (``float64``, 0-1) of many ``(window, start, end)`` choices:
        :func:`~lmgym.metrics.squad_best_f1_em` of each :meth:`prediction` against the
        question's gold answers, 1 for "no answer here" in a window without a gold answer
        (else 0). Computed with numpy (:class:`~lmgym.batch_squad.BatchSpanScorer`), the
        few spans it cannot take through the string path; the same floats either way."""
        d = self.data
        windows = np.asarray(windows, dtype=np.int64)
        starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
        questions = d["question"][windows].astype(np.int64)
        lo, hi = d["lo"][windows], d["hi"][windows]
        inside = (lo <= starts) & (starts <= ends) & (ends < hi)
        abstain = (starts == 0) if self.allow_no_answer else np.zeros(len(windows), dtype=bool)
        base = d["par_base"][d["question_par"][questions]] + d["win_start"][windows] - lo
        spans = np.flatnonzero(inside & ~abstain)
        scorer = self.span_scorer()
        ids, span_lengths, fallback = scorer.words(
            base[spans] + starts[spans], base[spans] + ends[spans]
        )
        lengths = np.zeros(len(windows), dtype=np.int64)
        lengths[spans] = span_lengths  # "" (a span outside the context) has no words
        scored = np.flatnonzero(~abstain)
        f1 = np.empty(len(windows), dtype=np.float64)
        em = np.empty(len(windows), dtype=np.float64)
        f1[scored], em[scored] = scorer.scores(ids, lengths[scored], questions[scored])
        no_gold = (d["gold_start"][windows[abstain]] < 0).astype(np.float64)
        f1[abstain] = em[abstain] = no_gold
        if fallback.any():
            golds = self._all_golds()
            for k in spans[fallback].tolist():
                text = self.prediction(int(windows[k]), int(starts[k]), int(ends[k]))
                f1[k], em[k] = squad_best_f1_em(text or "", golds[int(questions[k])])
        return f1, em

    def _char_span(self, window: int, start: int, end: int) -> tuple[int, int]:
        """Character span of window positions ``start..end`` (both inside the context)."""
        d = self.data
        base = (
            int(d["par_base"][d["question_par"][d["question"][window]]])
            + int(d["win_start"][window])
            - int(d["lo"][window])
        )
        return int(d["token_offsets"][base + start, 0]), int(d["token_offsets"][base + end, 1])

    def prediction(self, window: int, start: int, end: int) -> str | None:
        """The text a ``(start, end)`` choice predicts: ``None`` = no answer in this window;
        ``""`` for a span outside the context or with ``end < start``; else an exact
        substring of the context."""
        lo, hi = int(self.data["lo"][window]), int(self.data["hi"][window])
        if self.allow_no_answer and start == 0:
            return None
        if not lo <= start <= end < hi:
            return ""
        char_start, char_end = self._char_span(window, start, end)
        context = self.contexts[int(self.data["question_par"][self.data["question"][window]])]
        return context[char_start:char_end]
