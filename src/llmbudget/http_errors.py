"""OpenAI-shaped JSON errors, shared by the budget server and the gateway.

Every refusal is a body the official SDKs parse into their matching exception::

    {"error": {"type": "budget_exceeded", "message": "...", "param": null,
               "code": "budget_exceeded", "scope": "user:app:ann", "limit": "1", ...}}

>>> ApiError(404, "unknown_user", "no budget for 'ann'").body()["error"]["type"]
'not_found_error'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from llmbudget.errors import BudgetExceededError
from llmbudget.units import format_amount

__all__ = [
    "TYPE_BY_STATUS",
    "ApiError",
    "budget_exceeded_error",
    "error_body",
    "refusal_message",
]

TYPE_BY_STATUS: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    411: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "budget_exceeded",
}


def error_body(
    type_: str, message: str, code: str, *, param: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The ``{"error": {...}}`` body (OpenAI's fields first, then any extra fields)."""
    return {"error": {"type": type_, "message": message, "param": param, "code": code, **extra}}


class ApiError(Exception):
    """A clean JSON refusal: ``raise ApiError(409, "exists", "...")``. ``type`` defaults
    from the status (:data:`types`, which a subclass may replace)."""

    types: ClassVar[Mapping[int, str]] = TYPE_BY_STATUS

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.type = type_ or self.types.get(status, "api_error")
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.type, self.message, self.code, param=self.param, **self.extra)


def budget_exceeded_error(
    exc: BudgetExceededError, now: float, *, label: str | None = None, per: str | None = None
) -> ApiError:
    """The 429 for a refused reserve: scope, unit, limit, spent, held, remaining and reset
    time, its message naming the scope by ``label`` when given (``per``: how a rate
    limit's window reads, ``"per minute"``).

    A budget in dollars is ``budget_exceeded``: ``Retry-After`` (whole seconds, at least
    1) is set when its window will reset (a lifetime budget never does), and
    ``x-should-retry: false`` tells the OpenAI SDKs not to retry on their own: waiting a
    few seconds does not refill a budget.

    A rate limit (a budget in requests, tokens or slots) is ``rate_limit_exceeded``, with
    OpenAI's ``x-ratelimit-limit-<unit>``, ``x-ratelimit-remaining-<unit>`` and (for a
    window) ``x-ratelimit-reset-<unit>`` headers and ``Retry-After``: the seconds until
    the window resets, or 1 for a slot (one frees when a call in flight ends). The SDKs
    may retry it, unless the request alone is larger than the limit.

    >>> from decimal import Decimal as D
    >>> refused = BudgetExceededError("gw-key-rpm:k", D(10), D(10), D(0), D(1), unit="requests")
    >>> error = budget_exceeded_error(refused, 0, label="key k", per="per minute")
    >>> error.code, error.headers["x-ratelimit-remaining-requests"]
    ('rate_limit_exceeded', '0')
    >>> error.message
    'rate limit exceeded for key k (gw-key-rpm:k): 10 requests per minute, 10 used, 0 in flight, this request needs 1'
    """
    fields: dict[str, Any] = dict(exc.to_dict())
    fields["remaining"] = format_amount(exc.remaining, exc.unit)
    until = None if exc.resets_at is None else exc.resets_at.timestamp() - now
    wait = None if until is None else max(1, math.ceil(until))
    headers: dict[str, str] = {}
    if exc.unit == "usd":
        code = "budget_exceeded"
        headers["x-should-retry"] = "false"
    else:
        code = "rate_limit_exceeded"
        headers[f"x-ratelimit-limit-{exc.unit}"] = fields["limit"]
        headers[f"x-ratelimit-remaining-{exc.unit}"] = fields["remaining"]
        if until is not None:
            headers[f"x-ratelimit-reset-{exc.unit}"] = _duration(until)
        else:
            wait = 1  # a slot: one is freed as soon as a call in flight ends
        if exc.requested > exc.limit:
            headers["x-should-retry"] = "false"  # it can never fit, however long one waits
    if wait is not None:
        headers["Retry-After"] = str(wait)
        fields["retry_after"] = wait
    return ApiError(
        429,
        code,
        refusal_message(exc, label=label, per=per),
        type_=code,
        headers=headers,
        extra=fields,
    )


def refusal_message(
    exc: BudgetExceededError, *, label: str | None = None, per: str | None = None
) -> str:
    """A refusal in words, in the budget's unit: dollars as ``$`` amounts, counts as
    counts ("10 requests per minute, 10 used")."""
    who = f"{label} ({exc.scope})" if label else exc.scope
    amounts = exc.to_dict()
    if exc.unit == "usd":
        when = f"; resets at {amounts['resets_at']}" if exc.resets_at else "; it never resets"
        return (
            f"budget exceeded for {who}: limit ${amounts['limit']}, spent ${amounts['spent']}, "
            f"held ${amounts['held']}, this request needs up to ${amounts['requested']}{when}"
        )
    noun = "tokens" if exc.unit == "tokens" else "requests"
    window = f" {per}" if per else ""
    if exc.unit == "concurrent":
        used = f"{amounts['held']} in flight"
        when = "; a slot frees when one of them ends"
    else:
        held = "in flight" if exc.unit == "requests" else "held by calls in flight"
        used = f"{amounts['spent']} used, {amounts['held']} {held}"
        when = f"; resets at {amounts['resets_at']}" if exc.resets_at else ""
    needs = "up to " if exc.unit == "tokens" else ""
    return (
        f"rate limit exceeded for {who}: {amounts['limit']} {noun}{window}, {used}, "
        f"this request needs {needs}{amounts['requested']}{when}"
    )


def _duration(seconds: float) -> str:
    """A wait as OpenAI's reset headers write it: ``"20ms"``, ``"59s"``, ``"6m0s"``."""
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
