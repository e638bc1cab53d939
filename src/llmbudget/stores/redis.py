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

import hashlib
import json
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from llmbudget.errors import (
    CounterOverflowError,
    InvalidInputError,
    StoreError,
    StoreUnavailableError,
    UnknownHoldError,
)
from llmbudget.plans import run_async, run_sync
from llmbudget.stores.base import (
    BudgetRecord,
    Checks,
    Line,
    LogEntry,
    LogRecord,
    Refusal,
    SettleResult,
    Store,
    Usage,
    charge_conflict,
)
from llmbudget.stores.pipelining import AsyncPipeliner, ThreadPipeliner

__all__ = ["AsyncRedisStore", "RedisStore"]

T = TypeVar("T")

DEFAULT_PREFIX = "llmbudget"
# How many holds purge handles per script call: a script blocks the whole server.
PURGE_BATCH = 500
_DEFAULT_TIMEOUTS = {"socket_connect_timeout": "2", "socket_timeout": "5", "max_connections": "64"}


# -- scripts -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Script:
    name: str
    source: str
    sha: str


def _load_scripts() -> dict[str, _Script]:
    folder = resources.files("llmbudget.stores") / "lua"
    lib = (folder / "lib.lua").read_text(encoding="utf-8")
    scripts = {}
    for name in (
        "reserve",
        "settle",
        "release",
        "charge",
        "usage",
        "reset",
        "history",
        "purge",
        "hash_put",
        "hash_create",
        "hash_get",
        "hash_list",
        "hash_delete",
        "log_append",
        "log_read",
    ):
        source = lib + "\n" + (folder / f"{name}.lua").read_text(encoding="utf-8")
        sha = hashlib.sha1(source.encode("utf-8")).hexdigest()
        scripts[name] = _Script(name, source, sha)
    return scripts


SCRIPTS = _load_scripts()


@dataclass(frozen=True, slots=True)
class _Eval:
    """One script call: what both shells send, whatever client they hold."""

    script: _Script
    keys: tuple[str, ...]
    args: tuple[str | bytes | int, ...]


Plan = Generator[_Eval, Any, T]


@dataclass(frozen=True, slots=True)
class _Batch:
    """Script calls sent in one round trip: by hash (``EVALSHA``), or with their source
    (``EVAL``, which also caches the script) after the server said it does not know it."""

    calls: Sequence[_Eval]
    source: bool = False


def _send_plan(calls: Sequence[_Eval]) -> Generator[_Batch, list[Any], list[Any]]:
    """One reply per call (a value, or that call's own error), for both shells: each
    :class:`_Batch` yielded is one round trip, and receives one reply per call in it."""
    replies = list((yield _Batch(calls)))
    unknown = [i for i, reply in enumerate(replies) if _is_noscript(reply)]
    if unknown:
        # First use on this server (or after SCRIPT FLUSH). NOSCRIPT means the call did
        # not run, so sending it again cannot apply it twice.
        again = yield _Batch([calls[i] for i in unknown], source=True)
        for i, reply in zip(unknown, again, strict=True):
            replies[i] = reply
    return replies


def _one(client: Any, batch: _Batch) -> Any:
    """The reply of a batch of one, sent as a plain command (no pipeline to build)."""
    [call] = batch.calls
    script = call.script.source if batch.source else call.script.sha
    command = client.eval if batch.source else client.evalsha
    try:
        return command(script, len(call.keys), *call.keys, *call.args)
    except _reply_errors() as exc:
        return exc


async def _aone(client: Any, batch: _Batch) -> Any:
    [call] = batch.calls
    script = call.script.source if batch.source else call.script.sha
    command = client.eval if batch.source else client.evalsha
    try:
        return await command(script, len(call.keys), *call.keys, *call.args)
    except _reply_errors() as exc:
        return exc


def _queue(pipe: Any, batch: _Batch) -> None:
    for call in batch.calls:
        if batch.source:
            pipe.eval(call.script.source, len(call.keys), *call.keys, *call.args)
        else:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)


# -- operations: key names, arguments and decoding, shared by both shells -------------


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _encode_budget(record: BudgetRecord) -> str:
    return json.dumps(
        {
            "limit": record.limit,
            "duration": record.duration,
            "timezone": record.timezone,
            "rolling": record.rolling,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "unit": record.unit,
        },
        separators=(",", ":"),
    )


def _decode_budget(scope: str, raw: Any) -> BudgetRecord:
    data = json.loads(_text(raw))
    return BudgetRecord(
        scope=scope,
        limit=None if data["limit"] is None else int(data["limit"]),
        duration=data["duration"],
        timezone=data["timezone"],
        rolling=bool(data["rolling"]),
        created_at=float(data["created_at"]),
        updated_at=float(data["updated_at"]),
        # Records written before budgets had units are in dollars.
        unit=data.get("unit", "usd"),
    )


def _json(raw: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_text(raw))
    return data


def _check_overflow(reply: Any, lines: Sequence[Line] | None) -> None:
    """Raise for a script's ``{-2, index}``: a counter would have passed int64 (the script
    changed nothing)."""
    if isinstance(reply, list) and len(reply) == 2 and int(reply[0]) == -2:
        line = None if lines is None else lines[int(reply[1])]
        raise CounterOverflowError(
            None if line is None else line.scope, None if line is None else line.window
        )


def _score(value: float) -> str:
    # repr round-trips a float exactly; Redis parses it back to the same double.
    return repr(float(value))


class _Ops:
    """Every operation as a plan: yields the script calls it needs, returns the result."""

    def __init__(self, prefix: str) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise InvalidInputError(f"Redis prefix must be non-empty, without braces: {prefix!r}")
        self.prefix = prefix
        self.p = "{" + prefix + "}:"

    # Key names, mirrored by lib.lua (tests check the two agree).
    def k_hold(self, hold_id: str) -> str:
        return f"{self.p}hold:{hold_id}"

    def k_spent(self, scope: str) -> str:
        return f"{self.p}spent:{scope}"

    def k_wins(self, scope: str) -> str:
        return f"{self.p}wins:{scope}"

    def k_model(self, scope: str, window: int) -> str:
        return f"{self.p}model:{window}:{scope}"

    def k_held(self, scope: str, window: int) -> str:
        return f"{self.p}held:{window}:{scope}"

    def k_heldsum(self, scope: str, window: int) -> str:
        return f"{self.p}heldsum:{window}:{scope}"

    def k_charge(self, charge_id: str) -> str:
        return f"{self.p}charge:{charge_id}"

    @property
    def k_charges(self) -> str:
        return f"{self.p}charges"

    @property
    def k_holds(self) -> str:
        return f"{self.p}holds"

    @property
    def k_active(self) -> str:
        return f"{self.p}active"

    @property
    def k_budgets(self) -> str:
        return f"{self.p}budgets"

    @property
    def k_budget_index(self) -> str:
        return f"{self.p}budget-index"

    # -- ledger ----------------------------------------------------------------------

    def reserve(
        self, hold_id: str, lines: Sequence[Line], amount: int, expires_at: float, now: float
    ) -> Plan[Refusal | None]:
        Checks.reserve(hold_id, lines, amount, expires_at, now)
        keys = [self.k_hold(hold_id), self.k_holds, self.k_active]
        args: list[str | bytes | int] = [self.p, hold_id, amount, _score(expires_at), _score(now)]
        for line in lines:
            keys += [
                self.k_spent(line.scope),
                self.k_held(line.scope, line.window),
                self.k_heldsum(line.scope, line.window),
            ]
            args += [
                line.scope,
                line.window,
                "" if line.limit is None else line.limit,
                "" if line.amount is None else line.amount,
            ]
        reply = yield _Eval(SCRIPTS["reserve"], tuple(keys), tuple(args))
        if not reply:
            return None
        _check_overflow(reply, lines)
        if len(reply) == 1:  # {-1}: the id is taken by an ended or different hold
            raise InvalidInputError(
                f"hold id {hold_id!r} was already used for a different or finished reservation"
            )
        index, spent, heldsum, expired = reply
        return Refusal(int(index), int(spent), int(heldsum) - int(expired))

    def _hold_keys(self, hold_id: str) -> tuple[str, ...]:
        # Settle and release read the hold's windows from its record: only these are known
        # up front. The others share the hash tag, so they are in the same slot.
        return (self.k_hold(hold_id), self.k_active)

    def settle(
        self,
        hold_id: str,
        actual: int,
        model: str | None,
        now: float,
        actuals: Mapping[str, int] | None = None,
        log: LogRecord | None = None,
    ) -> Plan[SettleResult]:
        Checks.settle(hold_id, actual, model, now, actuals, log)
        keys = self._hold_keys(hold_id)
        args: list[str | bytes | int] = [
            self.p, hold_id, actual, "0" if model is None else "1", model or "",
        ]  # fmt: skip
        if log is None:
            args += ["0", "", "", ""]
        else:
            kind, at, data = log
            keys += self._log_keys(kind)
            args += ["1", kind, _score(at), json.dumps(dict(data))]
        for scope, value in (actuals or {}).items():
            args += [scope, value]
        reply = yield _Eval(SCRIPTS["settle"], keys, tuple(args))
        if not reply:
            raise UnknownHoldError(hold_id)
        _check_overflow(reply, None)
        return SettleResult(int(reply[0]), already=bool(int(reply[1])))

    def release(self, hold_id: str, now: float) -> Plan[bool]:
        Checks.release(hold_id, now)
        reply = yield _Eval(SCRIPTS["release"], self._hold_keys(hold_id), (self.p, hold_id))
        if int(reply) < 0:
            raise UnknownHoldError(hold_id)
        return bool(int(reply))

    def charge(
        self,
        lines: Sequence[Line],
        amount: int,
        model: str | None,
        now: float,
        charge_id: str | None = None,
    ) -> Plan[bool]:
        Checks.charge(lines, amount, model, now, charge_id)
        keys: list[str] = [self.k_charge(charge_id or ""), self.k_charges]
        args: list[str | bytes | int] = [
            self.p, amount, "0" if model is None else "1", model or "", charge_id or "",
            _score(now),
        ]  # fmt: skip
        for line in lines:
            keys += [
                self.k_spent(line.scope),
                self.k_wins(line.scope),
                self.k_model(line.scope, line.window),
            ]
            args += [line.scope, line.window]
        reply = yield _Eval(SCRIPTS["charge"], tuple(keys), tuple(args))
        _check_overflow(reply, lines)
        if isinstance(reply, list):  # {-1}: the id was used for another charge
            assert charge_id is not None
            raise charge_conflict(charge_id)
        return bool(int(reply))

    def usage(self, scope: str, window: int, now: float) -> Plan[Usage]:
        Checks.window(scope, window, now)
        keys = (
            self.k_spent(scope),
            self.k_held(scope, window),
            self.k_heldsum(scope, window),
            self.k_model(scope, window),
        )
        reply = yield _Eval(SCRIPTS["usage"], keys, (self.p, scope, window, _score(now)))
        spent, heldsum, expired, flat = reply
        by_model = {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return Usage(int(spent), int(heldsum) - int(expired), by_model)

    def reset(self, scope: str, window: int) -> Plan[None]:
        Checks.window(scope, window)
        keys = (self.k_spent(scope), self.k_wins(scope), self.k_model(scope, window))
        yield _Eval(SCRIPTS["reset"], keys, (self.p, scope, window))

    def history(self, scope: str, limit: int) -> Plan[list[tuple[int, int]]]:
        Checks.history(scope, limit)
        if limit <= 0:
            return []
        keys = (self.k_wins(scope), self.k_spent(scope))
        wins, spent = yield _Eval(SCRIPTS["history"], keys, (self.p, scope, limit))
        return [(int(w), int(s or 0)) for w, s in zip(wins, spent, strict=True)]

    def purge(self, now: float, retention: float) -> Plan[int]:
        Checks.purge(now, retention)
        removed_total = 0
        keys = (self.k_active, self.k_holds, self.k_charges)
        args = (self.p, _score(now), _score(now - retention), PURGE_BATCH)
        while True:
            pruned, removed, charges = yield _Eval(SCRIPTS["purge"], keys, args)
            removed_total += int(removed)
            if max(int(pruned), int(removed), int(charges)) < PURGE_BATCH:
                return removed_total

    # -- budget definitions and documents: records by name with a listing index -------

    @property
    def _budget_keys(self) -> tuple[str, ...]:
        return (f"{self.p}budgets", f"{self.p}budget-index")

    def _doc_keys(self, kind: str) -> tuple[str, ...]:
        return (f"{self.p}docs:{kind}", f"{self.p}doc-index:{kind}")

    def _put(self, keys: tuple[str, ...], name: str, record: str) -> Plan[None]:
        yield _Eval(SCRIPTS["hash_put"], keys, (self.p, name, record))

    def _get(self, keys: tuple[str, ...], names: Sequence[str]) -> Plan[list[Any]]:
        found: list[Any] = [None] * len(names)
        if not names:
            return found
        flat = yield _Eval(SCRIPTS["hash_get"], keys, (self.p, *names))
        for i in range(0, len(flat), 2):
            found[int(flat[i]) - 1] = flat[i + 1]
        return found

    def _list(self, keys: tuple[str, ...], prefix: str) -> Plan[list[tuple[str, Any]]]:
        if prefix:
            # 0xFF never occurs in UTF-8, so "(prefix\xff" bounds every extension of prefix.
            encoded = prefix.encode("utf-8")
            low, high = b"[" + encoded, b"(" + encoded + b"\xff"
        else:
            low, high = b"-", b"+"
        flat = yield _Eval(SCRIPTS["hash_list"], keys, (self.p, low, high))
        return [(_text(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]

    def _delete(self, keys: tuple[str, ...], name: str) -> Plan[bool]:
        reply = yield _Eval(SCRIPTS["hash_delete"], keys, (self.p, name))
        return bool(int(reply))

    def put_budget(self, record: BudgetRecord) -> Plan[None]:
        Checks.record(record)
        return self._put(self._budget_keys, record.scope, _encode_budget(record))

    def get_budgets(self, scopes: Sequence[str]) -> Plan[list[BudgetRecord | None]]:
        Checks.scopes(scopes)
        raw = yield from self._get(self._budget_keys, scopes)
        return [
            None if r is None else _decode_budget(s, r) for s, r in zip(scopes, raw, strict=True)
        ]

    def list_budgets(self, prefix: str) -> Plan[list[BudgetRecord]]:
        Checks.name(prefix, "prefix", allow_empty=True)
        rows = yield from self._list(self._budget_keys, prefix)
        return [_decode_budget(scope, raw) for scope, raw in rows]

    def delete_budget(self, scope: str) -> Plan[bool]:
        Checks.name(scope, "scope")
        return self._delete(self._budget_keys, scope)

    def put_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> Plan[None]:
        Checks.doc(kind, key, data)
        return self._put(self._doc_keys(kind), key, json.dumps(dict(data)))

    def create_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> Plan[bool]:
        Checks.doc(kind, key, data)
        args = (self.p, key, json.dumps(dict(data)))
        reply = yield _Eval(SCRIPTS["hash_create"], self._doc_keys(kind), args)
        return bool(int(reply))

    def get_doc(self, kind: str, key: str) -> Plan[dict[str, Any] | None]:
        Checks.doc(kind, key)
        (raw,) = yield from self._get(self._doc_keys(kind), [key])
        return None if raw is None else _json(raw)

    def list_docs(self, kind: str, prefix: str) -> Plan[list[tuple[str, dict[str, Any]]]]:
        Checks.list_docs(kind, prefix)
        rows = yield from self._list(self._doc_keys(kind), prefix)
        return [(key, _json(raw)) for key, raw in rows]

    def delete_doc(self, kind: str, key: str) -> Plan[bool]:
        Checks.doc(kind, key)
        return self._delete(self._doc_keys(kind), key)

    # -- logs ------------------------------------------------------------------------

    def _log_keys(self, kind: str) -> tuple[str, str]:
        return (f"{self.p}log:{kind}", f"{self.p}log-seq:{kind}")

    def append_log(self, kind: str, at: float, data: Mapping[str, Any]) -> Plan[None]:
        Checks.log(kind, at, data)
        keys = self._log_keys(kind)
        yield _Eval(SCRIPTS["log_append"], keys, (self.p, _score(at), json.dumps(dict(data))))

    def read_log(self, kind: str, since: float, until: float, limit: int) -> Plan[list[LogEntry]]:
        Checks.read_log(kind, since, until, limit)
        if limit <= 0:
            return []
        args = (self.p, "(" + _score(until), _score(since), limit)
        flat = yield _Eval(SCRIPTS["log_read"], (f"{self.p}log:{kind}",), args)
        entries = []
        for i in range(0, len(flat), 2):
            member = _text(flat[i])
            entries.append(LogEntry(float(flat[i + 1]), _json(member[member.index(":") + 1 :])))
        return entries


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


def _reply_errors() -> tuple[type[BaseException], ...]:
    """Errors the server replied with for one call (it answered; the connection is fine),
    as a pipeline reports them in place of that call's reply."""
    import redis.exceptions as rx

    return (rx.ResponseError,)


def _is_noscript(exc: BaseException) -> bool:
    import redis.exceptions as rx

    return isinstance(exc, rx.NoScriptError)


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
        self._ops = _Ops(self._config.prefix)
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

    def _eval(self, call: _Eval) -> Any:
        if self._config.cluster:
            # redis-py refuses scripts in cluster pipelines: one trip per call there.
            return self._reply(self._send([call])[0])
        # Threads calling at once share round trips (see stores.pipelining).
        return self._reply(self._pipe.call(call))

    def _send(self, calls: Sequence[_Eval]) -> list[Any]:
        try:
            return self._translated(run_sync(_send_plan(calls), self._round_trip))
        except _errors() as exc:
            raise _translate(exc, self._where) from exc

    def _round_trip(self, batch: _Batch) -> list[Any]:
        if len(batch.calls) == 1:
            return [_one(self._client, batch)]
        pipe = self._client.pipeline(transaction=False)
        _queue(pipe, batch)
        return list(pipe.execute(raise_on_error=False))

    def _run(self, plan: Plan[T]) -> T:
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

    async def _eval(self, call: _Eval) -> Any:
        if self._config.cluster:
            # redis-py refuses scripts in cluster pipelines: one trip per call there.
            return self._reply((await self._send([call]))[0])
        # Tasks calling at once share round trips (see stores.pipelining).
        return self._reply(await self._pipe.call(call))

    async def _send(self, calls: Sequence[_Eval]) -> list[Any]:
        try:
            return self._translated(await run_async(_send_plan(calls), self._round_trip))
        except _errors() as exc:
            raise _translate(exc, self._where) from exc

    async def _round_trip(self, batch: _Batch) -> list[Any]:
        if len(batch.calls) == 1:
            return [await _aone(self._client, batch)]
        pipe = self._client.pipeline(transaction=False)
        _queue(pipe, batch)
        return list(await pipe.execute(raise_on_error=False))

    async def _run(self, plan: Plan[T]) -> T:
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
