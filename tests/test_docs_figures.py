"""The prose keeps to its rules: speed and memory figures only in docs/benchmarks.md (the
other pages link to it), no provider count that could go stale, no path outside the
repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmbudget.providers import providers

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FIGURE = re.compile(
    r"\d[\d,.]*\s?(req/s|requests/s|ops/s|pairs/s|tokens/s|costs/s|/s|ms|µs|MB|GB|KB)\b"
)
OUTSIDE = re.compile(r"(?<![\w.])/(tmp|home|work|root|Users)/|shared/notes")
PROVIDER_COUNT = re.compile(r"\b(\d+) (?:OpenAI-compatible|providers?)\b")


def _name(page: Path) -> str:
    return str(page.relative_to(ROOT))


@pytest.mark.parametrize("page", [p for p in PAGES if p.name != "benchmarks.md"], ids=_name)
def test_figures_live_in_benchmarks_only(page: Path) -> None:
    found = [m.group(0) for m in FIGURE.finditer(page.read_text("utf-8"))]
    assert found == [], f"{_name(page)} states {found}: link to docs/benchmarks.md instead"


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_no_path_outside_the_repository(page: Path) -> None:
    assert OUTSIDE.findall(page.read_text("utf-8")) == []


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_no_provider_count_in_prose(page: Path) -> None:
    # The table in llmbudget.providers grows; a number in prose would go stale.
    assert PROVIDER_COUNT.findall(page.read_text("utf-8")) == []
    assert len(providers()) > 1  # what the prose would have counted


def test_the_checks_catch_what_they_look_for() -> None:
    assert FIGURE.search("the gateway does ~5,000 req/s") and FIGURE.search("RSS 136 MB")
    assert FIGURE.search("costs ~3 µs") and not FIGURE.search("hold_ttl (default 600 s)")
    assert OUTSIDE.search("--litellm-python /tmp/litellm-venv/bin/python")
    assert not OUTSIDE.search("sqlite:////var/lib/llmbudget/ledger.db")
    assert PROVIDER_COUNT.search("calls 33 OpenAI-compatible ones")
