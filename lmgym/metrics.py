"""Corpus-level metrics, computed the way each field's standard tool computes them.

* NER: entity-level micro precision/recall/F1 from ``seqeval`` (conlleval semantics).
* Classification: accuracy.
* Translation: corpus sacreBLEU and chrF from ``sacrebleu``; sentence BLEU/chrF
  (:class:`SentenceScorer`) equal to ``sacrebleu``'s ``sentence_score``, each reference
  analysed once.
* Extractive QA: SQuAD v1.1 exact match and F1, as the official evaluation script
  (``evaluate-v1.1.py``) defines them: normalise, max over gold answers, mean over questions.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any


def bio_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """Entities ``(type, start, end_inclusive)`` of a BIO tag sequence (seqeval's chunking)."""
    from seqeval.metrics.sequence_labeling import get_entities

    return [(etype, start, end) for etype, start, end in get_entities(list(tags))]


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """seqeval entity-level micro scores over a corpus, plus token accuracy."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    gold, pred = [list(g) for g in gold], [list(p) for p in pred]
    n_tokens = sum(len(g) for g in gold)
    correct = sum(
        a == b for g, p in zip(gold, pred, strict=True) for a, b in zip(g, p, strict=True)
    )
    return {
        "entity_f1": float(f1_score(gold, pred, zero_division=0)),
        "entity_precision": float(precision_score(gold, pred, zero_division=0)),
        "entity_recall": float(recall_score(gold, pred, zero_division=0)),
        "token_accuracy": correct / max(n_tokens, 1),
        "sentences": float(len(gold)),
    }


def accuracy(gold: Sequence[object], pred: Sequence[object]) -> dict[str, float]:
    """Fraction of exact label matches."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} references but {len(pred)} predictions")
    return {
        "accuracy": sum(g == p for g, p in zip(gold, pred, strict=True)) / max(len(gold), 1),
        "examples": float(len(gold)),
    }


def translation_scores(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus sacreBLEU (13a tokenisation, default settings) and chrF."""
    import sacrebleu

    refs = [list(references)]
    return {
        "bleu": float(sacrebleu.corpus_bleu(list(hypotheses), refs).score),
        "chrf": float(sacrebleu.corpus_chrf(list(hypotheses), refs).score),
        "sentences": float(len(references)),
    }


# -- sentence BLEU / chrF, each reference analysed once -------------------------------------
#: The characters sacreBLEU's 13a tokenizer pads with spaces wherever they occur: its first
#: regex ``([\{-\~\[-\` -\&\(-\+\:-\@\/])`` has no context, so ``str.translate`` equals it.
_13A_PADDED = str.maketrans({c: f" {c} " for c in '{|}~[\\]^_` !"#$%&()*+:;<=>?@/'})
_13A_CONTEXT = (
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
)


def tokenize_13a(line: str) -> str:
    """sacreBLEU's default ``13a`` tokenisation (``Tokenizer13a``), the same output, faster.

    The context-free first substitution is a ``str.translate``; the three context
    substitutions (periods, commas, dashes next to digits) are sacreBLEU's own regexes,
    skipped when the line has none of their characters.
    """
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&")
        line = line.replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} ".translate(_13A_PADDED)
    if "." in line or "," in line:
        for pattern, repl in _13A_CONTEXT[:2]:
            line = pattern.sub(repl, line)
    if "-" in line:
        pattern, repl = _13A_CONTEXT[2]
        line = pattern.sub(repl, line)
    return " ".join(line.split())


def _may_overlap(gram: str) -> bool:
    """Whether two occurrences of ``gram`` can overlap (then ``str.count``, which counts
    non-overlapping ones, could undercount): only if it has a proper prefix equal to a
    suffix, which needs its first character to occur again."""
    return gram[0] in gram[1:] and any(gram[:k] == gram[-k:] for k in range(1, len(gram)))


def _overlapping_count(text: str, gram: str) -> int:
    count, at = 0, text.find(gram)
    while at >= 0:
        count += 1
        at = text.find(gram, at + 1)
    return count


def _bleu_analysis(reference: str) -> list:
    """A fresh :class:`SentenceScorer` cache entry: the 13a words, their set, no n-grams yet."""
    words = tokenize_13a(reference.rstrip()).split()
    return [words, frozenset(words), {}]


class SentenceScorer:
    """Sentence BLEU and chrF against a fixed list of references, equal to sacreBLEU's
    ``BLEU(effective_order=True).sentence_score(h, [r]).score`` (13a tokenisation,
    exponential smoothing) and ``CHRF().sentence_score(h, [r]).score``.

    Each reference is analysed once, on first use (an n-gram order when a hypothesis
    first reaches it), and kept while it is among the ``max_cached`` most recently used
    (about 30 KiB each with every order built; the cache grows to twice the largest batch
    scored, so the references of every episode in flight stay). A hypothesis is scored from
    the n-grams it shares with its reference only: every matching n-gram starts with a
    reference word (BLEU) or is a reference character n-gram (chrF, counted with
    ``str.count``, or an overlapping count where occurrences can overlap); the n-gram totals
    follow from the lengths. The final arithmetic is sacreBLEU's own (``BLEU.compute_bleu``,
    ``CHRF._compute_f_score``), so the floats are identical.

    :param references: the reference sentence of each example (indexable by example id).
    :param max_cached: how many analysed references to keep (least recently used dropped).
    """

    METRICS = ("bleu", "chrf")

    def __init__(self, references: Sequence[str], max_cached: int = 4096) -> None:
        from sacrebleu.metrics import BLEU, CHRF

        self.references = references
        self._bleu, self._chrf = BLEU(effective_order=True), CHRF()
        self._compute_bleu = BLEU.compute_bleu
        self._max_order, self._char_order = self._bleu.max_ngram_order, self._chrf.char_order
        if self._chrf.word_order or self._chrf.whitespace or self._chrf.lowercase:
            raise AssertionError("SentenceScorer assumes sacreBLEU's default chrF settings")
        if max_cached < 1:
            raise ValueError(f"max_cached must be >= 1, got {max_cached}")
        self.max_cached = max_cached
        self._bleu_refs: dict[int, list] = {}  # in least- to most-recently-used order
        self._chrf_refs: dict[int, list] = {}

    # -- references, analysed once (each n-gram order on first need) ------------------------
    def _cached(self, cache: dict[int, list], example: int, analyse: Callable[[str], list]) -> list:
        """``analyse(reference)`` of ``example`` from ``cache`` (least-recently-used first;
        the oldest entry goes once ``max_cached`` are held)."""
        ref = cache.pop(example, None)
        if ref is None:
            if len(cache) >= self.max_cached:
                del cache[next(iter(cache))]
            ref = analyse(self.references[example])
        cache[example] = ref
        return ref

    def _bleu_ref(self, example: int) -> list:
        """``[words, their set, {n: Counter of n-grams}]`` of reference ``example`` (13a)."""
        return self._cached(self._bleu_refs, example, _bleu_analysis)

    def _chrf_ref(self, example: int) -> list:
        """``[characters without whitespace, {n: Counter of n-grams}]`` of reference ``example``."""
        return self._cached(self._chrf_refs, example, lambda text: ["".join(text.split()), {}])

    @staticmethod
    def _grams(orders: dict, n: int, seq: Any) -> dict:
        grams = orders.get(n)
        if grams is None:
            if isinstance(seq, str):
                grams = Counter([seq[i : i + n] for i in range(len(seq) - n + 1)])
            else:
                grams = Counter([tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)])
            orders[n] = grams
        return grams

    # -- scores ---------------------------------------------------------------------------------
    def bleu(self, hypothesis: str, example: int) -> float:
        """Sentence BLEU (0-100) of ``hypothesis`` against reference ``example``."""
        ref_words, ref_set, ref_orders = self._bleu_ref(example)
        words = tokenize_13a(hypothesis.rstrip()).split()
        hyp_len, max_order = len(words), self._max_order
        correct = [0] * max_order
        starts = [i for i, w in enumerate(words) if w in ref_set]
        # Every matching n-gram starts with a reference word; with no n-gram match there
        # is no (n+1)-gram match either.
        n = 1
        while starts and n <= max_order:
            grams = self._grams(ref_orders, n, ref_words)
            last = hyp_len - n
            found = Counter(
                g for i in starts if i <= last and (g := tuple(words[i : i + n])) in grams
            )
            if not found:
                break
            correct[n - 1] = sum(min(c, grams[g]) for g, c in found.items())
            n += 1
        total = [max(hyp_len - n + 1, 0) for n in range(1, max_order + 1)]
        b = self._bleu
        return self._compute_bleu(
            correct,
            total,
            hyp_len,
            len(ref_words),
            smooth_method=b.smooth_method,
            smooth_value=b.smooth_value,
            effective_order=b.effective_order,
            max_ngram_order=max_order,
        ).score

    def chrf(self, hypothesis: str, example: int) -> float:
        """Sentence chrF (0-100) of ``hypothesis`` against reference ``example``."""
        ref_line, ref_orders = self._chrf_ref(example)
        line = "".join(hypothesis.split())
        size = len(line)
        stats: list[int] = []
        # The reference's (n-1)-grams found in line: an n-gram occurs only if both of its
        # (n-1)-grams do.
        present: set[str] | None = None
        for n in range(1, self._char_order + 1):
            n_ref = max(len(ref_line) - n + 1, 0)
            match = 0
            found: set[str] = set()
            if size >= n and n_ref and (present is None or present):
                grams = self._grams(ref_orders, n, ref_line)
                for gram, ref_count in grams.items():
                    if present is not None and (
                        gram[:-1] not in present or gram[1:] not in present
                    ):
                        continue
                    count = line.count(gram)  # 0 exactly when gram does not occur
                    if count and _may_overlap(gram):
                        count = _overlapping_count(line, gram)
                    if count:
                        found.add(gram)
                        match += min(count, ref_count)
            present = found
            stats.extend((max(size - n + 1, 0) if n_ref else 0, n_ref, match))
        return self._chrf._compute_f_score(stats)

    def scores(
        self, metric: str, hypotheses: Sequence[str], examples: Sequence[int]
    ) -> list[float]:
        """``metric`` (``"bleu"`` or ``"chrf"``) of each hypothesis against its example's reference."""
        if metric not in self.METRICS:
            raise ValueError(f"metric={metric!r}: choose one of {self.METRICS}")
        score = self.bleu if metric == "bleu" else self.chrf
        self.max_cached = max(self.max_cached, 2 * len(hypotheses))
        return [score(h, int(e)) for h, e in zip(hypotheses, examples, strict=True)]


# -- SQuAD v1.1 (official evaluation script semantics) ---------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
#: Deletes ``string.punctuation``: the official ``"".join(ch for ch in s if ch not in exclude)``.
_NO_PUNCT = str.maketrans("", "", string.punctuation)
_PUNCT_BYTES = string.punctuation.encode("ascii")
_ARTICLE_WORDS = frozenset(("a", "an", "the"))


def _answer_tokens(text: str) -> list[str]:
    """``normalize_answer(text).split()``.

    Fast path: when the lower-cased text is ASCII and, once its punctuation is deleted,
    every whitespace-separated token is alphanumeric, the regex's word boundaries are the
    token boundaries, so removing articles is dropping the tokens ``a``/``an``/``the``.
    """
    text = text.lower()
    if text.isascii():
        tokens = text.encode("ascii").translate(None, _PUNCT_BYTES).decode("ascii").split()
        joined = "".join(tokens)
        if not joined or joined.isalnum():
            return [t for t in tokens if t not in _ARTICLE_WORDS]
    return _ARTICLES.sub(" ", text.translate(_NO_PUNCT)).split()


def normalize_answer(text: str) -> str:
    """Lower-case, strip punctuation, articles and extra whitespace (SQuAD v1.1)."""
    return " ".join(_answer_tokens(text))


def squad_f1(prediction: str, ground_truth: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(ground_truth).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_em(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


class NormalizedAnswer:
    """A gold answer normalised once (SQuAD v1.1): its normalised text, token count and
    token counts, so :func:`squad_best_f1_em` only normalises the prediction.

    :param text: the raw gold answer.
    """

    __slots__ = ("counts", "n_tokens", "text")

    def __init__(self, text: str) -> None:
        tokens = _answer_tokens(text)
        self.text = " ".join(tokens)
        self.n_tokens = len(tokens)
        self.counts = Counter(tokens)


def squad_best_f1_em(prediction: str, golds: Sequence[NormalizedAnswer]) -> tuple[float, float]:
    """``(max F1, max EM)`` of ``prediction`` over ``golds``: equal to
    ``max(squad_f1(prediction, g) for g in raw_golds)`` and the same with ``squad_em``
    (the prediction is normalised once, with the same arithmetic)."""
    pred_tokens = _answer_tokens(prediction)
    normalized = " ".join(pred_tokens)
    pred_counts = None
    best_f1 = best_em = 0.0
    for gold in golds:
        if normalized == gold.text:
            best_em = 1.0
        counts = gold.counts
        if counts.keys().isdisjoint(pred_tokens):
            continue  # no common token: F1 0
        if pred_counts is None:
            pred_counts = Counter(pred_tokens).items()
        same = 0
        for word, c in pred_counts:
            g = counts.get(word)
            if g:
                same += c if c < g else g
        precision, recall = same / len(pred_tokens), same / gold.n_tokens
        best_f1 = max(best_f1, 2 * precision * recall / (precision + recall))
    return best_f1, best_em


def squad_scores(answers: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
    """Corpus EM/F1 (percent, as the official script prints them): max over gold answers."""
    if len(answers) != len(predictions):
        raise ValueError(f"{len(answers)} questions but {len(predictions)} predictions")
    em = sum(
        max(squad_em(p, g) for g in golds) for p, golds in zip(predictions, answers, strict=True)
    )
    f1 = sum(
        max(squad_f1(p, g) for g in golds) for p, golds in zip(predictions, answers, strict=True)
    )
    n = max(len(answers), 1)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n, "questions": float(len(answers))}
