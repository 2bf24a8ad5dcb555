"""Held-out datasets built from the shared corpora, for recipe carry-over checks.

The recipe of ``agents/hyperparams/ppo.yml`` was tuned on SST-2, TREC and CoNLL-2003. To
show that the default ``lmgym/TextClassification-v0`` recipe carries to a labelled CSV it
never saw, :func:`squad_topics` turns SQuAD v1.1 questions into a topic-classification
dataset: each question is labelled with the Wikipedia article it was asked about (the
``n_topics`` articles with the most questions). The questions are human-written and the
task is unrelated to sentiment or question type.

Nothing is committed: the TSV files are written (atomically) from ``LMGYM_DATA_DIR``.

>>> import tempfile, pathlib
>>> files = squad_topics(tempfile.mkdtemp())  # doctest: +SKIP
>>> sorted(files)  # doctest: +SKIP
['test', 'train', 'validation']
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from lmgym.data.cache import atomic_write_text, cache_root, file_digest, fingerprint
from lmgym.data.paths import data_roots

SPLITS = {"train": 0.7, "validation": 0.15, "test": 0.15}


def squad_source(data_dir: str | None = None) -> Path:
    """The SQuAD v1.1 dev file :func:`squad_topics` reads (``data_dir``, else ``$LMGYM_DATA_DIR``)."""
    found = [r / "squad" / "dev-v1.1.json" for r in data_roots(data_dir)]
    source = next((p for p in found if p.exists()), None)
    if source is None:
        raise FileNotFoundError(
            f"squad/dev-v1.1.json not found in {[str(r) for r in data_roots(data_dir)]}: "
            "pass data_dir= or point LMGYM_DATA_DIR at the folder holding squad/"
        )
    return source


def squad_topics(
    out_dir: str | Path, n_topics: int = 10, seed: int = 0, data_dir: str | None = None
) -> dict[str, str]:
    """Write ``{train,validation,test}.tsv`` (``label<TAB>text``) of SQuAD question topics.

    Args:
        out_dir: folder for the three files (created if missing).
        n_topics: how many articles (the ones with the most questions) become labels.
        seed: shuffles the questions before the 70/15/15 split.
        data_dir: the data folder (default ``$LMGYM_DATA_DIR``).

    Returns:
        ``{split: path}``, ready for ``gym.make("lmgym/TextClassification-v0",
        data_files=..., text_column="text", label_column="label")``.
    """
    articles = json.loads(squad_source(data_dir).read_text(encoding="utf-8"))["data"]
    articles = sorted(articles, key=lambda a: -sum(len(p["qas"]) for p in a["paragraphs"]))[
        :n_topics
    ]
    rows = [
        (a["title"], " ".join(q["question"].split()))
        for a in articles
        for p in a["paragraphs"]
        for q in p["qas"]
    ]
    random.Random(seed).shuffle(rows)
    out, files, start = Path(out_dir), {}, 0
    out.mkdir(parents=True, exist_ok=True)
    for i, (split, share) in enumerate(SPLITS.items()):
        end = len(rows) if i == len(SPLITS) - 1 else start + round(share * len(rows))
        lines = ["label\ttext"] + [f"{label}\t{text}" for label, text in rows[start:end]]
        path = out / f"{split}.tsv"
        atomic_write_text(path, "\n".join(lines) + "\n")
        files[split], start = str(path), end
    return files


#: name -> (builder, the source file it reads), for a leaderboard spec's ``derived_data:`` key
BUILDERS = {"squad_topics": (squad_topics, squad_source)}


def prepare(name: str) -> dict[str, str]:
    """Build dataset ``name`` of :data:`BUILDERS` under the lmgym cache once per source file
    (keyed by its digest, so other data never reads a stale build); ``{split: path}``."""
    if name not in BUILDERS:
        raise ValueError(f"unknown derived_data {name!r}; pick one of {sorted(BUILDERS)}")
    build, source = BUILDERS[name]
    folder = cache_root() / "derived" / name / fingerprint(file_digest(source()))
    files = {split: str(folder / f"{split}.tsv") for split in SPLITS}
    if not all(Path(f).is_file() for f in files.values()):
        files = build(folder)
    return files
