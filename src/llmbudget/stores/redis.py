"""Redis store (``redis://``, ``rediss://``, ``redis+cluster://``): one Lua script per operation.

Each operation is a single ``EVALSHA`` of a script in ``stores/lua/`` (``lib.lua`` is
prepended to each), so a check and the writes that follow it run atomically on the server
with no lock and one round trip. Concurrent operations of one process (threads, or tasks
of one event loop) share round trips: whatever arrives while a batch is on the wire goes
in the next pipeline (:mod:`llmbudget.stores.pipelining`), each still its own script; on
a Redis Cluster, where redis-py refuses scripts in pipelines, each goes on its own.
Amounts are integers (nano-dollars, or counts for budgets in requests, tokens or slots),
added with ``INCRBY`` / ``HINCRBY`` and compared as decimal strings in Lua (never as
floats).

Key layout (``P`` is ``{name}:``, ``name`` from ``?prefix=``, default ``llmbudget``)::

    P hold:<id>                 HASH  s state (h/s/r), a amount, e expires_at, t actual,
                                      n line count, c<i>/w<i> scope/window of line i,
                                      a<i> what line i holds when not ``a``
    P holds                     ZSET  hold id -> expires_at (every record, for purge)
    P active                    ZSET  hold id -> expires_at (holds not yet ended or pruned)
    P held:<win>:<scope>        ZSET  "amount:hold id" -> expires_at (holds of one window;
                                      the amount that line holds)
    P heldsum:<win>:<scope>     STR   sum of the amounts in that ZSET
    P spent:<scope>             HASH  window -> spent
    P wins:<scope>              ZSET  windows with recorded spend (history order)
    P model:<win>:<scope>       HASH  model -> spent
    P charge:<id>               STR   amount and scopes of a charge made under an id
    P charges                   ZSET  charge id -> when it was recorded (for purge)
    P budgets                   HASH  scope -> JSON budget record
    P budget-index              ZSET  scopes, all score 0 (prefix listing by ZRANGEBYLEX)
    P docs:<kind>               HASH  key -> JSON document
    P doc-index:<kind>          ZSET  keys, all score 0
    P log:<kind>                ZSET  "<20-digit sequence>:<JSON>" -> at
    P log-seq:<kind>            STR   sequence of that log

Active holds of a window = ``heldsum`` minus the amounts in its ZSET scored at or below
``now``, so a hold stops counting exactly at ``expires_at`` without any TTL and without the
read changing anything; :meth:`purge` later removes such members. Hold records are kept until
``purge(now, retention)`` drops them, so a late settle still lands. Spend never expires.

Cluster: every key of a store carries the same hash tag ``{name}``, so all of them live in
one slot. A multi-scope reserve therefore never fails with ``CROSSSLOT``, and settle may
reach keys it reads from the hold record. The price: one store (one prefix) is served by one
shard. To spread load, give independent ledgers (projects, tenants) their own prefixes.

Store time comes from the caller (``now``); the server clock is never read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from llmbudget.errors import (
    InvalidInputError,
    StoreError,
    StoreUnavailableError,
)
from llmbudget.plans import run_async, run_sync
from llmbudget.stores import redis_ops as r
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
from llmbudget.stores.pipelining import AsyncPipeliner, ThreadPipeliner

__all__ = ["AsyncRedisStore", "RedisStore"]

T = TypeVar("T")

DEFAULT_PREFIX = "llmbudget"
_DEFAULT_TIMEOUTS = {"socket_connect_timeout": "2", "socket_timeout": "5", "max_connections": "64"}


# -- connection ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Config:
    original: str
    url: str  # what redis-py is given: no llmbudget parameters, plain redis(s):// scheme
    prefix: str
    cluster: bool
    wait_timeout: float  # longest wait for a free pooled connection

    @classmethod
    def parse(cls, url: str) -> _Config:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster", "unix"):
            raise InvalidInputError(f"not a Redis URL: {url!r}")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        prefix = query.pop("prefix", DEFAULT_PREFIX)
        for name, default in _DEFAULT_TIMEOUTS.items():
            query.setdefault(name, default)
        try:
            wait_timeout = float(query["socket_timeout"])
        except ValueError:
            raise InvalidInputError(f"bad socket_timeout in {url!r}") from None
        cluster = scheme.endswith("+cluster")
        plain = scheme.removesuffix("+cluster")
        rebuilt = urlunsplit((plain, parts.netloc, parts.path, urlencode(query), parts.fragment))
        return cls(url, rebuilt, prefix, cluster, wait_timeout)


def _no_retry() -> Any:
    # redis-py retries on connection errors by default. A retried EVALSHA whose first run
    # reached the server would charge twice, so failures surface to the caller instead
    # (reserve and settle are idempotent by hold id, and safe to retry there).
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def _unavailable_types() -> tuple[type[BaseException], ...]:
    import redis.exceptions as rx

    return (
        rx.ConnectionError,
        rx.TimeoutError,
        rx.BusyLoadingError,
        rx.ClusterDownError,
        rx.MasterDownError,
        rx.TryAgainError,
        OSError,
    )


def _translate(exc: BaseException, where: str) -> StoreError:
    import redis.exceptions as rx

    if isinstance(exc, _unavailable_types()):
        return StoreUnavailableError(f"Redis store {where}: {exc}")
    if isinstance(exc, rx.RedisClusterException):
        text = str(exc).lower()
        # "Cannot be connected" / "failed to initialize" mean no node answered; a node that
        # answers but is not in cluster mode is a configuration error.
        if "not enabled" not in text and ("connect" in text or "initialize" in text):
            return StoreUnavailableError(f"Redis store {where}: {exc}")
    return StoreError(f"Redis store {where}: {exc}")


def _errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions as rx

    # RedisClusterException is not a RedisError.
    return (rx.RedisError, rx.RedisClusterException, OSError)


def _where(config: _Config) -> str:
    parts = urlsplit(config.url)
    host = parts.hostname or parts.path or "?"
    return f"{host}:{parts.port or 6379} prefix {config.prefix!r}"


def _sync_client(config: _Config) -> Any:
    if config.cluster:
        from redis.cluster import RedisCluster

        try:
            return RedisCluster.from_url(config.url, retry=_no_retry())
        except _errors() as exc:
            raise _translate(exc, _where(config)) from exc
    import redis

    # A blocking pool: past max_connections callers wait (up to the socket timeout)
    # for a free connection instead of failing at once.
    pool = redis.BlockingConnectionPool.from_url(
        config.url, timeout=config.wait_timeout, retry=_no_retry()
    )
    return redis.Redis(connection_pool=pool)


def _async_client(config: _Config) -> Any:
    if config.cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(config.url, retry=_no_retry())
    import redis.asyncio

    pool = redis.asyncio.BlockingConnectionPool.from_url(
        config.url, timeout=config.wait_timeout, retry=_no_retry()
    )
    pool.connection_class = _hiredis_packing(pool.connection_class)
    return redis.asyncio.Redis(connection_pool=pool)


def _hiredis_packing(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` packing commands with hiredis, as redis-py's synchronous
    connections already do: its asyncio connections pack in Python, which was measured at
    over half of the client's CPU per script call (``bench/bench_stores.py``). The class
    chosen for the URL (TCP, TLS, Unix socket) is kept; only packing changes."""
    try:
        import hiredis
    except ImportError:  # pragma: no cover - hiredis comes with the redis extra
        return connection_class
    pack = hiredis.pack_command

    class HiredisPacking(connection_class):  # type: ignore[misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            return [pack(args)]

        def pack_commands(self, commands: Any) -> list[bytes]:
            return [b"".join([pack(tuple(command)) for command in commands])]

    HiredisPacking.__name__ = f"HiredisPacking{connection_class.__name__}"
    return HiredisPacking


# -- the shells: they only send what the plans yield ------------------------------------


class _Shell:
    """What the sync and async stores share: configuration, key layout and the URL."""

    _connect: Callable[[_Config], Any]

    def __init__(self, url: str) -> None:
        self._config = _Config.parse(url)
        self._ops = r.Ops(self._config.prefix)
        self._where = _where(self._config)
        self._client = type(self)._connect(self._config)
        #: Each call's deadline under asyncio: ``socket_timeout``.
        self.timeout: float | None = self._config.wait_timeout

    def _translated(self, replies: list[Any]) -> list[Any]:
        """Each call's own error (the server's reply) translated at the store boundary."""
        return [_translate(r, self._where) if isinstance(r, BaseException) else r for r in replies]

    @staticmethod
    def _reply(reply: Any) -> Any:
        if isinstance(reply, BaseException):
            raise reply
        return reply

    @property
    def url(self) -> str:
        """The URL this store was opened with (another process can open the same store)."""
        return self._config.original

    @property
    def identity(self) -> str:
        """Where the data is (scheme, host, port, database, prefix), for the journal."""
        parts = urlsplit(self._config.url)
        scheme = "redis+cluster" if self._config.cluster else "redis"
        where = parts.hostname or parts.path or "?"
        return f"{scheme}://{where}:{parts.port or 6379}{parts.path or '/0'}#{self.prefix}"

    @property
    def prefix(self) -> str:
        return self._ops.prefix


class RedisStore(_Shell, Store):
    """Redis-backed store, shared safely by threads, processes and machines.

    ``url``: ``redis://[:password@]host[:port][/db]``, ``rediss://`` (TLS) or
    ``redis+cluster://host:port`` (any node of a Redis Cluster), with optional
    ``?prefix=NAME`` (keys live under ``{NAME}:``; default ``llmbudget``) and redis-py
    connection options such as ``socket_timeout`` (default 5 s) and
    ``socket_connect_timeout`` (default 2 s).

    >>> from llmbudget import Ledger, Budget
    >>> store = RedisStore("redis://127.0.0.1:6379/0?prefix=docs")  # doctest: +SKIP
    >>> ledger = Ledger(store)  # doctest: +SKIP
    >>> ledger.charge([Budget.of("team:a", 10, "daily")], "0.25")  # doctest: +SKIP
    Decimal('0.25')
    """

    _connect = staticmethod(_sync_client)

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._pipe = ThreadPipeliner(self._send)

    def _eval(self, call: r.Eval) -> Any:
        if self._config.cluster:
            # redis-py refuses scripts in cluster pipelines: one trip per call there.
            return self._reply(self._send([call])[0])
        # Threads calling at once share round trips (see stores.pipelining).
        return self._reply(self._pipe.call(call))

    def _send(self, calls: Sequence[r.Eval]) -> list[Any]:
        try:
            return self._translated(run_sync(r.send_plan(calls), self._round_trip))
        except _errors() as exc:
            raise _translate(exc, self._where) from exc

    def _round_trip(self, batch: r.Batch) -> list[Any]:
        if len(batch.calls) == 1:
            return [r.one(self._client, batch)]
        pipe = self._client.pipeline(transaction=False)
        r.queue(pipe, batch)
        return list(pipe.execute(raise_on_error=False))

    def _run(self, plan: r.Plan[T]) -> T:
        return run_sync(plan, self._eval)

    def reserve(
        self, hold_id: str, lines: Sequence[Line], amount: int, expires_at: float, now: float
    ) -> Refusal | None:
        return self._run(self._ops.reserve(hold_id, lines, amount, expires_at, now))

    def settle(
        self,
        hold_id: str,
        actual: int,
        model: str | None,
        now: float,
        actuals: Mapping[str, int] | None = None,
        log: LogRecord | None = None,
    ) -> SettleResult:
        return self._run(self._ops.settle(hold_id, actual, model, now, actuals, log))

    def release(self, hold_id: str, now: float) -> bool:
        return self._run(self._ops.release(hold_id, now))

    def charge(
        self,
        lines: Sequence[Line],
        amount: int,
        model: str | None,
        now: float,
        charge_id: str | None = None,
    ) -> bool:
        return self._run(self._ops.charge(lines, amount, model, now, charge_id))

    def usage(self, scope: str, window: int, now: float) -> Usage:
        return self._run(self._ops.usage(scope, window, now))

    def reset(self, scope: str, window: int) -> None:
        self._run(self._ops.reset(scope, window))

    def history(self, scope: str, limit: int = 100) -> list[tuple[int, int]]:
        return self._run(self._ops.history(scope, limit))

    def purge(self, now: float, retention: float) -> int:
        return self._run(self._ops.purge(now, retention))

    def put_budget(self, record: BudgetRecord) -> None:
        self._run(self._ops.put_budget(record))

    def get_budgets(self, scopes: Sequence[str]) -> list[BudgetRecord | None]:
        return self._run(self._ops.get_budgets(scopes))

    def list_budgets(self, prefix: str) -> list[BudgetRecord]:
        return self._run(self._ops.list_budgets(prefix))

    def delete_budget(self, scope: str) -> bool:
        return self._run(self._ops.delete_budget(scope))

    def put_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> None:
        self._run(self._ops.put_doc(kind, key, data))

    def create_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> bool:
        return self._run(self._ops.create_doc(kind, key, data))

    def get_doc(self, kind: str, key: str) -> dict[str, Any] | None:
        return self._run(self._ops.get_doc(kind, key))

    def list_docs(self, kind: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        return self._run(self._ops.list_docs(kind, prefix))

    def delete_doc(self, kind: str, key: str) -> bool:
        return self._run(self._ops.delete_doc(kind, key))

    def append_log(self, kind: str, at: float, data: Mapping[str, Any]) -> None:
        self._run(self._ops.append_log(kind, at, data))

    def read_log(
        self, kind: str, since: float = 0.0, until: float = float("inf"), limit: int = 100
    ) -> list[LogEntry]:
        return self._run(self._ops.read_log(kind, since, until, limit))

    def close(self) -> None:
        self._client.close()
        pool = getattr(self._client, "connection_pool", None)
        if pool is not None:
            pool.disconnect()


class AsyncRedisStore(_Shell):
    """The same store for asyncio (``redis.asyncio``): the same scripts, keys and decoding.

    >>> from llmbudget import AsyncLedger
    >>> store = AsyncRedisStore("redis://127.0.0.1:6379/0?prefix=docs")  # doctest: +SKIP
    >>> ledger = AsyncLedger(store)  # doctest: +SKIP
    >>> hold = await ledger.reserve([budget], "0.10")  # doctest: +SKIP
    """

    _connect = staticmethod(_async_client)

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._pipe = AsyncPipeliner(self._send)

    async def _eval(self, call: r.Eval) -> Any:
        if self._config.cluster:
            # redis-py refuses scripts in cluster pipelines: one trip per call there.
            return self._reply((await self._send([call]))[0])
        # Tasks calling at once share round trips (see stores.pipelining).
        return self._reply(await self._pipe.call(call))

    async def _send(self, calls: Sequence[r.Eval]) -> list[Any]:
        try:
            return self._translated(await run_async(r.send_plan(calls), self._round_trip))
        except _errors() as exc:
            raise _translate(exc, self._where) from exc

    async def _round_trip(self, batch: r.Batch) -> list[Any]:
        if len(batch.calls) == 1:
            return [await r.aone(self._client, batch)]
        pipe = self._client.pipeline(transaction=False)
        r.queue(pipe, batch)
        return list(await pipe.execute(raise_on_error=False))

    async def _run(self, plan: r.Plan[T]) -> T:
        return await run_async(plan, self._eval)

    async def reserve(
        self, hold_id: str, lines: Sequence[Line], amount: int, expires_at: float, now: float
    ) -> Refusal | None:
        return await self._run(self._ops.reserve(hold_id, lines, amount, expires_at, now))

    async def settle(
        self,
        hold_id: str,
        actual: int,
        model: str | None,
        now: float,
        actuals: Mapping[str, int] | None = None,
        log: LogRecord | None = None,
    ) -> SettleResult:
        return await self._run(self._ops.settle(hold_id, actual, model, now, actuals, log))

    async def release(self, hold_id: str, now: float) -> bool:
        return await self._run(self._ops.release(hold_id, now))

    async def charge(
        self,
        lines: Sequence[Line],
        amount: int,
        model: str | None,
        now: float,
        charge_id: str | None = None,
    ) -> bool:
        return await self._run(self._ops.charge(lines, amount, model, now, charge_id))

    async def usage(self, scope: str, window: int, now: float) -> Usage:
        return await self._run(self._ops.usage(scope, window, now))

    async def reset(self, scope: str, window: int) -> None:
        await self._run(self._ops.reset(scope, window))

    async def history(self, scope: str, limit: int = 100) -> list[tuple[int, int]]:
        return await self._run(self._ops.history(scope, limit))

    async def purge(self, now: float, retention: float) -> int:
        return await self._run(self._ops.purge(now, retention))

    async def put_budget(self, record: BudgetRecord) -> None:
        await self._run(self._ops.put_budget(record))

    async def get_budgets(self, scopes: Sequence[str]) -> list[BudgetRecord | None]:
        return await self._run(self._ops.get_budgets(scopes))

    async def list_budgets(self, prefix: str) -> list[BudgetRecord]:
        return await self._run(self._ops.list_budgets(prefix))

    async def delete_budget(self, scope: str) -> bool:
        return await self._run(self._ops.delete_budget(scope))

    async def put_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> None:
        await self._run(self._ops.put_doc(kind, key, data))

    async def create_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> bool:
        return await self._run(self._ops.create_doc(kind, key, data))

    async def get_doc(self, kind: str, key: str) -> dict[str, Any] | None:
        return await self._run(self._ops.get_doc(kind, key))

    async def list_docs(self, kind: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        return await self._run(self._ops.list_docs(kind, prefix))

    async def delete_doc(self, kind: str, key: str) -> bool:
        return await self._run(self._ops.delete_doc(kind, key))

    async def append_log(self, kind: str, at: float, data: Mapping[str, Any]) -> None:
        await self._run(self._ops.append_log(kind, at, data))

    async def read_log(
        self, kind: str, since: float = 0.0, until: float = float("inf"), limit: int = 100
    ) -> list[LogEntry]:
        return await self._run(self._ops.read_log(kind, since, until, limit))

    async def aclose(self) -> None:
        await self._client.aclose()
        pool = getattr(self._client, "connection_pool", None)
        if pool is not None:
            await pool.disconnect()

    async def __aenter__(self) -> AsyncRedisStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
