from __future__ import annotations

from pathlib import Path

import pytest

from llmbudget.errors import InvalidInputError, StoreUnavailableError
from llmbudget.stores import open_store


def test_schemes_pick_their_store(tmp_path: Path) -> None:
    assert type(open_store("memory://")).__name__ == "MemoryStore"
    sqlite = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    assert type(sqlite).__name__ == "SQLiteStore"
    sqlite.append_log("k", 0.0, {})  # the file is made at the first write
    assert (tmp_path / "x.db").exists()
    sqlite.close()
    assert type(open_store("http://127.0.0.1:9")).__name__ == "HttpStore"


def test_default_is_sqlite_in_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMBUDGET_STORE", raising=False)
    store = open_store()
    assert not (tmp_path / "llmbudget.db").exists()  # not on open
    store.append_log("k", 0.0, {})
    store.close()
    assert (tmp_path / "llmbudget.db").exists()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x",
        "sqlite://host/x.db",
        "sqlite://",
        "nonsense",
        "sqlite:///x.db?synchronous=SOMETIMES",
    ],
)
def test_bad_urls_are_refused(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInputError):
        open_store(url)
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_sqlite_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError):
        open_store(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
