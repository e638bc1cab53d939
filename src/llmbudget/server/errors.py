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
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmbudget.errors import (
    BudgetExceededError,
    CounterOverflowError,
    InvalidAmountError,
    InvalidDurationError,
    InvalidInputError,
    NotFoundError,
    StoreError,
    StoreUnavailableError,
    UnknownHoldError,
    UnknownUserError,
)
from llmbudget.http_errors import TYPE_BY_STATUS, ApiError, budget_exceeded_error, error_body

__all__ = ["SEED_PATHS", "ApiError", "error_body", "error_response", "install_error_handlers"]

# ApiError and error_body live in llmbudget.http_errors (the gateway answers with them
# too); they are re-exported here for the server's modules.

log = logging.getLogger("llmbudget.server")

SEED_PATHS = frozenset({"/get_budget", "/set_budget"})


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
        type_ or TYPE_BY_STATUS.get(status, "api_error"), message, code, param=param, **extra
    )
    if request is not None and request.url.path in SEED_PATHS:
        # LiteLLM's hosted client branches on "status"; keep its shape as well.
        body = {"status": "error", "message": message, **body}
    return JSONResponse(body, status_code=status, headers=headers)


def budget_exceeded_response(request: Request, exc: BudgetExceededError) -> JSONResponse:
    clock = getattr(request.app.state, "clock", None)
    return _api_error_response(request, budget_exceeded_error(exc, clock() if clock else 0.0))


def _api_error_response(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(
        request,
        exc.status,
        exc.code,
        exc.message,
        param=exc.param,
        headers=exc.headers or None,
        type_=exc.type,
        **exc.extra,
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
        return _api_error_response(request, exc)

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
        if isinstance(exc, CounterOverflowError):
            code = "counter_overflow"
        elif isinstance(exc, InvalidAmountError):
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
