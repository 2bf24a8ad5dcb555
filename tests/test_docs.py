"""The docs name only modules, files, classes, functions and arguments that exist.

Checked in every Markdown page below: inline code that is a repository path
(``lmgym/envs/core.py``, ``agents/hyperparams/<algo>.yml``) or a dotted name under
``lmgym``/``agents``/``benchmarks`` (``lmgym.envs.core.TaskCore``, with the argument names
of a call such as ``lmgym.evaluation.evaluate(policy, env_id, split="test")`` checked
against the real signature) or an env id (``lmgym/NER-v0``, which must be registered); in
docs/ARCHITECTURE.md also the module tree and the
``TaskCore.method(args)`` lines of its code blocks.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest

import lmgym  # noqa: F401  (registers the env ids the docs name)

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", "docs/ARCHITECTURE.md", "docs/ECOSYSTEM.md", "docs/RELIABILITY.md",
         "agents/README.md"]  # fmt: skip
PACKAGES = ("lmgym", "agents", "benchmarks")
INLINE = re.compile(r"`([^`\n]+)`")
PATH = re.compile(r"^(?:lmgym|agents|benchmarks|tests|docs)/[\w./<>*-]*$")
DOTTED = re.compile(r"^((?:lmgym|agents|benchmarks)(?:\.\w+)+)(?:\((.*)\))?$")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
#: names in the module tree's descriptions that must exist in that module
TREE_NAME = re.compile(
    r"\b([A-Za-z_]\w*)(?=\()|\b([A-Z]\w*(?:Env|Core|Sampler|Scoring|Error|Source|VecEnv))\b"
)
ENV_ID = re.compile(r"^lmgym/\w+-v\d+$")


class Unavailable(Exception):
    """A third-party module the reference needs is not installed (torch, SB3...)."""


def entry_point_groups() -> set[str]:
    """Entry-point groups pyproject.toml declares (``lmgym.commands``...): names, not modules."""
    text = (ROOT / "pyproject.toml").read_text()
    return set(re.findall(r'^\[project\.entry-points\."([^"]+)"\]', text, re.M))


def has_member(obj: Any, name: str) -> bool:
    if hasattr(obj, name):
        return True
    return any(
        name in getattr(klass, "__annotations__", {}) for klass in getattr(obj, "__mro__", ())
    )


def resolve(dotted: str) -> Any:
    """The object ``dotted`` names: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        module_name = ".".join(parts[:end])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if (
                exc.name
                and not module_name.startswith(exc.name)
                and exc.name.split(".")[0] not in PACKAGES
            ):
                raise Unavailable(exc.name) from exc
            continue
        for attr in parts[end:]:
            if not has_member(obj, attr):
                raise AttributeError(f"{'.'.join(parts[:end])} has no {attr!r}")
            obj = getattr(obj, attr, None)
        return obj
    raise ModuleNotFoundError(dotted)


def parameter_names(args: str) -> list[str]:
    """Names in a written call: ``(a, b=1, *, c: int, **kw)`` -> ``[a, b, c]``."""
    names = []
    for raw in re.sub(r"\[[^\]]*\]|\([^)]*\)|\"[^\"]*\"|'[^']*'", "", args).split(","):
        match = re.match(r"\s*([A-Za-z_]\w*)\s*(?:=|:|$)", raw)
        if match and not raw.strip().startswith("*"):
            names.append(match.group(1))
    return names


def check_call(obj: Any, args: str | None, where: str) -> str | None:
    if not args or not callable(obj):
        return None
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    unknown = [name for name in parameter_names(args) if name not in params]
    return f"{where}: no argument {', '.join(unknown)} in {signature}" if unknown else None


def check_path(text: str) -> bool:
    pattern = re.sub(r"<[^>]+>", "*", text.rstrip("/"))
    return any(ROOT.glob(pattern)) if "*" in pattern else (ROOT / pattern).exists()


def problems_in(page: str) -> list[str]:
    text = (ROOT / page).read_text()
    groups = entry_point_groups()
    found = []
    for span in INLINE.findall(FENCE.sub("", text)):
        span = span.strip()
        if ENV_ID.match(span):
            if span not in gym.registry:
                found.append(f"{page}: {span} is not a registered env id")
            continue
        if PATH.match(span):
            if not check_path(span):
                found.append(f"{page}: no file or folder {span}")
            continue
        match = DOTTED.match(span)
        if not match or match.group(1) in groups:
            continue
        try:
            obj = resolve(match.group(1))
        except Unavailable:
            continue
        except (ModuleNotFoundError, AttributeError) as exc:
            found.append(f"{page}: `{span}` does not exist ({exc})")
            continue
        problem = check_call(obj, match.group(2), f"{page}: `{span}`")
        if problem:
            found.append(problem)
    return found


@pytest.mark.parametrize("page", [p for p in PAGES if (ROOT / p).is_file()])
def test_doc_names_only_what_exists(page):
    assert problems_in(page) == []


def test_architecture_module_tree_matches_the_code():
    blocks = FENCE.findall((ROOT / "docs/ARCHITECTURE.md").read_text())
    tree = next(b for b in blocks if b.startswith("lmgym/"))
    problems, module = [], None
    for line in tree.splitlines()[1:]:
        entry = re.match(r"  (\S+)\s*(.*)", line)  # "  path  description"; deeper = wrapped
        if entry:
            path, description = entry.groups()
            module = None
            if not (ROOT / "lmgym" / path).exists():
                problems.append(f"no lmgym/{path}")
            elif path.endswith(".py"):
                name = "lmgym." + path[:-3].replace("/", ".").removesuffix(".__init__")
                module = importlib.import_module(name)
        else:
            description = line
        for dotted in re.findall(r"\b((?:lmgym|agents|benchmarks)(?:\.\w+)+)", description):
            try:
                resolve(dotted)
            except (ModuleNotFoundError, AttributeError):
                problems.append(f"{dotted} does not exist")
            except Unavailable:
                pass
        for groups in TREE_NAME.findall(description) if module is not None else []:
            name = next(n for n in groups if n)
            if not has_member(module, name):
                problems.append(f"{module.__name__} has no {name}")
    assert problems == []


def test_architecture_taskcore_contract_matches_the_code():
    from lmgym.envs.core import TaskCore

    blocks = FENCE.findall((ROOT / "docs/ARCHITECTURE.md").read_text())
    contract = next(b for b in blocks if "TaskCore." in b)
    problems = []
    for line in contract.splitlines():
        match = re.match(r"TaskCore\.(\w+)(?:\((.*?)\))?(.*)", line.split("#")[0].strip())
        if not match:
            continue
        name, args, rest = match.groups()
        members = [name] + (re.findall(r"/\s*(\w+)", rest) if args is None else [])
        problems += [f"TaskCore has no {m}" for m in members if not has_member(TaskCore, m)]
        if has_member(TaskCore, name):
            problem = check_call(getattr(TaskCore, name, None), args, f"TaskCore.{name}")
            problems += [problem] if problem else []
    assert problems == []


def test_the_checker_catches_what_does_not_exist(tmp_path, monkeypatch):
    import sys

    module = sys.modules[__name__]
    (tmp_path / "lmgym" / "envs").mkdir(parents=True)
    (tmp_path / "lmgym" / "envs" / "core.py").write_text("")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (tmp_path / "page.md").write_text(
        "`lmgym/NER-v9` `lmgym.envs.registration` `lmgym/evaluate.py` `lmgym.envs.core.sel(slots, nope)`"
        " `lmgym.envs.core.TaskCore.step(state, actions)` `lmgym/envs/core.py` `lmgym.envs.core.Nope`"
    )
    monkeypatch.setattr(module, "ROOT", tmp_path)
    found = problems_in("page.md")
    assert len(found) == 5, found
    for needle in ("NER-v9", "registration", "evaluate.py", "nope", "Nope"):
        assert any(needle in problem for problem in found), (needle, found)
