"""Throughput benchmark (placeholder, filled in below)."""
from __future__ import annotations

from typing import Any

from lmgym.data.paths import SAMPLE, SAMPLES_DIR

#: Extra make kwargs of ids that need data of their own (they have no catalogued dataset).
_OWN_DATA = {
    "lmgym/TextClassification-v0": lambda root: {
        "data_files": str(root / "sst2" / "train.tsv"),
        "text_column": "sentence",
        "label_column": "label",
    },
}


def sample_kwargs(env_id: str) -> dict[str, Any]:
    """Make kwargs that run ``env_id`` on the bundled sample data (tests, ``--quick``)."""
    own = _OWN_DATA.get(env_id)
    return own(SAMPLES_DIR) if own is not None else {"data_dir": SAMPLE}
