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
from llmbudget.money import format_money

__all__ = ["TYPE_BY_STATUS", "ApiError", "budget_exceeded_error", "error_body"]

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
    exc: BudgetExceededError, now: float, *, message: str | None = None
) -> ApiError:
    """The 429 for a refused reserve: scope, limit, spent, held, remaining and reset time.

    ``Retry-After`` (whole seconds, at least 1) is set when the refusing window will reset;
    a lifetime budget never resets, so it gets none. ``x-should-retry: false`` tells the
    OpenAI SDKs not to retry on their own: waiting a few seconds does not refill a budget.
    """
    fields: dict[str, Any] = dict(exc.to_dict())
    fields["remaining"] = format_money(exc.remaining)
    headers = {"x-should-retry": "false"}
    if exc.resets_at is not None:
        wait = max(1, math.ceil(exc.resets_at.timestamp() - now))
        headers["Retry-After"] = str(wait)
        fields["retry_after"] = wait
    return ApiError(
        429,
        "budget_exceeded",
        message or str(exc),
        type_="budget_exceeded",
        headers=headers,
        extra=fields,
    )
