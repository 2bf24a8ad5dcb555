"""The ``lmgym`` command: plug-in sub-commands through entry points, bench output."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from lmgym import cli

ROOT = Path(__file__).resolve().parent.parent
CALLS: list[list[str]] = []


def fake_command(argv: list[str]) -> int:
    CALLS.append(list(argv))
    return 3


def _commands(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    point = metadata.EntryPoint("hello", value, cli.COMMANDS_GROUP)

    def fake(group: str) -> dict[str, metadata.EntryPoint]:
        return {"hello": point} if group == cli.COMMANDS_GROUP else {}

    monkeypatch.setattr(cli, "entry_points", fake)


def test_lmgym_never_imports_agents_or_benchmarks():
    pattern = r"import agents\|from agents\|import benchmarks\|from benchmarks"
    found = subprocess.run(
        ["grep", "-rn", pattern, str(ROOT / "lmgym")], capture_output=True, text=True
    ).stdout
    assert found == "", found


def test_train_leaderboard_and_model_loader_are_declared_entry_points():
    commands = cli.entry_points(cli.COMMANDS_GROUP)
    assert {"train", "leaderboard"} <= set(commands)
    assert commands["train"].extras == ["agents"]
    assert cli.DEFAULT_LOADER in cli.entry_points(cli.LOADERS_GROUP)


def test_entry_point_command_gets_the_rest_of_the_command_line(monkeypatch):
    _commands(monkeypatch, f"{__name__}:fake_command")
    CALLS.clear()
    assert cli.main(["hello", "--quick", "x"]) == 3
    assert CALLS == [["--quick", "x"]]


def test_missing_extra_names_the_pip_install(monkeypatch):
    _commands(monkeypatch, f"{__name__}:fake_command [agents]")
    monkeypatch.setattr(
        cli,
        "_requirements",
        lambda: ['not-a-real-package-xyz>=1; extra == "agents"', 'numpy; extra == "bench"'],
    )
    CALLS.clear()
    with pytest.raises(SystemExit, match=r"pip install 'lmgym\[agents\]'.*not-a-real-package-xyz"):
        cli.main(["hello"])
    assert CALLS == []


def test_unimportable_command_names_the_fix(monkeypatch):
    _commands(monkeypatch, "no_such_module_xyz:main [agents]")
    monkeypatch.setattr(cli, "_requirements", lambda: [])
    with pytest.raises(
        SystemExit, match=r"could not import no_such_module_xyz:main.*lmgym\[agents\]"
    ):
        cli.main(["hello"])


def test_evaluate_model_without_a_loader_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "entry_points", lambda group: {})
    with pytest.raises(SystemExit, match=r"pip install 'lmgym\[agents\]'"):
        cli.main(["evaluate", str(tmp_path / "model.zip")])


def test_help_lists_plugin_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "train" in out and "leaderboard" in out and "bench" in out


def test_bench_prints_only_unless_output_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "--quick", "--envs", "lmgym/SST2-v0", "--num-envs", "4", "--sync-envs", "0",
            "--sb3-envs", "0", "--skip-single", "--seconds", "0.01"]  # fmt: skip
    assert cli.main(argv) == 0
    assert list(tmp_path.iterdir()) == [] and "not written" in capsys.readouterr().out
    assert cli.main([*argv, "--output", "out/bench.json"]) == 0
    assert (tmp_path / "out" / "bench.json").is_file()
