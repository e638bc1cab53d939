"""Whether a failed call may have been billed: the one rule that decides release or charge.

A reservation is **released** only when nothing can have been billed:

* the provider answered with an HTTP error (4xx/5xx): providers do not bill those;
* the request never left the machine: connection refused or never made, a connect or pool
  timeout, a bad URL, an error the SDK raised before sending (no API key, bad arguments),
  or an error a door marked with :func:`mark_not_sent` / :func:`not_sent`.

Everything else — a read timeout, a connection lost after sending, a body broken off
midway, cancellation, an unknown error — may have been processed, and billed, by the
provider: the call is charged its **whole reservation**.

>>> nothing_billed(ConnectionRefusedError())
True
>>> nothing_billed(TimeoutError("read timed out"))
False
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["billed_answer", "mark_not_sent", "not_sent", "nothing_billed"]

# Transport errors raised before a request left the machine (httpx, httpcore, aiohttp and
# the standard library share these names).
_NOT_SENT = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "PoolTimeout",
        "ConnectionRefusedError",
        "UnsupportedProtocol",
        "InvalidURL",
        "ClientConnectorError",
        "ClientConnectorDNSError",
        "gaierror",
    }
)
_SDK_ROOTS = frozenset({"OpenAIError", "AnthropicError"})
_MARK = "__llmbudget_not_sent__"


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def not_sent(error: BaseException) -> BaseException:
    """Mark ``error`` as raised before any request was sent (so its hold is released)."""
    with contextlib.suppress(AttributeError, TypeError):
        setattr(error, _MARK, True)
    return error


@contextlib.contextmanager
def mark_not_sent() -> Iterator[None]:
    """Mark errors raised inside the block as raised before any request was sent."""
    try:
        yield
    except BaseException as exc:
        not_sent(exc)
        raise


def billed_answer(status: int) -> bool:
    """Whether an HTTP answer with ``status`` is billed: success only."""
    return status < 400


def nothing_billed(error: BaseException) -> bool:
    """Whether ``error`` proves the request was not processed, so nothing was billed
    (the rule of the module docstring)."""
    names = _names(error)
    if "APIStatusError" in names or getattr(error, _MARK, False):
        return True
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _names(current) & _NOT_SENT or getattr(current, _MARK, False):
            return True
        cause = current.__cause__
        if cause is None and not current.__suppress_context__:
            cause = current.__context__
        current = cause
    return bool(names & _SDK_ROOTS) and "APIError" not in names
