"""Errors the gateway answers with, all in OpenAI's error shape.

Every refusal is JSON that the official SDKs parse into the matching exception::

    {"error": {"type": "budget_exceeded", "message": "...", "param": null,
               "code": "budget_exceeded", "scope": "gw-key:key_1a2b", "limit": "1", ...}}

=====  ========================  =======================================================
401    ``invalid_api_key``       no key, unknown, revoked or expired key (``AuthenticationError``)
403    ``model_not_allowed``     the key may not use the model (``PermissionDeniedError``)
404    ``model_not_found``       no deployment serves the model (``NotFoundError``)
400    ``invalid_request``       bad JSON or fields; nothing is reserved or stored
429    ``budget_exceeded``       a budget would be passed (``RateLimitError``), with ``Retry-After``
429    ``rate_limit_exceeded``   a rate limit would be passed, with ``x-ratelimit-*`` headers
503    ``no_deployment``         every deployment is cooling down or out of budget
=====  ========================  =======================================================

The handlers never raise through the host application: when the gateway is installed into
another FastAPI app (``llmbudget serve``) its errors keep this shape whatever handlers that
app has.

>>> GatewayError(400, "invalid_request", "messages must be a list").body()["error"]["type"]
'invalid_request_error'
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from llmbudget.errors import BudgetExceededError
from llmbudget.http_errors import TYPE_BY_STATUS, ApiError, budget_exceeded_error
from llmbudget.translate import anthropic_error

__all__ = ["GatewayError", "anthropic_errors", "budget_error", "error_response"]


class GatewayError(ApiError):
    """A request the gateway refuses; turned into an OpenAI-style JSON error response.

    >>> GatewayError(404, "model_not_found", "no such model", param="model").status
    404
    """

    # What OpenAI itself sends: a bad key is an ``invalid_request_error`` there.
    types: ClassVar[Mapping[int, str]] = {**TYPE_BY_STATUS, 401: "invalid_request_error", 404: "invalid_request_error",
             409: "invalid_request_error"}  # fmt: skip

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_response(status: int, code: str, message: str, **kwargs: Any) -> JSONResponse:
    """Shorthand for ``GatewayError(...).response()``."""
    return GatewayError(status, code, message, **kwargs).response()


def budget_error(
    exc: BudgetExceededError, now: float, *, label: str | None = None, per: str | None = None
) -> GatewayError:
    """The 429 for a refused reserve, a budget's or a rate limit's (see
    :func:`llmbudget.http_errors.budget_exceeded_error`), as a :class:`GatewayError`."""
    shared = budget_exceeded_error(exc, now, label=label, per=per)
    return GatewayError(
        shared.status, shared.code, shared.message, type_=shared.type, headers=shared.headers,
        extra=shared.extra,
    )  # fmt: skip


def anthropic_errors(
    endpoint: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """``endpoint`` answering errors in Anthropic's shape (``{"type": "error", "error":
    {"type": "rate_limit_error", ...}}``), as the ``anthropic`` SDK and Claude Code parse
    them on ``/v1/messages``; status, headers (``Retry-After``) and details are kept."""

    async def wrapped(request: Request) -> Response:
        response = await endpoint(request)
        if response.status_code < 400:
            return response
        try:
            body = json.loads(bytes(response.body))
        except (ValueError, AttributeError):
            body = None
        shaped = anthropic_error(response.status_code, body if isinstance(body, dict) else None)
        headers = {k: v for k, v in response.headers.items() if k.lower() not in _BODY_HEADERS}
        return JSONResponse(shaped, status_code=response.status_code, headers=headers)

    wrapped.__name__ = getattr(endpoint, "__name__", "endpoint")
    return wrapped


_BODY_HEADERS = ("content-length", "content-type")
