"""The linters and the strict type checker are part of the test suite, so CI runs them."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "llmbudget"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_ruff_check() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = _run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


@pytest.mark.parametrize("name", _modules())
def test_all_names_exist(name: str) -> None:
    """Every name a module lists in ``__all__`` exists (a checked ``__all__``)."""
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional extra that is not installed
        pytest.skip(f"{name}: {exc}")
    names = getattr(module, "__all__", None)
    if names is None:
        pytest.skip(f"{name} declares no __all__")
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"


# Packages a user brings themselves, imported only by the integration written for them.
_BROUGHT_BY_THE_USER = {"litellm"}


def _declared_distributions() -> set[str]:
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    names = {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0] for r in requirements}
    return {_normalise(n) for n in names}


def _normalise(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports() -> dict[str, list[str]]:
    import ast

    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top in sys.stdlib_module_names or top in ("llmbudget", "__future__"):
                    continue
                found.setdefault(top, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_import_is_declared() -> None:
    """An import missing from pyproject.toml passes on a machine that happens to have the
    package and fails for the first new user: every third-party import is declared."""
    from importlib.metadata import packages_distributions

    declared = _declared_distributions()
    owners = packages_distributions()
    undeclared = {}
    for module, places in _third_party_imports().items():
        if module in _BROUGHT_BY_THE_USER:
            continue
        distributions = {_normalise(d) for d in owners.get(module, [module])}
        if not distributions & declared:
            undeclared[module] = places[:3]
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
