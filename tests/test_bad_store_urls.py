"""A bad PostgreSQL or Redis URL fails within 2 s, in one line naming what is wrong, said
once (issue 10: ``postgres://nohost`` took 6.6 s and printed psycopg's line three times)."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from llmbudget.cli import _register, app
from llmbudget.errors import StoreError
from llmbudget.stores import open_store
from tests.storekit import POSTGRES_URL, REDIS_URL, with_query

pytest.importorskip("psycopg")
pytest.importorskip("redis")

_PG_HOST = POSTGRES_URL.split("@", 1)[1].split("/", 1)[0]
_REDIS_HOST = REDIS_URL.split("//", 1)[1].split("/", 1)[0]
BAD_URLS = [
    ("postgresql://postgres@no-such-host.invalid/test", "no-such-host.invalid"),
    ("postgresql://postgres@127.0.0.1:1/test", "refused"),
    (
        f"postgresql://postgres@{_PG_HOST}/llmbudget_no_such_db",
        'database "llmbudget_no_such_db" does not exist',
    ),
    ("redis://no-such-host.invalid:6379/0", "no-such-host.invalid"),
    ("redis://127.0.0.1:1/0", "refused"),
    (f"redis://{_REDIS_HOST}/999", "DB index is out of range"),
]


if not any(group.name == "budgets" for group in app.registered_groups):
    _register()


def _first_use(url: str) -> None:
    store = open_store(url)  # PostgreSQL connects here, Redis at the first call
    try:
        store.list_budgets("")
    finally:
        store.close()


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
def test_a_bad_url_fails_within_two_seconds_in_one_line(url: str, reason: str) -> None:
    started = time.monotonic()
    with pytest.raises(StoreError) as error:
        _first_use(url)
    elapsed = time.monotonic() - started
    message = str(error.value)
    assert elapsed < 2.0, f"{elapsed:.2f} s: {message}"
    assert "\n" not in message and reason.lower() in message.lower(), message


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
def test_the_cli_says_it_once_and_nothing_else(
    url: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(app, ["budgets", "list", "--store", url])
    elapsed = time.monotonic() - started
    said = " ".join(result.output.split())
    assert result.exit_code != 0 and elapsed < 2.0, (elapsed, said)
    assert said.count("error:") == 1 and reason.lower() in said.lower(), said
    # psycopg_pool logged "error connecting in 'pool-1'" for each attempt.
    assert "error connecting" not in said and not caplog.records, caplog.records


def test_a_good_url_after_a_bad_one_still_works() -> None:
    with pytest.raises(StoreError):
        _first_use("postgresql://postgres@127.0.0.1:1/test")
    store = open_store(with_query(POSTGRES_URL, schema="llmbudget_bad_url_probe"))
    try:
        assert store.get_budgets(["x"]) == [None]
    finally:
        store.close()
        from tests.storekit import drop_postgres_schema

        drop_postgres_schema("llmbudget_bad_url_probe")
