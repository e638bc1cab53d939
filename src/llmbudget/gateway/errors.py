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
503    ``no_deployment``         every deployment is cooling down or out of budget
=====  ========================  =======================================================

The handlers never raise through the host application: when the gateway is installed into
another FastAPI app (``llmbudget serve``) its errors keep this shape whatever handlers that
app has.

>>> GatewayError(400, "invalid_request", "messages must be a list").body()["error"]["type"]
'invalid_request_error'
"""

from __future__ import annotations

import math
from typing import Any

from starlette.responses import JSONResponse

from llmbudget.errors import BudgetExceededError

__all__ = ["GatewayError", "budget_error", "error_response"]

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "invalid_request_error",  # what OpenAI itself sends for a bad key
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    429: "budget_exceeded",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "api_error",
}


class GatewayError(Exception):
    """A request the gateway refuses; turned into an OpenAI-style JSON error response.

    >>> GatewayError(404, "model_not_found", "no such model", param="model").status
    404
    """

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
        self.type = type_ or _TYPE_BY_STATUS.get(status, "api_error")
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "type": self.type,
                "message": self.message,
                "param": self.param,
                "code": self.code,
                **self.extra,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_response(status: int, code: str, message: str, **kwargs: Any) -> JSONResponse:
    """Shorthand for ``GatewayError(...).response()``."""
    return GatewayError(status, code, message, **kwargs).response()


def budget_error(exc: BudgetExceededError, now: float, *, label: str | None = None) -> GatewayError:
    """The 429 for a refused reserve: names scope, limit, spent, held and reset time.

    ``Retry-After`` (whole seconds) is set when the refusing window will reset; a lifetime
    budget never resets, so it gets none. ``x-should-retry: false`` tells the OpenAI SDKs
    not to retry on their own: waiting a few seconds does not refill a budget.
    """
    fields: dict[str, Any] = dict(exc.to_dict())
    fields["remaining"] = str(exc.remaining)
    headers = {"x-should-retry": "false"}
    if exc.resets_at is not None:
        wait = max(1, math.ceil(exc.resets_at.timestamp() - now))
        headers["Retry-After"] = str(wait)
        fields["retry_after"] = wait
    who = f"{label} ({exc.scope})" if label else exc.scope
    when = f"; resets at {exc.resets_at.isoformat()}" if exc.resets_at else "; it never resets"
    message = (
        f"budget exceeded for {who}: limit ${exc.limit}, spent ${exc.spent}, held ${exc.held}, "
        f"this request needs up to ${exc.requested}{when}"
    )
    return GatewayError(
        429, "budget_exceeded", message, type_="budget_exceeded", headers=headers, extra=fields
    )
