"""Error bodies of either API in the other's shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["anthropic_error", "openai_error"]

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error(
    status: int, body: Mapping[str, Any] | None, fallback: str = ""
) -> dict[str, Any]:
    """An error body in Anthropic's shape (``{"type": "error", "error": {...}}``), from an
    OpenAI-style one (its extra fields kept) or from nothing.

    >>> anthropic_error(429, {"error": {"message": "slow down", "type": "budget_exceeded"}})
    {'type': 'error', 'error': {'type': 'rate_limit_error', 'message': 'slow down', 'code': 'budget_exceeded'}}
    """
    if body is not None and body.get("type") == "error":
        return dict(body)  # already Anthropic's
    inner = body.get("error") if isinstance(body, Mapping) else None
    inner = dict(inner) if isinstance(inner, Mapping) else {}
    message = str(inner.pop("message", "") or fallback or f"HTTP {status}")
    code = inner.pop("code", None) or inner.pop("type", None)
    inner.pop("type", None)
    kind = _ANTHROPIC_ERROR_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    error: dict[str, Any] = {"type": kind, "message": message}
    if code and code != kind:
        error["code"] = code
    error.update({k: v for k, v in inner.items() if v is not None and k != "param"})
    return {"type": "error", "error": error}


def openai_error(status: int, body: Mapping[str, Any] | None, fallback: str = "") -> dict[str, Any]:
    """An error body in OpenAI's shape, from an Anthropic-style one.

    >>> openai_error(400, {"type": "error", "error": {"type": "invalid_request_error",
    ...     "message": "bad"}})["error"]["message"]
    'bad'
    """
    if body is not None and isinstance(body.get("error"), Mapping) and body.get("type") != "error":
        return dict(body)  # already OpenAI's
    inner = body.get("error") if isinstance(body, Mapping) else None
    inner = inner if isinstance(inner, Mapping) else {}
    kind = str(inner.get("type") or ("api_error" if status >= 500 else "invalid_request_error"))
    message = str(inner.get("message") or fallback or f"HTTP {status}")
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}
