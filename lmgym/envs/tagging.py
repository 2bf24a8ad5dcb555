"""Sequence-labelling data: CoNLL sources, BIO tag sets, their transition table and
reward weights (used by :mod:`lmgym.envs.ner`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lmgym.data.loaders import TaggedSentence, read_conll
from lmgym.data.sources import Source, dataset_source, file_source

#: CoNLL-2003 tag order (as in the Hugging Face ``conll2003`` dataset).
CONLL2003_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


def conll_source(
    dataset: str, data_files: Any, split: str, data_dir: Any, tag_column: int
) -> Source:
    """One split of a CoNLL corpus (``data_files`` of your own, or the catalogued ``dataset``)."""
    reader = lambda path: read_conll(path, tag_column=tag_column)  # noqa: E731
    if data_files is not None:
        return file_source(data_files, split, reader)
    return dataset_source(dataset, split, data_dir, reader, hub_reader=_conll_from_hub)


def _conll_from_hub(data: Any) -> list[TaggedSentence]:
    names = data.features["ner_tags"].feature.names
    return [
        TaggedSentence(tuple(r["tokens"]), tuple(names[t] for t in r["ner_tags"]))
        for r in data
        if r["tokens"]
    ]


def tag_set(sentences: list[TaggedSentence]) -> tuple[str, ...]:
    """Tags of a generic corpus: ``O`` then ``B-X, I-X`` for each type X, sorted."""
    types = sorted({t[2:] for s in sentences for t in s.tags if t != "O"})
    return ("O", *(f"{p}-{t}" for t in types for p in ("B", "I")))


def entity_types(tags: tuple[str, ...]) -> list[str]:
    """The entity types of a BIO tag set, sorted."""
    return sorted({t[2:] for t in tags if t != "O"})


def allowed_after(tags: tuple[str, ...], bio_mask: bool) -> np.ndarray:
    """``bool[1 + n_tags, n_tags]``: row ``p + 1`` lists the tags allowed after tag ``p``
    (row 0: at the start); with ``bio_mask`` an ``I-X`` tag only after ``B-X``/``I-X``."""
    n = len(tags)
    table = np.ones((n + 1, n), dtype=bool)
    for t, tag in enumerate(tags):
        if tag.startswith("I-") and bio_mask:
            table[:, t] = False
            for p, prev in enumerate(tags):
                if prev != "O" and prev[2:] == tag[2:]:
                    table[p + 1, t] = True
    return table


def valid_bio(table: np.ndarray, tag_ids: list[int]) -> bool:
    """Whether every tag of ``tag_ids`` is allowed after the one before (``table``: :func:`allowed_after`)."""
    prev = -1
    for t in tag_ids:
        if not table[prev + 1, t]:
            return False
        prev = t
    return True


def balanced_weights(tags: tuple[str, ...], gold: Any, power: float = 1.0) -> np.ndarray:
    """Per-tag reward weights ``p(tag) ** -power`` from the training split's gold tags,
    scaled so that the expert earns 1 per word on average.

    ``p`` is each tag's share of the gold tags. With ``power=1`` every tag that occurs earns
    the same in total (sklearn's ``class_weight="balanced"``: ``1 / (K p)`` for ``K``
    tags) and "always ``O``" earns ``1 / K``; ``power=0.5`` is a softer balance; ``0`` is
    the plain token reward. Tags absent from the split get the largest weight of the others.

    :param tags: the tag set, in action order.
    :param gold: an int array of gold tag ids (``-1`` = padding) or tagged sentences.
    :param power: how strongly rare tags are up-weighted.
    """
    if isinstance(gold, np.ndarray):
        ids = gold[gold >= 0]
    else:
        index = {t: i for i, t in enumerate(tags)}
        ids = np.array([index[t] for s in gold for t in s.tags if t in index], dtype=np.int64)
    counts = np.bincount(ids, minlength=len(tags)).astype(np.float64)
    present = counts > 0
    share = counts / max(counts.sum(), 1.0)
    weights = np.zeros(len(tags))
    weights[present] = share[present] ** -float(power)
    weights[present] /= (share[present] * weights[present]).sum()
    weights[~present] = weights[present].max() if present.any() else 1.0
    return weights.astype(np.float32)
