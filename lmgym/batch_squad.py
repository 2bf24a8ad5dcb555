"""SQuAD v1.1 F1 / EM of a whole batch of predicted context spans at once, with numpy.

:class:`BatchSpanScorer` gives the same floats as :func:`lmgym.metrics.squad_best_f1_em`
(so as the official ``evaluate-v1.1.py``) for many finished QA episodes together, where
normalising each predicted string in Python cost most of a vector step.

A prediction is a slice ``context[a:b]`` whose ends are token boundaries. SQuAD's
normalisation (lower-case, delete punctuation, replace the articles ``a``/``an``/``the``
by spaces, split on whitespace) acts within whitespace-separated *chunks* of the text: no
step looks across whitespace (the article regex's ``\\b`` sees whitespace and the string's
end alike, and ``str.lower``'s final-sigma rule stops at whitespace). So the normalised
words of a span are, in order: those of the partial chunk it starts in, those of every
whole chunk inside it, those of the partial chunk it ends in. The analysis, once per
split (kept in the on-disk cache), stores

* every context's whole-chunk words as ids, context after context, so the whole chunks of
  a span are one slice of ``words``;
* per context token, the words of the piece from the token's start to its chunk's end
  (``head``) and from its chunk's start to the token's end (``tail``), when that piece
  normalises to at most one word (else the span falls back to the string path);
* the de-duplicated gold answers of each question as word ids.

A batch then costs a few array passes: the clipped common-word count of each
(prediction, gold) pair from one sort, and EM from an element-wise comparison of
equal-length word sequences. The F1 arithmetic is the script's, operation by operation.
Spans starting and ending strictly inside one chunk, pieces with more than one word and
tokens whose text crosses whitespace are scored by :func:`~lmgym.metrics.squad_best_f1_em`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from lmgym.metrics import _answer_tokens

#: ``head``/``tail`` of a token whose piece has no normalised word / more than one.
NO_WORD, COMPLEX = -1, -2
_STARTS_CHUNK, _ENDS_CHUNK = 1, 2
_CHUNK = re.compile(r"\S+")


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``concat(arange(s, s + l))`` over the pairs, and which pair each entry comes from."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    first = np.cumsum(lengths) - lengths
    return starts[owner] + (np.arange(int(lengths.sum())) - first[owner]), owner


def analyse_spans(
    contexts: Sequence[str],
    token_offsets: np.ndarray,
    par_base: np.ndarray,
    answers: Sequence[str],
    answer_base: np.ndarray,
) -> dict[str, np.ndarray]:
    """The arrays :class:`BatchSpanScorer` needs (cacheable).

    :param contexts: the paragraphs.
    :param token_offsets: ``int[n_tokens, 2]`` character span of every context token,
        paragraph after paragraph (``par_base[p]`` is paragraph ``p``'s first token).
    :param par_base: ``int[len(contexts) + 1]``.
    :param answers: the raw gold answers, question after question
        (``answer_base[q]:answer_base[q + 1]`` are question ``q``'s).
    :param answer_base: ``int[n_questions + 1]``.
    """
    token_offsets = np.asarray(token_offsets)
    par_base = np.asarray(par_base, dtype=np.int64)
    if len(par_base) != len(contexts) + 1 or int(par_base[-1]) != len(token_offsets):
        raise ValueError(
            f"par_base must have len(contexts) + 1 = {len(contexts) + 1} entries ending at "
            f"the {len(token_offsets)} tokens; got {len(par_base)} ending at {par_base[-1]}"
        )
    vocab: dict[str, int] = {}
    word_of = vocab.setdefault

    def piece_word(text: str) -> int:
        tokens = _answer_tokens(text)
        if not tokens:
            return NO_WORD
        return word_of(tokens[0], len(vocab)) if len(tokens) == 1 else COMPLEX

    n_tokens = len(token_offsets)
    tok_chunk = np.full(n_tokens, -1, dtype=np.int32)
    head = np.full(n_tokens, NO_WORD, dtype=np.int32)
    tail = np.full(n_tokens, NO_WORD, dtype=np.int32)
    flags = np.zeros(n_tokens, dtype=np.int8)
    words: list[int] = []
    chunk_words = [0]
    n_chunks = 0
    for p, context in enumerate(contexts):
        spans = [m.span() for m in _CHUNK.finditer(context)]
        for a, b in spans:
            words.extend(word_of(w, len(vocab)) for w in _answer_tokens(context[a:b]))
            chunk_words.append(len(words))
        lo, hi = int(par_base[p]), int(par_base[p + 1])
        if hi > lo and spans:
            bounds = np.asarray(spans, dtype=np.int64)
            off = token_offsets[lo:hi].astype(np.int64)
            # The chunk holding each token's first and last character (-1: in whitespace).
            first = np.searchsorted(bounds[:, 1], off[:, 0], side="right")
            last = np.searchsorted(bounds[:, 1], off[:, 1] - 1, side="right")
            inside = (
                (off[:, 1] > off[:, 0])
                & (first == last)
                & (first < len(spans))
                & (bounds[np.minimum(first, len(spans) - 1), 0] <= off[:, 0])
            )
            c = np.minimum(first, len(spans) - 1)
            starts, ends = bounds[c, 0] == off[:, 0], bounds[c, 1] == off[:, 1]
            for k in np.flatnonzero(inside).tolist():
                a, b = int(off[k, 0]), int(off[k, 1])
                ca, cb = spans[c[k]]
                if not starts[k]:
                    head[lo + k] = piece_word(context[a:cb])
                if not ends[k]:
                    tail[lo + k] = piece_word(context[ca:b])
            tok_chunk[lo:hi] = np.where(inside, c + n_chunks, -1)
            flags[lo:hi] = np.where(inside, starts * _STARTS_CHUNK + ends * _ENDS_CHUNK, 0)
        n_chunks += len(spans)
    # Gold answers, de-duplicated by normalised text (the max over them is unchanged).
    answer_base = np.asarray(answer_base, dtype=np.int64)
    gold_base, gold_tok_base, gold_tokens = [0], [0], []
    for q in range(len(answer_base) - 1):
        seen: set[tuple[str, ...]] = set()
        for j in range(int(answer_base[q]), int(answer_base[q + 1])):
            tokens = tuple(_answer_tokens(answers[j]))
            if tokens not in seen:
                seen.add(tokens)
                gold_tokens.extend(word_of(w, len(vocab)) for w in tokens)
                gold_tok_base.append(len(gold_tokens))
        gold_base.append(len(gold_tok_base) - 1)
    return {
        "words": np.asarray(words, dtype=np.int32),
        "chunk_words": np.asarray(chunk_words, dtype=np.int64),
        "tok_chunk": tok_chunk,
        "tok_head": head,
        "tok_tail": tail,
        "tok_flags": flags,
        "gold_base": np.asarray(gold_base, dtype=np.int64),
        "gold_tok_base": np.asarray(gold_tok_base, dtype=np.int64),
        "gold_tokens": np.asarray(gold_tokens, dtype=np.int32),
        "n_words": np.asarray([len(vocab)], dtype=np.int64),
    }


class BatchSpanScorer:
    """SQuAD v1.1 ``(max F1, max EM)`` of many predicted context spans at once, equal to
    :func:`lmgym.metrics.squad_best_f1_em` float for float (see the module docstring).

    :param arrays: an :func:`analyse_spans` of the contexts, token offsets and answers.
    """

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.a = {k: np.asarray(v) for k, v in arrays.items()}
        self.n_words = max(int(self.a["n_words"][0]), 1)

    def words(
        self, first: np.ndarray, last: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The normalised word ids of the spans from token ``first[k]`` to token ``last[k]``
        (global token indices, ``first <= last``), one span after another.

        :return: ``(ids, lengths, fallback)``: the spans' words concatenated, the number of
            words of each span, and a bool per span that needs the string path (its
            length is then 0).
        """
        a = self.a
        chunk, flags = a["tok_chunk"], a["tok_flags"]
        cs, ce = chunk[first].astype(np.int64), chunk[last].astype(np.int64)
        starts = (flags[first] & _STARTS_CHUNK) > 0
        ends = (flags[last] & _ENDS_CHUNK) > 0
        head = np.where(starts, NO_WORD, a["tok_head"][first])
        tail = np.where(ends, NO_WORD, a["tok_tail"][last])
        cw = a["chunk_words"]
        lo = np.where(starts, cw[np.maximum(cs, 0)], cw[np.maximum(cs, 0) + 1])
        hi = np.where(ends, cw[np.maximum(ce, 0) + 1], cw[np.maximum(ce, 0)])
        fallback = (
            (cs < 0)
            | (ce < 0)
            | (head == COMPLEX)
            | (tail == COMPLEX)
            | ((cs == ce) & ~starts & ~ends)
        )
        has_head, has_tail = (head >= 0) & ~fallback, (tail >= 0) & ~fallback
        n_mid = np.where(fallback, 0, hi - lo)
        lengths = has_head + n_mid + has_tail
        base = np.cumsum(lengths) - lengths
        ids = np.empty(int(lengths.sum()), dtype=np.int64)
        ids[base[has_head]] = head[has_head]
        mid, owner = _ranges(lo, n_mid)
        ids[base[owner] + has_head[owner] + (mid - lo[owner])] = a["words"][mid]
        ids[(base + lengths - 1)[has_tail]] = tail[has_tail]
        return ids, lengths, fallback

    def scores(
        self, ids: np.ndarray, lengths: np.ndarray, questions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(max F1, max EM)`` (``float64``) of each word sequence (``ids`` cut by
        ``lengths``, as :meth:`words` gives them) over the gold answers of ``questions``."""
        a, V = self.a, self.n_words
        lengths = np.asarray(lengths, dtype=np.int64)
        questions = np.asarray(questions, dtype=np.int64)
        K = len(lengths)
        gb = a["gold_base"]
        n_gold = gb[questions + 1] - gb[questions]
        # One pair per (prediction, gold answer), grouped by prediction.
        gold, pair_owner = _ranges(gb[questions], n_gold)
        gtb = a["gold_tok_base"]
        g_start, g_len = gtb[gold], gtb[gold + 1] - gtb[gold]
        p_base = np.cumsum(lengths) - lengths
        p_len = lengths[pair_owner]
        # Clipped common words per pair: counts of (pair, word) keys on both sides.
        p_pos, p_pair = _ranges(p_base[pair_owner], p_len)
        p_keys, p_counts = np.unique(p_pair * V + ids[p_pos], return_counts=True)
        g_pos, g_pair = _ranges(g_start, g_len)
        g_keys, g_counts = np.unique(
            g_pair * V + a["gold_tokens"][g_pos].astype(np.int64), return_counts=True
        )
        at = np.minimum(np.searchsorted(g_keys, p_keys), max(len(g_keys) - 1, 0))
        hit = g_keys[at] == p_keys if len(g_keys) else np.zeros(len(p_keys), dtype=bool)
        common = np.where(hit, np.minimum(p_counts, g_counts[at] if len(g_keys) else 0), 0)
        same = np.bincount(p_keys // V, weights=common, minlength=len(gold)).astype(np.int64)
        f1 = np.zeros(len(gold), dtype=np.float64)
        ok = same > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = same / p_len
            recall = same / g_len
            f1[ok] = (2 * precision * recall / (precision + recall))[ok]
        # EM: equal lengths and equal words at every position.
        em = np.zeros(len(gold), dtype=np.float64)
        cand = np.flatnonzero(p_len == g_len)
        if len(cand):
            c_pos, c_pair = _ranges(np.zeros(len(cand), dtype=np.int64), g_len[cand])
            differ = (
                ids[p_base[pair_owner[cand]][c_pair] + c_pos]
                != a["gold_tokens"][g_start[cand][c_pair] + c_pos]
            )
            em[cand] = (
                np.bincount(c_pair, weights=differ.astype(np.float64), minlength=len(cand)) == 0
            )
        best_f1 = np.zeros(K, dtype=np.float64)
        best_em = np.zeros(K, dtype=np.float64)
        # Pairs are grouped by prediction: the max over each group.
        has = np.flatnonzero(n_gold > 0)
        if len(has):
            first_pair = (np.cumsum(n_gold) - n_gold)[has]
            best_f1[has] = np.maximum.reduceat(f1, first_pair)
            best_em[has] = np.maximum.reduceat(em, first_pair)
        return best_f1, best_em


__all__ = ["BatchSpanScorer", "analyse_spans"]
