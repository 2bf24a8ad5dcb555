"""``make demo`` runs end to end (on the bundled sample, in seconds)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")


def test_demo_trains_and_prints_the_before_after_table(monkeypatch, tmp_path, capsys):
    from agents import demo

    monkeypatch.setenv("LMGYM_DATA_DIR", str(tmp_path))  # no CoNLL there: the sample
    assert demo.main(["--steps", "128", "--eval-sentences", "8", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("random", "majority", "PPO before", "PPO after", "supervised"):  # rich may wrap
        assert row in out
    assert "gold" in out and "pred" in out  # the tagged sentence, gold above the agent's
