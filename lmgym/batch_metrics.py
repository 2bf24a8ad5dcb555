"""Sentence BLEU and chrF of a whole batch of hypotheses at once, with numpy.

:class:`BatchSentenceScorer` gives the same floats as :class:`lmgym.metrics.SentenceScorer`
(so as sacreBLEU's ``sentence_score``) for many finished episodes together: the vector
envs end up to ``num_envs`` episodes in one step, where a Python loop over episodes cost
about 0.7 ms each. The references are analysed once, for the whole split (kept in the
on-disk cache), into per-reference n-gram ids; a batch then costs a few array passes per
n-gram order:

* every n-gram of a reference has a *local id* (equal n-grams of one reference share it)
  and a count; the local id of an n-gram follows from the local id of its first ``n - 1``
  symbols and the local unigram id of its last symbol, a lookup in a small dense table
  per episode (``D[n-1] x D[1]`` entries);
* a hypothesis position gets its unigram id from the episode's unigram table, and its
  n-gram id from the (n-1)-gram id there and the unigram id ``n - 1`` further on; only
  positions whose (n-1)-gram is in the reference are looked up at order ``n``;
* the clipped match count of an order is ``sum(min(hyp count, ref count))`` over the local
  ids (a ``bincount``), and the final arithmetic mirrors sacreBLEU's operation by
  operation (chrF vectorised, since it is only ``+ - * /``; BLEU's ``exp``/``log`` with
  :mod:`math` per episode, as sacreBLEU does).

Symbols are characters without whitespace (chrF) and 13a words (BLEU); a hypothesis
symbol that no reference holds never matches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np

from lmgym.metrics import _13A_CONTEXT, SentenceScorer, tokenize_13a

#: Joins the hypotheses of a batch for 13a tokenisation (a Unicode noncharacter; a batch
#: holding it is scored one by one instead).
_SEP = "\uffff"
#: The characters :func:`lmgym.metrics.tokenize_13a` pads with spaces, but the space itself.
_PADDED = '{|}~[\\]^_`!"#$%&()*+:;<=>?@/'
_PADDED_RE = re.compile(f"[{re.escape(_PADDED)}]")
#: Which code points ``str.split()`` splits on (none above U+3000; the last entry: all those).
_SPACE = np.array([chr(c).isspace() for c in range(0x3001)] + [False])


def _pad_match(match: re.Match) -> str:
    return f" {match.group()} "


def _context_rules(line: str) -> str:
    """The context substitutions of :func:`~lmgym.metrics.tokenize_13a`, on a line that
    has had the rest of 13a (the spaces they leave are collapsed by the final split)."""
    if "." in line or "," in line:
        line = f" {line} "
        for pattern, repl in _13A_CONTEXT[:2]:
            line = pattern.sub(repl, line)
    if "-" in line:
        pattern, repl = _13A_CONTEXT[2]
        line = pattern.sub(repl, line)
    return line


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``concat(arange(s, s + l))`` over the pairs, and which pair each entry comes from."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    first = np.cumsum(lengths) - lengths
    return starts[owner] + (np.arange(int(lengths.sum())) - first[owner]), owner


def analyse_sequences(
    symbols: np.ndarray, offsets: np.ndarray, n_symbols: int, max_order: int
) -> dict[str, np.ndarray]:
    """Local n-gram ids of many symbol sequences (sequence ``r`` is
    ``symbols[offsets[r]:offsets[r + 1]]``, symbols in ``0..n_symbols - 1``).

    Local ids are in sorted order of (local id of the first ``n - 1`` symbols, local
    unigram id of the last symbol), and local unigram ids in order of the symbols.

    :return: for each order ``n``: ``distinct{n}`` (the number of distinct n-grams of each
        sequence, ``int64``) and ``count{n}`` (the count of each local id, sequence after sequence); ``sym1``
        (the symbol of each local unigram id) and, for ``n >= 2``, ``prev{n}`` / ``last{n}``
        (the local ids of each n-gram's first ``n - 1`` symbols and of its last symbol),
        laid out like ``count{n}``.
    """
    n_seq = len(offsets) - 1
    lengths = np.diff(offsets)
    owner = np.repeat(np.arange(n_seq, dtype=np.int64), lengths)
    end = offsets[1:][owner]
    position = np.arange(len(symbols), dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    rank = None
    rank_owner = owner
    unigram_keys = prev_base = unigram_base = None
    for n in range(1, max_order + 1):
        valid = np.flatnonzero(position + n <= end)
        last = symbols[valid + n - 1].astype(np.int64)
        head = owner[valid] if rank is None else rank[valid]
        keys, inverse, counts = np.unique(
            head * n_symbols + last, return_inverse=True, return_counts=True
        )
        group = rank_owner[keys // n_symbols] if rank is not None else keys // n_symbols
        base = np.searchsorted(group, np.arange(n_seq))
        distinct = np.diff(np.append(base, len(keys)))
        full_rank = np.full(len(symbols), -1, dtype=np.int64)
        full_rank[valid] = inverse
        small = np.int16 if int(distinct.max(initial=0)) < 2**15 else np.int32
        if rank is None:
            unigram_keys, unigram_base = keys, base
            out["sym1"] = (keys % n_symbols).astype(np.int32)
        else:
            assert unigram_keys is not None and prev_base is not None and unigram_base is not None
            out[f"prev{n}"] = (keys // n_symbols - prev_base[group]).astype(small)
            unigram = np.searchsorted(unigram_keys, group * n_symbols + keys % n_symbols)
            out[f"last{n}"] = (unigram - unigram_base[group]).astype(np.int32)
        rank, rank_owner, prev_base = full_rank, group, base
        out[f"distinct{n}"] = distinct.astype(np.int64)
        out[f"count{n}"] = counts.astype(small)
    return out


#: Sorted keys are looked up in a dense table when it has at most this many entries and
#: (a fresh table, :func:`_lookup`) not more than :data:`_DENSE_PER_QUERY` per query, else
#: by binary search (measured on Multi30k batches: filling an entry costs about a 200th of
#: a binary search; :class:`_KeyTable` fills none).
_DENSE_LOOKUP = 1 << 23
_DENSE_PER_QUERY = 256


def _lookup(
    keys: np.ndarray,
    query: np.ndarray,
    size: int,
    values: np.ndarray | None = None,
    missing: int = -1,
) -> np.ndarray:
    """The position of each ``query`` in the sorted, distinct ``keys`` (all in
    ``0..size - 1``), ``missing`` where it is not one of them; with ``values`` (``int32``
    when they fit), the value at that position instead."""
    if values is None:
        values = np.arange(len(keys), dtype=np.int32 if len(keys) < 2**31 else np.int64)
    if size <= min(_DENSE_LOOKUP, _DENSE_PER_QUERY * len(query)):
        table = np.full(size, missing, dtype=values.dtype)
        table[keys] = values
        return table[query]
    if not len(keys):
        return np.full(len(query), missing, dtype=values.dtype)
    at = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[at] == query, values[at], missing)


class _KeyTable:
    """Dense lookups (as :func:`_lookup`) in one table kept between calls: -1 at rest,
    only the keys' entries are written and then reset, so a lookup costs its keys and
    queries, not the key space (no fill, no fresh memory pages per batch)."""

    def __init__(self) -> None:
        self.table = np.empty(0, dtype=np.int32)

    def lookup(self, keys: np.ndarray, query: np.ndarray, size: int) -> np.ndarray:
        if size > _DENSE_LOOKUP or len(keys) >= 2**31:
            return _lookup(keys, query, size)
        if len(self.table) < size:
            self.table = np.full(size, -1, dtype=np.int32)
        table = self.table
        table[keys] = np.arange(len(keys), dtype=np.int32)
        try:
            return table[query]
        finally:
            table[keys] = -1


class _NgramTables:
    """The analysed references of one kind of symbol (see :func:`analyse_sequences`)."""

    def __init__(
        self, arrays: dict[str, np.ndarray], prefix: str, max_order: int, n_symbols: int
    ) -> None:
        self.max_order, self.n_symbols = max_order, max(n_symbols, 1)
        self.offsets = arrays[f"{prefix}offsets"]
        self.distinct = [arrays[f"{prefix}distinct{n}"] for n in range(1, max_order + 1)]
        self.count = [arrays[f"{prefix}count{n}"] for n in range(1, max_order + 1)]
        self.count_base = [np.cumsum(d) - d for d in self.distinct]
        self.sym1 = arrays[f"{prefix}sym1"]
        self.prev = [None, *(arrays[f"{prefix}prev{n}"] for n in range(2, max_order + 1))]
        self.last = [None, *(arrays[f"{prefix}last{n}"] for n in range(2, max_order + 1))]
        self._table = _KeyTable()  # for orders >= 2

    def matches(self, refs: np.ndarray, hyp: np.ndarray, owner: np.ndarray) -> np.ndarray:
        """Clipped n-gram matches ``int64[len(refs), max_order]`` of each hypothesis against
        reference ``refs[k]``.

        Order ``n`` numbers the distinct n-grams of the references still in play (those
        with a hypothesis position whose (n-1)-gram matched) one after another; in that
        order their keys ``(batch id of the first n - 1 symbols, local id of the last)``
        are sorted (see :func:`analyse_sequences`), so a hypothesis n-gram is found in a
        dense table or by binary search (:func:`_lookup`).

        :param hyp: the hypotheses' reference symbol ids one after another, each followed by
            a sentinel: a negative id or ``n_symbols`` (in no reference, never matches).
        :param owner: the hypothesis of each entry of ``hyp``.
        """
        E, width = len(refs), self.n_symbols + 1
        # 32-bit ids where they fit (half the memory traffic of the passes below).
        small = E * width < 2**31 and len(hyp) < 2**31
        itype = np.int32 if small else np.int64
        owner = owner.astype(itype, copy=False)
        correct = np.zeros((E, self.max_order), dtype=np.int64)
        # Unigrams: batch ids are positions in the references' distinct unigrams, in order;
        # each hypothesis position gets its episode's local unigram id, ``stride`` (beyond
        # every episode's unigrams) where its symbol is not in the reference.
        d1 = self.distinct[0][refs]
        index, episode = _ranges(self.count_base[0][refs], d1)
        gbase = (np.cumsum(d1) - d1).astype(itype)
        stride = int(d1.max(initial=0))
        keys = episode.astype(itype) * width + self.sym1[index]
        if hyp.min(initial=0) < 0:
            hyp = np.where(hyp < 0, width - 1, hyp)  # width - 1: a symbol in no reference
        query = owner * width + hyp.astype(itype, copy=False)
        local = np.arange(len(keys), dtype=itype) - gbase[episode]
        local_u = _lookup(keys, query, E * width, local, missing=stride)
        cand = np.flatnonzero(local_u < stride).astype(itype)
        current = local_u[cand] + gbase[owner[cand]]
        stride += 1  # n-gram keys: (n-1)-gram batch id * stride + local unigram id
        for n in range(1, self.max_order + 1):
            if n > 1:
                # The (n-1)-gram at i is in the reference; the n-gram is if its pair with the
                # unigram n-1 further on is (a position whose symbol is in no reference, as
                # the sentinels ending each hypothesis, has local id stride - 1: no key).
                if len(cand) > 8 * E:  # (nearly) every reference is still in play
                    active = np.arange(E)
                else:
                    active = np.flatnonzero(np.bincount(owner[cand], minlength=E))
                size = len(index) * stride
                dn = self.distinct[n - 1][refs[active]]
                index, k = _ranges(self.count_base[n - 1][refs[active]], dn)
                episode = active[k]
                ktype = np.int32 if size < 2**31 else np.int64
                keys = (gbase[episode] + self.prev[n - 1][index]).astype(ktype) * stride
                keys += self.last[n - 1][index]
                query = current.astype(ktype) * stride + local_u[cand + (n - 1)]
                at = self._table.lookup(keys, query, size)
                hit = np.flatnonzero(at >= 0)
                cand, current = cand[hit], at[hit]
                gbase = np.zeros(E, dtype=np.int64)
                gbase[active] = np.cumsum(dn) - dn
                gbase = gbase.astype(itype if len(index) < 2**31 else np.int64)
            if not len(cand):
                break
            hyp_counts = np.bincount(current, minlength=len(index))
            seen = np.flatnonzero(hyp_counts)
            clipped = np.minimum(hyp_counts[seen], self.count[n - 1][index[seen]])
            correct[:, n - 1] = np.bincount(episode[seen], weights=clipped, minlength=E).astype(
                np.int64
            )
        return correct


def analyse_references(references: Sequence[str], max_order: int = 4, char_order: int = 6):
    """The reference analysis :class:`BatchSentenceScorer` needs, as arrays (cacheable)."""
    words = [tokenize_13a(r.rstrip()).split() for r in references]
    vocab: dict[str, int] = {}
    word_ids = np.fromiter(
        (vocab.setdefault(w, len(vocab)) for ws in words for w in ws), dtype=np.int64
    )
    word_offsets = np.zeros(len(words) + 1, dtype=np.int64)
    word_offsets[1:] = np.cumsum([len(ws) for ws in words])
    lines = ["".join(r.split()) for r in references]
    chars = np.frombuffer("".join(lines).encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    char_offsets = np.zeros(len(lines) + 1, dtype=np.int64)
    char_offsets[1:] = np.cumsum([len(line) for line in lines])
    alphabet, char_ids = np.unique(chars, return_inverse=True)
    arrays: dict[str, np.ndarray] = {
        "w_symbols": word_ids,
        "w_offsets": word_offsets,
        "c_symbols": char_ids.astype(np.int32),
        "c_offsets": char_offsets,
        "alphabet": alphabet,
    }
    for name, value in analyse_sequences(
        word_ids, word_offsets, max(len(vocab), 1), max_order
    ).items():
        arrays[f"w_{name}"] = value
    for name, value in analyse_sequences(
        arrays["c_symbols"], char_offsets, max(len(alphabet), 1), char_order
    ).items():
        arrays[f"c_{name}"] = value
    # 13a words hold no whitespace: the vocabulary is stored as one newline-joined text.
    arrays["vocab"] = np.frombuffer("\n".join(vocab).encode("utf-8"), dtype=np.uint8)
    return arrays


class BatchSentenceScorer:
    """Sentence BLEU / chrF of many hypotheses at once, equal to
    :class:`lmgym.metrics.SentenceScorer` (and so to sacreBLEU) float for float.

    :param references: the reference sentence of each example.
    :param arrays: a precomputed :func:`analyse_references` of them (else computed here).
    """

    METRICS = ("bleu", "chrf")

    def __init__(
        self, references: Sequence[str], arrays: dict[str, np.ndarray] | None = None
    ) -> None:
        from sacrebleu.metrics import BLEU, CHRF

        bleu, chrf = BLEU(effective_order=True), CHRF()
        if bleu.smooth_method != "exp" or chrf.word_order or chrf.whitespace or chrf.eps_smoothing:
            raise AssertionError("BatchSentenceScorer assumes sacreBLEU's default settings")
        self.max_order, self.char_order, self.beta = (
            bleu.max_ngram_order,
            chrf.char_order,
            chrf.beta,
        )
        if arrays is None:
            arrays = analyse_references(references, self.max_order, self.char_order)
        blob = bytes(np.asarray(arrays["vocab"])).decode("utf-8")
        words = blob.split("\n") if blob else []
        self._vocab = {w: i for i, w in enumerate(words)}
        self._vocab[_SEP] = -2
        self.scalar = SentenceScorer(references)
        alphabet = np.asarray(arrays["alphabet"])
        self.words = _NgramTables(arrays, "w_", self.max_order, len(words))
        self.chars = _NgramTables(arrays, "c_", self.char_order, len(alphabet))
        top = int(alphabet.max(initial=0)) + 1
        # The last entry: beyond the alphabet; a character in no reference gets the
        # alphabet's size (see _NgramTables.matches).
        self._char_id = np.full(top + 1, max(len(alphabet), 1), dtype=np.int32)
        self._char_id[alphabet] = np.arange(len(alphabet))

    # -- hypotheses to symbol ids ---------------------------------------------------------------
    def _word_ids(self, hypotheses: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """13a words of each hypothesis as reference word ids (-1: in no reference), each
        hypothesis followed by a sentinel -2; which hypothesis each entry belongs to; and
        the number of words of each."""
        line = f" {_SEP} ".join(h.rstrip() for h in hypotheses)
        line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
        if "&" in line:
            line = line.replace("&quot;", '"').replace("&amp;", "&")
            line = line.replace("&lt;", "<").replace("&gt;", ">")
        line = _PADDED_RE.sub(_pad_match, line)
        if "." in line or "," in line or "-" in line:
            # 13a's context rules (periods and commas not next to a digit, dashes after one)
            # act within whitespace-separated words: run them on the lines that have those
            # characters (the rest of 13a is done).
            parts = [
                _context_rules(p) if ("." in p or "," in p or "-" in p) else p
                for p in line.split(_SEP)
            ]
            line = f" {_SEP} ".join(parts)
        words = line.split()
        get = self._vocab.get
        ids = np.fromiter(map(get, words, repeat(-1)), dtype=np.int64, count=len(words))
        ids = np.append(ids, -2)  # a sentinel after the last hypothesis too
        sep = ids == -2
        owner = np.cumsum(sep) - sep
        return ids, owner, np.bincount(owner, minlength=len(hypotheses)) - 1

    def _char_ids(self, hypotheses: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Characters (whitespace dropped) of each hypothesis as reference alphabet ids (the
        alphabet's size: in no reference), each hypothesis followed by a sentinel (the same
        id); which hypothesis each entry belongs to; and the number of characters of each."""
        n = len(hypotheses)
        lengths = np.fromiter(map(len, hypotheses), dtype=np.int64, count=n)
        cps = np.frombuffer(("\x00".join(hypotheses) + "\x00").encode("utf-32-le"), np.uint32)
        owner = np.repeat(np.arange(n, dtype=np.int32), lengths + 1)
        keep = np.flatnonzero(~_SPACE[np.minimum(cps, len(_SPACE) - 1)])  # "".join(h.split())
        cps, owner = cps[keep], owner[keep]
        sizes = np.bincount(owner, minlength=n) - 1  # the "\x00" after each is kept
        table = self._char_id
        ids = table[np.minimum(cps, len(table) - 1)]
        ids[np.cumsum(sizes + 1) - 1] = self.chars.n_symbols  # the sentinels
        return ids, owner, sizes

    # -- scores ---------------------------------------------------------------------------------
    def bleu(self, hypotheses: Sequence[str], examples: np.ndarray) -> np.ndarray:
        ids, owner, hyp_len = self._word_ids(hypotheses)
        correct = self.words.matches(examples, ids, owner)
        ref_len = np.diff(self.words.offsets)[examples]
        N = self.max_order
        total = np.maximum(hyp_len[:, None] - np.arange(N)[None, :], 0)
        # sacreBLEU's compute_bleu with exp smoothing: each zero-match order doubles the
        # smoothing divisor; orders stop at the first with no hypothesis n-gram.
        zero = correct == 0
        smooth = np.cumprod(np.where(zero, 2.0, 1.0), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            precisions = np.where(
                zero, 100.0 / (smooth * total), 100.0 * correct / np.maximum(total, 1)
            )
        eff = (total > 0).sum(axis=1)  # total is non-increasing in n
        out = np.zeros(len(hypotheses), dtype=np.float64)
        log, exp = math.log, math.exp
        rows = np.flatnonzero(correct.any(axis=1))
        for k, p, e, s, r in zip(
            rows.tolist(),
            precisions[rows].tolist(),
            eff[rows].tolist(),
            hyp_len[rows].tolist(),
            ref_len[rows].tolist(),
            strict=True,
        ):
            bp = exp(1 - r / s) if s < r else 1.0
            out[k] = bp * exp(sum([log(x) for x in p[:e]]) / e)
        return out

    def chrf(self, hypotheses: Sequence[str], examples: np.ndarray) -> np.ndarray:
        ids, owner, size = self._char_ids(hypotheses)
        match = self.chars.matches(examples, ids, owner)
        ref_len = np.diff(self.chars.offsets)[examples]
        eps, factor = 1e-16, float(self.beta**2)
        score = np.zeros(len(hypotheses), dtype=np.float64)
        avg_prec = np.zeros(len(hypotheses), dtype=np.float64)
        avg_rec = np.zeros(len(hypotheses), dtype=np.float64)
        effective = np.zeros(len(hypotheses), dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            for i in range(self.char_order):
                n_ref = np.maximum(ref_len - i, 0)
                n_hyp = np.where(n_ref > 0, np.maximum(size - i, 0), 0)
                m = match[:, i].astype(np.float64)
                prec = np.where(n_hyp > 0, m / n_hyp, eps)
                rec = np.where(n_ref > 0, m / n_ref, eps)
                denom = factor * prec + rec
                score = score + np.where(denom > 0, (1 + factor) * prec * rec / denom, eps)
                both = (n_hyp > 0) & (n_ref > 0)
                avg_prec = np.where(both, avg_prec + prec, avg_prec)
                avg_rec = np.where(both, avg_rec + rec, avg_rec)
                effective += both
            avg_prec = np.where(effective > 0, avg_prec / effective, 0.0)
            avg_rec = np.where(effective > 0, avg_rec / effective, 0.0)
            f = (1 + factor) * avg_prec * avg_rec
            f = f / (factor * avg_prec + avg_rec)
        return np.where(avg_prec + avg_rec != 0, 100 * f, 0.0)

    def scores(self, metric: str, hypotheses: Sequence[str], examples: Sequence[int]) -> np.ndarray:
        """``metric`` of each hypothesis against its example's reference (``float64``)."""
        if metric not in self.METRICS:
            raise ValueError(f"metric={metric!r}: choose one of {self.METRICS}")
        examples = np.asarray(examples, dtype=np.int64)
        if not len(hypotheses):
            return np.zeros(0, dtype=np.float64)
        if metric == "bleu" and any(_SEP in h for h in hypotheses):
            return np.array(self.scalar.scores(metric, hypotheses, examples), dtype=np.float64)
        score = self.bleu if metric == "bleu" else self.chrf
        return score(hypotheses, examples)


def cached_batch_scorer(references: Any) -> BatchSentenceScorer:
    """A :class:`BatchSentenceScorer` of packed references (a
    :class:`~lmgym.data.loaders.PackedTexts`), its analysis kept in the on-disk cache
    (keyed by the references' bytes)."""
    from lmgym.data.cache import array_digest, cached_arrays, fingerprint

    key = fingerprint(
        "batch-sentence-scorer-v3",
        array_digest(np.asarray(references.data), np.asarray(references.offsets)),
    )
    arrays, _ = cached_arrays(
        "translation_refs",
        key,
        lambda: (analyse_references([references[i] for i in range(len(references))]), {}),
    )
    plain = {k: v.view(np.ndarray) if isinstance(v, np.memmap) else v for k, v in arrays.items()}
    return BatchSentenceScorer(references, plain)
