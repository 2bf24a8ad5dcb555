"""lmgym.provenance: one commit string, machine and versions for every result writer."""

from __future__ import annotations

import re
import subprocess

from lmgym import provenance


def test_git_commit_is_the_short_head_of_this_checkout():
    commit = provenance.git_commit()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=provenance.SOURCE_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert commit is not None and re.fullmatch(re.escape(head) + r"(\+dirty)?", commit)


def test_git_commit_outside_a_checkout_is_none(tmp_path):
    assert provenance.git_commit(tmp_path) is None


def test_every_writer_uses_the_same_provenance():
    from benchmarks import records

    assert records.git_commit is provenance.git_commit
    assert records.versions is provenance.versions
    assert records.device_name is provenance.device_name


def test_machine_info_and_versions():
    info = provenance.machine_info()
    assert {"cpu", "cpu_count", "versions", "git_commit", "date"} <= set(info)
    assert "python" in info["versions"] and "gymnasium" in info["versions"]
    assert provenance.device_name("cpu") == provenance.cpu_model()
