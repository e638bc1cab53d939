"""Every error the server sends is JSON in OpenAI's shape, with the right 4xx.

::

    {"error": {"type": "budget_exceeded", "message": "...", "param": null,
               "code": "budget_exceeded", "scope": ..., "limit": "10", ...}}

The seed's own endpoints (``/get_budget``, ``/set_budget``) additionally carry
``"status": "error"`` and ``"message"``, because LiteLLM's client reads ``status``.

>>> error_body("invalid_request_error", "bad", "invalid_amount", param="amount")["error"]["param"]
'amount'
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmbudget.errors import (
    BudgetExceededError,
    InvalidAmountError,
    InvalidDurationError,
    InvalidInputError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
    UnknownHoldError,
    UnknownUserError,
)

__all__ = ["SEED_PATHS", "ApiError", "error_body", "error_response", "install_error_handlers"]

log = logging.getLogger("llmbudget.server")

SEED_PATHS = frozenset({"/get_budget", "/set_budget"})

_TYPE_BY_STATUS = {
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


class ApiError(Exception):
    """Raised by handlers for a clean JSON error: ``raise ApiError(409, "exists", "...")``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers
        self.extra = extra or {}


def error_body(
    type_: str, message: str, code: str, *, param: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The ``{"error": {...}}`` body (OpenAI's fields first, then any extra fields)."""
    return {"error": {"type": type_, "message": message, "param": param, "code": code, **extra}}


def error_response(
    request: Request | None,
    status: int,
    code: str,
    message: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
    type_: str | None = None,
    **extra: Any,
) -> JSONResponse:
    body = error_body(
        type_ or _TYPE_BY_STATUS.get(status, "api_error"), message, code, param=param, **extra
    )
    if request is not None and request.url.path in SEED_PATHS:
        # LiteLLM's hosted client branches on "status"; keep its shape as well.
        body = {"status": "error", "message": message, **body}
    return JSONResponse(body, status_code=status, headers=headers)


def retry_after(resets_at: datetime | None, now: float) -> dict[str, str]:
    """``Retry-After`` (whole seconds, at least 1) when the window resets; none for lifetime."""
    if resets_at is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(resets_at.timestamp() - now)))}


def budget_exceeded_response(request: Request, exc: BudgetExceededError) -> JSONResponse:
    clock = getattr(request.app.state, "clock", None)
    now = clock() if clock is not None else 0.0
    fields = exc.to_dict()
    fields["remaining"] = str(exc.remaining)
    return error_response(
        request,
        429,
        "budget_exceeded",
        str(exc),
        headers=retry_after(exc.resets_at, now),
        type_="budget_exceeded",
        **fields,
    )


def _validation_message(
    exc: RequestValidationError,
) -> tuple[str, str | None, list[dict[str, Any]]]:
    details: list[dict[str, Any]] = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        # "body"/"query"/"path" is where, not what: drop it from the field name.
        field = ".".join(loc[1:]) if len(loc) > 1 else ".".join(loc)
        details.append({"param": field or None, "message": str(err.get("msg", "invalid"))})
    if not details:
        return "invalid request", None, details
    first = details[0]
    where = f"{first['param']}: " if first["param"] else ""
    more = f" (and {len(details) - 1} more)" if len(details) > 1 else ""
    return f"{where}{first['message']}{more}", first["param"], details


def install_error_handlers(app: FastAPI) -> None:
    """Map validation errors, HTTP errors and llmbudget's exceptions to JSON responses."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param, details = _validation_message(exc)
        return error_response(
            request, 422, "validation_error", message, param=param, details=details
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            401: "missing_api_key",
            403: "invalid_api_key",
            404: "not_found",
            405: "method_not_allowed",
            413: "request_too_large",
        }
        return error_response(
            request,
            exc.status_code,
            codes.get(exc.status_code, f"http_{exc.status_code}"),
            str(exc.detail),
            headers=dict(exc.headers) if exc.headers else None,
        )

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(
            request,
            exc.status,
            exc.code,
            exc.message,
            param=exc.param,
            headers=exc.headers,
            **exc.extra,
        )

    @app.exception_handler(BudgetExceededError)
    async def _budget(request: Request, exc: BudgetExceededError) -> JSONResponse:
        return budget_exceeded_response(request, exc)

    @app.exception_handler(NotFoundError)
    async def _not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        if isinstance(exc, UnknownHoldError):
            return error_response(request, 404, "unknown_hold", str(exc), hold_id=exc.hold_id)
        if isinstance(exc, UnknownUserError):
            return error_response(request, 404, "unknown_user", str(exc), user=exc.user)
        return error_response(request, 404, "not_found", str(exc))

    @app.exception_handler(InvalidInputError)
    async def _invalid(request: Request, exc: InvalidInputError) -> JSONResponse:
        code = "invalid_input"
        if isinstance(exc, InvalidAmountError):
            code = "invalid_amount"
        elif isinstance(exc, InvalidDurationError):
            code = "invalid_duration"
        return error_response(request, 400, code, str(exc))

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        log.error("store error on %s %s: %s", request.method, request.url.path, exc)
        if isinstance(exc, StoreUnavailableError):
            return error_response(
                request, 503, "store_unavailable", f"the budget store is unavailable: {exc}"
            )
        return error_response(request, 500, "store_error", f"the budget store failed: {exc}")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "internal_error", "internal server error")
