"""Shared fixtures: every lmgym id, and the make kwargs that run it on bundled sample data."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import lmgym  # noqa: F401  (registers the envs)
from lmgym.data.paths import SAMPLES_DIR
from lmgym.envs.core import FAMILY_METRIC  # noqa: F401  (tests import it from here)

REAL_DATA = os.environ.get("LMGYM_DATA_DIR")
needs_real_data = pytest.mark.skipif(
    not (REAL_DATA and Path(REAL_DATA).is_dir()),
    reason="set LMGYM_DATA_DIR to the real datasets (CI sets it to ../shared/data)",
)

#: make kwargs for ids that cannot run on ``data_dir="sample"`` alone.
SAMPLE_KWARGS: dict[str, dict] = {
    "lmgym/TextClassification-v0": {
        "data_files": {
            "train": str(SAMPLES_DIR / "sst2" / "train.tsv"),
            "validation": str(SAMPLES_DIR / "sst2" / "dev.tsv"),
            "test": str(SAMPLES_DIR / "sst2" / "dev.tsv"),
        },
        "text_column": "sentence",
        "label_column": "label",
    },
    "lmgym/MultiTask-v0": {
        "tasks": {"lmgym/NER-v0": 0.5, "lmgym/SST2-v0": 0.5},
        "data_dir": "sample",
    },
}

#: The corpus metric each family is judged by, and what the expert policy must reach on it.
EXPERT_FLOOR = {"entity_f1": 1.0, "accuracy": 1.0, "bleu": 95.0, "exact_match": 97.0, "f1": 97.0}

LMGYM_SPECS = sorted(
    (s for s in gym.registry.values() if s.namespace == "lmgym"), key=lambda s: s.id
)


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Exact equality of (nested) observations, infos and step tuples: keys, dtypes, shapes
    and values (``path`` names the place in failure messages)."""
    if isinstance(a, dict):
        assert isinstance(b, dict), f"{path}: dict vs {type(b)}"
        assert set(a) == set(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b), f"{path}: {type(a)} vs {type(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif a is None or b is None:
        assert a is None and b is None, f"{path}: {a!r} vs {b!r}"
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert isinstance(b, np.ndarray) and b.dtype == object and a.shape == b.shape, (
            f"{path}: object arrays differ"
        )
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        x, y = np.asarray(a), np.asarray(b)
        assert x.dtype == y.dtype, f"{path}: dtype {x.dtype} != {y.dtype}"
        assert x.shape == y.shape, f"{path}: shape {x.shape} != {y.shape}"
        np.testing.assert_array_equal(x, y, err_msg=path)


def sample_kwargs(env_id: str) -> dict:
    return dict(SAMPLE_KWARGS.get(env_id, {"data_dir": "sample"}))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests build their caches in a temporary folder (never the user's ~/.cache)."""
    if "LMGYM_CACHE_DIR" not in os.environ or os.environ.get("LMGYM_TEST_SHARED_CACHE") != "1":
        os.environ["LMGYM_CACHE_DIR"] = str(tmp_path_factory.mktemp("lmgym-cache"))


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread (small models: threads only add overhead and noise)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
