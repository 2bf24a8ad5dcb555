"""The datasets lmgym knows by name: where their files live and how big the splits are.

The layout is the one ``$LMGYM_DATA_DIR`` is expected to follow: one folder per dataset,
named as in :data:`DATASETS`. The package ships small *sample* copies of each layout
(written by the lmgym authors, a few dozen examples each) under ``lmgym/data/samples``;
pass ``data_dir="sample"`` to use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset.

    :param name: folder name under the data directory.
    :param title: human readable name with citation.
    :param task: task family (``"ner"``, ``"classification"``, ``"translation"``, ``"qa"``,
        ``"multiple_choice"``).
    :param files: split -> candidate file names inside the folder, first found wins.
        Names may contain ``{src}``/``{tgt}`` placeholders (translation language codes).
    :param sizes: split -> number of examples in the full release (for ``lmgym list``).
    :param hub: ``(path, config)`` for ``datasets.load_dataset`` as a last-resort source.
    :param holdout: for a release without a validation split of its own: this many train
        examples (a fixed sample, the same on every machine; at most a fifth of a small
        copy such as the bundled sample) are the ``validation`` split and are left out of
        ``train``, so that choosing on validation never looks at the test file.
    """

    name: str
    title: str
    task: str
    files: dict[str, tuple[str, ...]]
    sizes: dict[str, int] = field(default_factory=dict)
    hub: tuple[str, str | None] | None = None
    holdout: int = 0

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits it has, in :data:`SPLITS` order."""
        return tuple(s for s in SPLITS if s in self.files or (s == "validation" and self.holdout))

    def file_split(self, split: str) -> str:
        """The split whose file holds ``split`` (``train`` for a held-out validation)."""
        return "train" if split == "validation" and self.holdout else split


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="conll2003",
            title="CoNLL-2003 English NER (Tjong Kim Sang & De Meulder, 2003)",
            task="ner",
            files={
                "train": ("train.txt", "eng.train"),
                "validation": ("valid.txt", "dev.txt", "eng.testa"),
                "test": ("test.txt", "eng.testb"),
            },
            sizes={"train": 14041, "validation": 3250, "test": 3453},
            hub=("conll2003", None),
        ),
        DatasetInfo(
            name="sst2",
            title="SST-2 binary sentiment (Socher et al., 2013; GLUE)",
            task="classification",
            # GLUE's SST-2 test labels are hidden: the dev set is the test split, and
            # validation is 872 sentences held out of train.tsv (as many as dev has).
            files={"train": ("train.tsv",), "test": ("dev.tsv",)},
            sizes={"train": 66477, "validation": 872, "test": 872},
            hub=("glue", "sst2"),
            holdout=872,
        ),
        DatasetInfo(
            name="trec",
            title="TREC question classification, 6 coarse classes (Li & Roth, 2002)",
            task="classification",
            # TREC has no official validation split: 500 questions held out of the
            # training file are validation (as many as the test file has).
            files={"train": ("train_5500.label",), "test": ("TREC_10.label",)},
            sizes={"train": 4952, "validation": 500, "test": 500},
            holdout=500,
            hub=("trec", None),
        ),
        DatasetInfo(
            name="multi30k",
            title="Multi30k task 1 English-German (Elliott et al., 2016)",
            task="translation",
            files={
                "train": ("train.{src}.gz", "train.{src}"),
                "validation": ("val.{src}.gz", "val.{src}"),
                "test": ("test_2016_flickr.{src}.gz", "test_2016_flickr.{src}"),
            },
            sizes={"train": 29000, "validation": 1014, "test": 1000},
            hub=("bentrevett/multi30k", None),
        ),
        DatasetInfo(
            name="squad",
            title="SQuAD v1.1 extractive QA (Rajpurkar et al., 2016)",
            task="qa",
            # Offline copies hold only the official dev file, split by article into
            # train.json/validation.json; validation.json then doubles as the test split
            # (dev-v1.1.json would overlap train.json). With the official release
            # (train-v1.1.json + dev-v1.1.json) the dev file is validation and test.
            files={
                "train": ("train.json", "train-v1.1.json"),
                "validation": ("validation.json", "dev-v1.1.json"),
                "test": ("validation.json", "dev-v1.1.json"),
            },
            sizes={"train": 8582, "validation": 1988, "test": 1988},
            hub=("squad", None),
        ),
        DatasetInfo(
            name="mcqa",
            title="Multiple-choice QA in lmgym's JSONL format (question, choices, answer)",
            task="multiple_choice",
            # No public corpus ships in this layout: the bundled sample, or your own files
            # converted to one JSON object a line (see read_multiple_choice_jsonl).
            files={
                "train": ("train.jsonl",),
                "validation": ("validation.jsonl", "dev.jsonl"),
                "test": ("test.jsonl",),
            },
        ),
    )
}
