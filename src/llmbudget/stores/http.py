"""A :class:`~llmbudget.stores.base.Store` that is a budget server (``llmbudget serve``).

Each method is one ``POST`` to the server's ``/v1/store/<method>`` endpoint, which runs
the same method on the server's own store in one atomic operation. So the
:class:`~llmbudget.ledger.Ledger` (and ``BudgetManager(client_type="hosted")``) works
unchanged on top, and any number of clients and app servers share budgets without ever
losing an update.

>>> store = HttpStore("http://127.0.0.1:8000", api_key="s3cret")  # doctest: +SKIP
>>> from llmbudget import BudgetManager
>>> bm = BudgetManager("my-app", client_type="hosted", api_base="http://127.0.0.1:8000",
...                    headers={"Authorization": "Bearer s3cret"})  # doctest: +SKIP

Errors come back typed, as from a local store: an unknown hold raises
:class:`~llmbudget.errors.UnknownHoldError`, a refused argument
:class:`~llmbudget.errors.InvalidInputError`, and anything that means the server cannot
answer (connection refused, timeout, 5xx, a reply that is not the server's) raises
:class:`~llmbudget.errors.StoreUnavailableError`: callers fail closed, nothing is reserved
or charged by a call that raised. A wrong or missing admin key raises
:class:`~llmbudget.errors.StoreError` naming the problem.

Retries: only a connection that could not be opened is retried (the request never left,
so even a ``charge`` cannot be applied twice). A timeout is not retried, because the
server may have applied the operation; a reserve that timed out simply expires.
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from llmbudget.errors import (
    CounterOverflowError,
    InvalidAmountError,
    InvalidDurationError,
    InvalidInputError,
    StoreError,
    StoreUnavailableError,
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
    Store,
    Usage,
)
from llmbudget.units import check_unit

__all__ = ["HttpStore"]

DEFAULT_TIMEOUT = 10.0
_INPUT_ERRORS: dict[str, type[InvalidInputError]] = {
    "invalid_amount": InvalidAmountError,
    "invalid_duration": InvalidDurationError,
}
_BATCH = 1000


class HttpStore(Store):
    """Store over HTTP. Thread-safe; a forked child opens its own connections.

    ``headers`` are sent with every request (LiteLLM-style, e.g. ``{"Authorization":
    "Bearer …"}``). Without an ``Authorization`` header, ``api_key`` (or
    ``$LLMBUDGET_ADMIN_KEY``) is sent as a bearer token.
    """

    def __init__(
        self,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_retries: int = 2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise InvalidInputError(f"budget server URL must be http(s)://…, got {base_url!r}")
        if timeout <= 0:
            raise InvalidInputError("timeout must be positive")
        self.base_url = base_url.rstrip("/")
        merged = {str(k): str(v) for k, v in (headers or {}).items()}
        if not any(k.lower() == "authorization" for k in merged):
            key = api_key or os.environ.get("LLMBUDGET_ADMIN_KEY")
            if key:
                merged["Authorization"] = f"Bearer {key}"
        # Content-Type is set by httpx for JSON bodies; a caller's stale value is dropped.
        self._headers = {k: v for k, v in merged.items() if k.lower() != "content-type"}
        self._timeout = timeout
        self.timeout = timeout
        self._connect_retries = max(0, connect_retries)
        self._transport = transport
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._pid = os.getpid()

    @property
    def identity(self) -> str:
        """The server's address (without credentials), for the journal."""
        parts = urlsplit(self.base_url)
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))

    # -- transport -------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                # After a fork the parent's pooled sockets must not be shared.
                self._client = httpx.Client(
                    base_url=self.base_url,
                    headers=self._headers,
                    timeout=self._timeout,
                    transport=self._transport,
                )
                self._pid = os.getpid()
            return self._client

    def _call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"/v1/store/{method}"
        for attempt in range(self._connect_retries + 1):
            try:
                response = self._http().post(url, json=body)
                break
            except httpx.ConnectError as exc:
                if attempt == self._connect_retries:
                    raise StoreUnavailableError(
                        f"budget server {self.base_url} unreachable: {exc}"
                    ) from exc
                time.sleep(0.05 * 2**attempt)
            except httpx.TimeoutException as exc:
                raise StoreUnavailableError(
                    f"budget server {self.base_url} timed out on {method}"
                ) from exc
            except httpx.HTTPError as exc:
                raise StoreUnavailableError(
                    f"budget server {self.base_url} failed on {method}: {exc}"
                ) from exc
        return self._result(method, body, response)

    def _result(
        self, method: str, body: dict[str, Any], response: httpx.Response
    ) -> dict[str, Any]:
        status = response.status_code
        try:
            payload = response.json()
        except ValueError:
            payload = None
        error = payload.get("error") if isinstance(payload, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        if 200 <= status < 300:
            if not isinstance(payload, dict):
                raise StoreUnavailableError(
                    f"budget server {self.base_url} sent a reply that is not JSON on {method}"
                )
            return payload
        detail = message or response.text[:200] or f"HTTP {status}"
        if status == 404 and code == "unknown_hold":
            raise UnknownHoldError(str(body.get("hold_id", "")))
        if status in (401, 403):
            raise StoreError(
                f"budget server {self.base_url} refused the admin key ({status}): {detail}"
            )
        if status >= 500 or (status == 404 and code is None):
            # A 404 without our error shape: not an llmbudget server (or a wrong base URL).
            raise StoreUnavailableError(f"budget server {self.base_url} {method}: {detail}")
        if status in (400, 413, 422):
            # The server's code says which refusal it was: the same type as a local store.
            if code == "counter_overflow":
                raise CounterOverflowError()
            raise _INPUT_ERRORS.get(str(code), InvalidInputError)(detail)
        raise StoreError(f"budget server {self.base_url} {method}: HTTP {status}: {detail}")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- the Store methods -----------------------------------------------------------

    def reserve(
        self, hold_id: str, lines: Sequence[Line], amount: int, expires_at: float, now: float
    ) -> Refusal | None:
        Checks.reserve(hold_id, lines, amount, expires_at, now)
        out = self._call(
            "reserve",
            {
                "hold_id": hold_id,
                "lines": [_line(line) for line in lines],
                "amount": amount,
                "expires_at": expires_at,
                "now": now,
            },
        )
        refusal = out.get("refusal")
        if refusal is None:
            return None
        return Refusal(int(refusal["index"]), int(refusal["spent"]), int(refusal["held"]))

    def settle(
        self,
        hold_id: str,
        actual: int,
        model: str | None,
        now: float,
        actuals: Mapping[str, int] | None = None,
        log: LogRecord | None = None,
    ) -> SettleResult:
        Checks.settle(hold_id, actual, model, now, actuals, log)
        body: dict[str, Any] = {"hold_id": hold_id, "actual": actual, "model": model, "now": now}
        if actuals:
            # Only when there are any: a server of the previous version knows no such field.
            body["actuals"] = dict(actuals)
        if log is not None:
            body["log"] = {"kind": log[0], "at": log[1], "data": dict(log[2])}
        out = self._call("settle", body)
        return SettleResult(int(out["actual"]), bool(out["already"]))

    def release(self, hold_id: str, now: float) -> bool:
        Checks.release(hold_id, now)
        return bool(self._call("release", {"hold_id": hold_id, "now": now})["released"])

    def charge(
        self,
        lines: Sequence[Line],
        amount: int,
        model: str | None,
        now: float,
        charge_id: str | None = None,
    ) -> bool:
        Checks.charge(lines, amount, model, now, charge_id)
        # Always with an id, so the server can tell a repeated request from a new charge.
        body = {
            "lines": [_line(line) for line in lines],
            "amount": amount,
            "model": model,
            "now": now,
            "charge_id": charge_id or f"http-{uuid.uuid4().hex}",
        }
        return bool(self._call("charge", body).get("recorded", True))

    def usage(self, scope: str, window: int, now: float) -> Usage:
        Checks.window(scope, window, now)
        out = self._call("usage", {"scope": scope, "window": window, "now": now})
        by_model = {str(m): int(v) for m, v in dict(out.get("by_model") or {}).items()}
        return Usage(int(out["spent"]), int(out["held"]), by_model)

    def reset(self, scope: str, window: int) -> None:
        Checks.window(scope, window)
        self._call("reset", {"scope": scope, "window": window})

    def history(self, scope: str, limit: int = 100) -> list[tuple[int, int]]:
        Checks.history(scope, limit)
        out = self._call("history", {"scope": scope, "limit": limit})
        return [(int(w), int(s)) for w, s in out["rows"]]

    def purge(self, now: float, retention: float) -> int:
        Checks.purge(now, retention)
        return int(self._call("purge", {"now": now, "retention": retention})["removed"])

    def put_budget(self, record: BudgetRecord) -> None:
        Checks.record(record)
        self._call("put_budget", {"record": _record_json(record)})

    def get_budgets(self, scopes: Sequence[str]) -> list[BudgetRecord | None]:
        Checks.scopes(scopes)
        found: list[BudgetRecord | None] = []
        # The server takes at most _BATCH scopes per request (its bodies are bounded).
        for start in range(0, len(scopes), _BATCH):
            out = self._call("get_budgets", {"scopes": list(scopes[start : start + _BATCH])})
            found.extend(None if r is None else _record(r) for r in out["records"])
        return found

    def list_budgets(self, prefix: str) -> list[BudgetRecord]:
        Checks.name(prefix, "prefix", allow_empty=True)
        out = self._call("list_budgets", {"prefix": prefix})
        return [_record(r) for r in out["records"]]

    def delete_budget(self, scope: str) -> bool:
        Checks.name(scope, "scope")
        return bool(self._call("delete_budget", {"scope": scope})["deleted"])

    # -- documents and logs ----------------------------------------------------------

    def put_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> None:
        Checks.doc(kind, key, data)
        self._call("put_doc", {"kind": kind, "key": key, "data": dict(data)})

    def create_doc(self, kind: str, key: str, data: Mapping[str, Any]) -> bool:
        Checks.doc(kind, key, data)
        out = self._call("create_doc", {"kind": kind, "key": key, "data": dict(data)})
        return bool(out["created"])

    def get_doc(self, kind: str, key: str) -> dict[str, Any] | None:
        Checks.doc(kind, key)
        data = self._call("get_doc", {"kind": kind, "key": key})["data"]
        return None if data is None else dict(data)

    def list_docs(self, kind: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        Checks.list_docs(kind, prefix)
        out = self._call("list_docs", {"kind": kind, "prefix": prefix})
        return [(str(key), dict(data)) for key, data in out["docs"]]

    def delete_doc(self, kind: str, key: str) -> bool:
        Checks.doc(kind, key)
        return bool(self._call("delete_doc", {"kind": kind, "key": key})["deleted"])

    def append_log(self, kind: str, at: float, data: Mapping[str, Any]) -> None:
        Checks.log(kind, at, data)
        self._call("append_log", {"kind": kind, "at": at, "data": dict(data)})

    def read_log(
        self, kind: str, since: float = 0.0, until: float = float("inf"), limit: int = 100
    ) -> list[LogEntry]:
        Checks.read_log(kind, since, until, limit)
        body = {
            "kind": kind,
            "since": since,
            # JSON has no infinity: null means "no upper bound".
            "until": None if math.isinf(until) else until,
            "limit": limit,
        }
        out = self._call("read_log", body)
        return [LogEntry(float(e["at"]), dict(e["data"])) for e in out["entries"]]


# Fields with their default value are left out, so that the operations of budgets in
# dollars stay readable by a server of the previous version.
def _line(line: Line) -> dict[str, Any]:
    out: dict[str, Any] = {"scope": line.scope, "window": line.window, "limit": line.limit}
    if line.amount is not None:
        out["amount"] = line.amount
    return out


def _record_json(record: BudgetRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "scope": record.scope,
        "limit": record.limit,
        "duration": record.duration,
        "timezone": record.timezone,
        "rolling": record.rolling,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
    if record.unit != "usd":
        out["unit"] = record.unit
    return out


def _record(data: Mapping[str, Any]) -> BudgetRecord:
    return BudgetRecord(
        scope=str(data["scope"]),
        limit=None if data.get("limit") is None else int(data["limit"]),
        duration=data.get("duration"),
        timezone=str(data.get("timezone") or "UTC"),
        rolling=bool(data.get("rolling")),
        created_at=float(data.get("created_at") or 0.0),
        updated_at=float(data.get("updated_at") or 0.0),
        unit=check_unit(data.get("unit") or "usd"),
    )
