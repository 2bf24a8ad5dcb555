"""Corpus-level metrics, computed the way each field's standard tool computes them.

* NER: entity-level micro precision/recall/F1 from ``seqeval`` (conlleval semantics).
* Classification: accuracy.
* Translation: corpus sacreBLEU and chrF from ``sacrebleu``.
* Extractive QA: SQuAD v1.1 exact match and F1, as the official evaluation script
  (``evaluate-v1.1.py``) defines them: normalise, max over gold answers, mean over questions.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence


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


# -- SQuAD v1.1 (official evaluation script semantics) ---------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, strip punctuation, articles and extra whitespace (SQuAD v1.1)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


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
