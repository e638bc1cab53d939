"""The Redis store's operations: the Lua scripts (``stores/lua/``), the calls each operation
makes (key names, arguments) and the decoding of their replies. Pure: nothing here holds a
connection; the shells in :mod:`llmbudget.stores.redis` send what these plans yield, pipelined
or one by one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

from llmbudget.errors import (
    CounterOverflowError,
    InvalidInputError,
    UnknownHoldError,
)
from llmbudget.stores.base import (
    BudgetRecord,
    Checks,
    Line,
    LogEntry,
    LogRecord,
    Refusal,
    SettleResult,
    Usage,
    charge_conflict,
)

__all__ = [
    "PURGE_BATCH",
    "Batch",
    "Eval",
    "Ops",
    "Plan",
    "aone",
    "is_noscript",
    "one",
    "queue",
    "reply_errors",
    "send_plan",
]

T = TypeVar("T")

# How many holds purge handles per script call: a script blocks the whole server.
PURGE_BATCH = 500

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
class Eval:
    """One script call: what both shells send, whatever client they hold."""

    script: _Script
    keys: tuple[str, ...]
    args: tuple[str | bytes | int, ...]


def reply_errors() -> tuple[type[BaseException], ...]:
    """Errors the server replied with for one call (it answered; the connection is fine),
    as a pipeline reports them in place of that call's reply."""
    import redis.exceptions as rx

    return (rx.ResponseError,)


def is_noscript(exc: BaseException) -> bool:
    import redis.exceptions as rx

    return isinstance(exc, rx.NoScriptError)


Plan = Generator[Eval, Any, T]


@dataclass(frozen=True, slots=True)
class Batch:
    """Script calls sent in one round trip: by hash (``EVALSHA``), or with their source
    (``EVAL``, which also caches the script) after the server said it does not know it."""

    calls: Sequence[Eval]
    source: bool = False


def send_plan(calls: Sequence[Eval]) -> Generator[Batch, list[Any], list[Any]]:
    """One reply per call (a value, or that call's own error), for both shells: each
    :class:`Batch` yielded is one round trip, and receives one reply per call in it."""
    replies = list((yield Batch(calls)))
    unknown = [i for i, reply in enumerate(replies) if is_noscript(reply)]
    if unknown:
        # First use on this server (or after SCRIPT FLUSH). NOSCRIPT means the call did
        # not run, so sending it again cannot apply it twice.
        again = yield Batch([calls[i] for i in unknown], source=True)
        for i, reply in zip(unknown, again, strict=True):
            replies[i] = reply
    return replies


def one(client: Any, batch: Batch) -> Any:
    """The reply of a batch of one, sent as a plain command (no pipeline to build)."""
    [call] = batch.calls
    script = call.script.source if batch.source else call.script.sha
    command = client.eval if batch.source else client.evalsha
    try:
        return command(script, len(call.keys), *call.keys, *call.args)
    except reply_errors() as exc:
        return exc


async def aone(client: Any, batch: Batch) -> Any:
    [call] = batch.calls
    script = call.script.source if batch.source else call.script.sha
    command = client.eval if batch.source else client.evalsha
    try:
        return await command(script, len(call.keys), *call.keys, *call.args)
    except reply_errors() as exc:
        return exc


def queue(pipe: Any, batch: Batch) -> None:
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


class Ops:
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
        reply = yield Eval(SCRIPTS["reserve"], tuple(keys), tuple(args))
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
        reply = yield Eval(SCRIPTS["settle"], keys, tuple(args))
        if not reply:
            raise UnknownHoldError(hold_id)
        _check_overflow(reply, None)
        return SettleResult(int(reply[0]), already=bool(int(reply[1])))

    def release(self, hold_id: str, now: float) -> Plan[bool]:
        Checks.release(hold_id, now)
        reply = yield Eval(SCRIPTS["release"], self._hold_keys(hold_id), (self.p, hold_id))
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
        reply = yield Eval(SCRIPTS["charge"], tuple(keys), tuple(args))
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
        reply = yield Eval(SCRIPTS["usage"], keys, (self.p, scope, window, _score(now)))
        spent, heldsum, expired, flat = reply
        by_model = {_text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        return Usage(int(spent), int(heldsum) - int(expired), by_model)

    def reset(self, scope: str, window: int) -> Plan[None]:
        Checks.window(scope, window)
        keys = (self.k_spent(scope), self.k_wins(scope), self.k_model(scope, window))
        yield Eval(SCRIPTS["reset"], keys, (self.p, scope, window))

    def history(self, scope: str, limit: int) -> Plan[list[tuple[int, int]]]:
        Checks.history(scope, limit)
        if limit <= 0:
            return []
        keys = (self.k_wins(scope), self.k_spent(scope))
        wins, spent = yield Eval(SCRIPTS["history"], keys, (self.p, scope, limit))
        return [(int(w), int(s or 0)) for w, s in zip(wins, spent, strict=True)]

    def purge(self, now: float, retention: float) -> Plan[int]:
        Checks.purge(now, retention)
        removed_total = 0
        keys = (self.k_active, self.k_holds, self.k_charges)
        args = (self.p, _score(now), _score(now - retention), PURGE_BATCH)
        while True:
            pruned, removed, charges = yield Eval(SCRIPTS["purge"], keys, args)
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
        yield Eval(SCRIPTS["hash_put"], keys, (self.p, name, record))

    def _get(self, keys: tuple[str, ...], names: Sequence[str]) -> Plan[list[Any]]:
        found: list[Any] = [None] * len(names)
        if not names:
            return found
        flat = yield Eval(SCRIPTS["hash_get"], keys, (self.p, *names))
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
        flat = yield Eval(SCRIPTS["hash_list"], keys, (self.p, low, high))
        return [(_text(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]

    def _delete(self, keys: tuple[str, ...], name: str) -> Plan[bool]:
        reply = yield Eval(SCRIPTS["hash_delete"], keys, (self.p, name))
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
        reply = yield Eval(SCRIPTS["hash_create"], self._doc_keys(kind), args)
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
        yield Eval(SCRIPTS["log_append"], keys, (self.p, _score(at), json.dumps(dict(data))))

    def read_log(self, kind: str, since: float, until: float, limit: int) -> Plan[list[LogEntry]]:
        Checks.read_log(kind, since, until, limit)
        if limit <= 0:
            return []
        args = (self.p, "(" + _score(until), _score(since), limit)
        flat = yield Eval(SCRIPTS["log_read"], (f"{self.p}log:{kind}",), args)
        entries = []
        for i in range(0, len(flat), 2):
            member = _text(flat[i])
            entries.append(LogEntry(float(flat[i + 1]), _json(member[member.index(":") + 1 :])))
        return entries
