"""PostgreSQL store (``postgresql://``): one statement or PL/pgSQL function call per operation.

Every ledger operation is a single round trip: ``SELECT llmbudget_reserve(...)``,
``llmbudget_settle``, ``llmbudget_release``, ``llmbudget_record`` (charge),
``llmbudget_reset``, ``llmbudget_purge``, or one plain statement (usage, history, budgets,
documents, logs). Connections are autocommit, so each call is its own transaction.

Why it cannot overspend: a reserve first locks the ``spend`` row of each of its
``(scope, window)`` lines (``SELECT ... FOR UPDATE``, creating the row if needed) in
``(scope, window)`` order, then reads spent and active holds, then inserts the hold. Two
reserves sharing a line queue on that row lock; because every writer (reserve, settle,
charge, reset) takes these locks in the same order, multi-scope operations cannot
deadlock. Amounts are ``BIGINT`` (nano-dollars, or counts for budgets in requests, tokens
or slots, each line of a hold with its own amount); limit checks are done in ``numeric``
so that they cannot overflow.

Each query runs at READ COMMITTED inside a volatile PL/pgSQL function, so every statement
sees a fresh snapshot: the held sum a reserve reads *after* taking its locks includes every
hold committed by the reserves it waited for.

Schema: versioned migrations (``schema_version`` table), applied at start under a
transaction-scoped advisory lock, so concurrent starts are safe. ``?schema=NAME`` puts every
table and function in schema ``NAME`` (created if missing; default ``llmbudget``).
Other URL parameters: ``pool_min`` (1), ``pool_max`` (10), ``pool_timeout`` (5 s: the
longest an operation waits for a connection, so the bound on failing when the server is
down), ``timeout`` (5 s: under asyncio, the deadline of one operation end to end, see
:mod:`llmbudget.operations`), and every libpq parameter (``connect_timeout`` defaults to
2 s). A bad URL (unknown host,
refused port, missing database) fails at once, in one line naming the reason.
"""

from __future__ import annotations

import functools
import select
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolClosed, PoolTimeout

from llmbudget.errors import (
    CounterOverflowError,
    InvalidInputError,
    LLMBudgetError,
    StoreError,
    StoreUnavailableError,
)
from llmbudget.plans import run_async, run_sync
from llmbudget.stores import postgres_sql as q
from llmbudget.stores.base import (
    BudgetRecord,
    Line,
    LogEntry,
    LogRecord,
    Refusal,
    SettleResult,
    Store,
    Usage,
)

__all__ = ["AsyncPostgresStore", "PostgresStore"]

T = TypeVar("T")

DEFAULT_SCHEMA = "llmbudget"
# -- connection ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Config:
    url: str  # as given, so another process can open the same store
    conninfo: str  # for libpq: the URL without llmbudget's own parameters
    schema: str
    pool_min: int
    pool_max: int
    pool_timeout: float
    where: str
    timeout: float = 5.0
    identity: str = ""

    @classmethod
    def parse(cls, url: str) -> _Config:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("postgresql", "postgres"):
            raise InvalidInputError(f"not a PostgreSQL URL: {url!r}")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        schema = query.pop("schema", DEFAULT_SCHEMA)
        if not schema:
            raise InvalidInputError("?schema= must name a schema")
        try:
            pool_min = int(query.pop("pool_min", "1"))
            pool_max = int(query.pop("pool_max", "10"))
            pool_timeout = float(query.pop("pool_timeout", "5"))
            timeout = float(query.pop("timeout", "5"))
        except ValueError as exc:
            raise InvalidInputError(f"bad pool parameter in {url!r}: {exc}") from None
        if not 0 <= pool_min <= pool_max or pool_max < 1 or pool_timeout <= 0:
            raise InvalidInputError(
                "need 0 <= pool_min <= pool_max, pool_max >= 1, pool_timeout > 0"
            )
        if not 0 < timeout < float("inf"):
            raise InvalidInputError(f"timeout must be a positive number of seconds in {url!r}")
        # Bounded failure when the server or network is gone: connect within 2 s, and let
        # TCP give up on a silent peer (keepalives while waiting, user timeout while sending).
        query.setdefault("connect_timeout", "2")
        query.setdefault("keepalives", "1")
        query.setdefault("keepalives_idle", "5")
        query.setdefault("keepalives_interval", "2")
        query.setdefault("keepalives_count", "3")
        query.setdefault("tcp_user_timeout", "10000")
        query.setdefault("application_name", "llmbudget")
        conninfo = urlunsplit(
            (parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment)
        )
        where = (
            f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path} schema {schema!r}"
        )
        identity = (
            f"postgresql://{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
            f"#{schema}"
        )
        return cls(
            url, conninfo, schema, pool_min, pool_max, pool_timeout, where, timeout, identity
        )

    def pool_args(self) -> dict[str, Any]:
        return {
            "min_size": self.pool_min,
            "max_size": self.pool_max,
            "timeout": self.pool_timeout,
            # Give up a failed reconnection after a few seconds: the next request then
            # starts a fresh attempt at once instead of waiting out a long backoff.
            "reconnect_timeout": max(self.pool_timeout, 2.0),
            "kwargs": {"autocommit": True},
            "open": False,
            "name": f"llmbudget {self.where}",
        }

    def search_path(self) -> sql.Composed:
        return sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema))


_OVERFLOW = "llmbudget counter overflow: "


def _one_line(exc: BaseException) -> str:
    # libpq's messages span lines ("...failed: Connection refused\n\tIs the server
    # running..."): one line, so a log or a terminal shows the reason once, whole.
    return " ".join(str(exc).split())


def _translate(exc: BaseException, where: str) -> LLMBudgetError:
    if isinstance(exc, psycopg.errors.NumericValueOutOfRange):
        # Raised by the functions before any change (migration 3): a refusal, not a failure.
        message = exc.diag.message_primary or ""
        scope = message[len(_OVERFLOW) :] if message.startswith(_OVERFLOW) else None
        return CounterOverflowError(scope)
    if isinstance(exc, PoolClosed):
        return StoreError(f"PostgreSQL store {where} is closed")
    if isinstance(exc, PoolTimeout):
        return StoreUnavailableError(f"PostgreSQL store {where}: no connection: {_one_line(exc)}")
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        # No SQLSTATE: the client lost or never had the connection. 08: connection
        # exception, 53: insufficient resources, 57: operator intervention (shutdown,
        # cancel), 58: system error. Others (deadlock, serialization) are store errors.
        if state is None or state[:2] in ("08", "53", "57", "58"):
            return StoreUnavailableError(f"PostgreSQL store {where}: {_one_line(exc)}")
    return StoreError(f"PostgreSQL store {where}: {_one_line(exc)}")


def _readable(fd: int) -> bool:
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    ready, _, _ = select.select([fd], [], [], 0)
    return bool(ready)


def _stale(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """True for a pooled connection the server has closed (restart, failover, proxy cut).

    An idle connection has nothing to read unless the server sent something, normally its
    goodbye or EOF: only then is libpq asked to read, so a healthy connection costs one
    poll() and no round trip. Without this, the first call after a restart would fail.
    """
    if conn.closed or conn.broken:
        return True
    try:
        if not _readable(conn.fileno()):
            return False
        conn.pgconn.consume_input()
    except (psycopg.Error, OSError, ValueError):
        return True
    return conn.pgconn.status != psycopg.pq.ConnStatus.OK


def _rows(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> bool:
    return cursor.description is not None


def _execute(conn: psycopg.Connection[Any], query: q.Query) -> list[tuple[Any, ...]]:
    """One query the plans yield, on ``conn``: its rows (run by :func:`~llmbudget.plans.run_sync`)."""
    cursor = conn.execute(query.sql, query.params)
    return cursor.fetchall() if _rows(cursor) else []


async def _aexecute(conn: psycopg.AsyncConnection[Any], query: q.Query) -> list[tuple[Any, ...]]:
    """:func:`_execute` on an asyncio connection (run by :func:`~llmbudget.plans.run_async`)."""
    cursor = await conn.execute(query.sql, query.params)
    return await cursor.fetchall() if _rows(cursor) else []


# -- the shells: they only execute what the plans yield -----------------------------------


class PostgresStore(Store):
    """PostgreSQL-backed store, shared safely by threads, processes and machines.

    ``url``: a libpq URL, ``postgresql://user:password@host:5432/dbname``, with optional
    ``?schema=NAME`` (default ``llmbudget``), ``pool_min``, ``pool_max``, ``pool_timeout``.
    Migrations run on construction; :class:`~llmbudget.errors.StoreUnavailableError` if
    the server cannot be reached.

    >>> from llmbudget import Ledger, Budget
    >>> store = PostgresStore("postgresql://postgres@127.0.0.1/test?schema=docs")  # doctest: +SKIP
    >>> ledger = Ledger(store)  # doctest: +SKIP
    >>> ledger.charge([Budget.of("team:a", 10, "daily")], "0.25")  # doctest: +SKIP
    Decimal('0.25')
    """

    def __init__(self, url: str) -> None:
        self._config = _Config.parse(url)
        config = self._config
        #: Each operation's deadline under asyncio (``?timeout=``).
        self.timeout = config.timeout

        def configure(conn: psycopg.Connection[Any]) -> None:
            conn.execute(config.search_path())

        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            config.conninfo, configure=configure, **config.pool_args()
        )
        try:
            # One direct connection first, which also migrates: a bad URL (unknown host,
            # refused port, missing database) fails at once with libpq's reason, in one
            # line, instead of the pool retrying (and logging each attempt) until
            # pool_timeout.
            plan = q.migrate(config.schema)
            with psycopg.connect(config.conninfo, autocommit=True) as conn:
                conn.execute(config.search_path())
                with conn.transaction():
                    run_sync(plan, functools.partial(_execute, conn))
            self._pool.open(wait=True, timeout=config.pool_timeout)
        except BaseException as exc:
            self._pool.close()
            if isinstance(exc, psycopg.Error):
                raise _translate(exc, config.where) from exc
            raise

    @property
    def url(self) -> str:
        """The URL this store was opened with (another process can open the same store)."""
        return self._config.url

    @property
    def identity(self) -> str:
        """Where the data is (host, port, database, schema), for the journal."""
        return self._config.identity

    @property
    def schema(self) -> str:
        return self._config.schema

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        # Every pooled connection may be dead after an outage: drop those and take another.
        for _ in range(self._config.pool_max + 1):
            with self._pool.connection() as conn:
                if _stale(conn):
                    conn.close()
                    continue
                yield conn
                return
        raise StoreUnavailableError(f"PostgreSQL store {self._config.where}: no live connection")

    def _run(self, plan: q.Plan[T], *, transaction: bool = False) -> T:
        try:
            with (
                self._connection() as conn,
                conn.transaction() if transaction else nullcontext(),
            ):
                return run_sync(plan, functools.partial(_execute, conn))
        except psycopg.Error as exc:
            raise _translate(exc, self._config.where) from exc

    def reserve(
        self, hold_id: str, lines: Sequence[Line], amount: int, expires_at: float, now: float
    ) -> Refusal | None:
        return self._run(q.reserve(hold_id, lines, amount, expires_at, now))

    def settle(
        self,
        hold_id: str,
        actual: int,
        model: str | None,
        now: float,
        actuals: Mapping[str, int] | None = None,
        log: LogRecord | None = None,
    ) -> SettleResult:
        return self._run(q.settle(hold_id, actual, model, now, actuals, log))

    def release(self, hold_id: str, now: float) -> bool:
        return self._run(q.release(hold_id, now))

    def charge(
        self,
        lines: Sequence[Line],
        amount: int,
        model: str | None,
        now: float,
        charge_id: str | None = None,
    ) -> bool:
        return self._run(q.charge(lines, amount, model, now, charge_id))

    def usage(self, scope: str, window: int, now: float) -> Usage:
        return self._run(q.usage(scope, window, now))

    def reset(self, scope: str, window: int) -> None:
        self._run(q.reset(scope, window))

    def history(self, scope: str, limit: int = 100) -> list[tuple[int, int]]:
        return self._run(q.history(scope, limit))

    def purge(self, now: float, retention: float) -> int:
        return self._run(q.purge(now, retention))

    def put_budget(self, record: BudgetRecord) -> None:
        self._run(q.put_budget(record))

    def get_budgets(self, scopes: Sequence[str]) -> list[BudgetRecord | None]:
        return self._run(q.get_budgets(scopes))

    def list_budgets(self, prefix: str) -> list[BudgetRecord]:
        return self._run(q.list_budgets(prefix))

    def delete_budget(self, scope: str) -> bool:
        return self._run(q.delete_budget(scope))

    def put_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> None:
        self._run(q.put_doc(kind, key, data))

    def create_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> bool:
        return self._run(q.create_doc(kind, key, data))

    def get_doc(self, kind: str, key: str) -> dict[str, Any] | None:
        return self._run(q.get_doc(kind, key))

    def list_docs(self, kind: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        return self._run(q.list_docs(kind, prefix))

    def delete_doc(self, kind: str, key: str) -> bool:
        return self._run(q.delete_doc(kind, key))

    def append_log(self, kind: str, at: float, data: Mapping[str, Any]) -> None:
        self._run(q.append_log(kind, at, data))

    def read_log(
        self, kind: str, since: float = 0.0, until: float = float("inf"), limit: int = 100
    ) -> list[LogEntry]:
        return self._run(q.read_log(kind, since, until, limit))

    def close(self) -> None:
        self._pool.close()


class AsyncPostgresStore:
    """The same store for asyncio (``AsyncConnectionPool``): the same SQL and decoding.

    The pool opens and migrations run on first use (or ``await store.open()``).

    >>> from llmbudget import AsyncLedger
    >>> store = AsyncPostgresStore("postgresql://postgres@127.0.0.1/test")  # doctest: +SKIP
    >>> ledger = AsyncLedger(store)  # doctest: +SKIP
    >>> hold = await ledger.reserve([budget], "0.10")  # doctest: +SKIP
    """

    def __init__(self, url: str) -> None:
        self._config = _Config.parse(url)
        config = self._config

        async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(config.search_path())

        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            config.conninfo, configure=configure, **config.pool_args()
        )
        self._ready = False
        self._opening: Any = None  # an asyncio.Lock, made inside the running loop

    @property
    def url(self) -> str:
        return self._config.url

    @property
    def identity(self) -> str:
        return self._config.identity

    @property
    def timeout(self) -> float:
        return self._config.timeout

    @property
    def schema(self) -> str:
        return self._config.schema

    async def open(self) -> AsyncPostgresStore:
        """Open the pool and apply migrations (done by the first operation otherwise)."""
        import asyncio

        if self._ready:
            return self
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if not self._ready:
                config = self._config
                plan = q.migrate(config.schema)
                try:
                    # As in PostgresStore: one direct connection first (fast, clear errors).
                    conn = await psycopg.AsyncConnection.connect(config.conninfo, autocommit=True)
                    async with conn:
                        await conn.execute(config.search_path())
                        async with conn.transaction():
                            await run_async(plan, functools.partial(_aexecute, conn))
                    await self._pool.open(wait=True, timeout=config.pool_timeout)
                except psycopg.Error as exc:
                    raise _translate(exc, config.where) from exc
                self._ready = True
        return self

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        for _ in range(self._config.pool_max + 1):
            async with self._pool.connection() as conn:
                if _stale(conn):
                    await conn.close()
                    continue
                yield conn
                return
        raise StoreUnavailableError(f"PostgreSQL store {self._config.where}: no live connection")

    async def _run(self, plan: q.Plan[T]) -> T:
        if not self._ready:
            await self.open()
        return await self._execute(plan)

    async def _execute(self, plan: q.Plan[T], *, transaction: bool = False) -> T:
        try:
            async with (
                self._connection() as conn,
                conn.transaction() if transaction else nullcontext(),
            ):
                return await run_async(plan, functools.partial(_aexecute, conn))
        except psycopg.Error as exc:
            raise _translate(exc, self._config.where) from exc

    async def reserve(
        self, hold_id: str, lines: Sequence[Line], amount: int, expires_at: float, now: float
    ) -> Refusal | None:
        return await self._run(q.reserve(hold_id, lines, amount, expires_at, now))

    async def settle(
        self,
        hold_id: str,
        actual: int,
        model: str | None,
        now: float,
        actuals: Mapping[str, int] | None = None,
        log: LogRecord | None = None,
    ) -> SettleResult:
        return await self._run(q.settle(hold_id, actual, model, now, actuals, log))

    async def release(self, hold_id: str, now: float) -> bool:
        return await self._run(q.release(hold_id, now))

    async def charge(
        self,
        lines: Sequence[Line],
        amount: int,
        model: str | None,
        now: float,
        charge_id: str | None = None,
    ) -> bool:
        return await self._run(q.charge(lines, amount, model, now, charge_id))

    async def usage(self, scope: str, window: int, now: float) -> Usage:
        return await self._run(q.usage(scope, window, now))

    async def reset(self, scope: str, window: int) -> None:
        await self._run(q.reset(scope, window))

    async def history(self, scope: str, limit: int = 100) -> list[tuple[int, int]]:
        return await self._run(q.history(scope, limit))

    async def purge(self, now: float, retention: float) -> int:
        return await self._run(q.purge(now, retention))

    async def put_budget(self, record: BudgetRecord) -> None:
        await self._run(q.put_budget(record))

    async def get_budgets(self, scopes: Sequence[str]) -> list[BudgetRecord | None]:
        return await self._run(q.get_budgets(scopes))

    async def list_budgets(self, prefix: str) -> list[BudgetRecord]:
        return await self._run(q.list_budgets(prefix))

    async def delete_budget(self, scope: str) -> bool:
        return await self._run(q.delete_budget(scope))

    async def put_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> None:
        await self._run(q.put_doc(kind, key, data))

    async def create_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> bool:
        return await self._run(q.create_doc(kind, key, data))

    async def get_doc(self, kind: str, key: str) -> dict[str, Any] | None:
        return await self._run(q.get_doc(kind, key))

    async def list_docs(self, kind: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        return await self._run(q.list_docs(kind, prefix))

    async def delete_doc(self, kind: str, key: str) -> bool:
        return await self._run(q.delete_doc(kind, key))

    async def append_log(self, kind: str, at: float, data: Mapping[str, Any]) -> None:
        await self._run(q.append_log(kind, at, data))

    async def read_log(
        self, kind: str, since: float = 0.0, until: float = float("inf"), limit: int = 100
    ) -> list[LogEntry]:
        return await self._run(q.read_log(kind, since, until, limit))

    async def aclose(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> AsyncPostgresStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
