"""Rate limits of a key, user, team, org, end user or model, under LiteLLM's field names.

==========================  =============================================
field                       limits
==========================  =============================================
``rpm_limit``               requests per minute
``tpm_limit``               tokens (input + output) per minute
``tpd_limit``               tokens per day
``max_parallel_requests``   requests in flight at once
==========================  =============================================

Each becomes a budget in a counted unit (see :mod:`llmbudget.units`) held in the same
atomic reserve as the dollars, so a limit binds across workers and replicas exactly as a
budget does.

>>> limits = RateLimits.parse({"rpm_limit": 10, "max_parallel_requests": 3}, "key")
>>> limits.to_dict()
{'rpm_limit': 10, 'max_parallel_requests': 3}
>>> bool(RateLimits())
False
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from llmbudget.errors import InvalidInputError
from llmbudget.validation import INT64_MAX

__all__ = ["RATE_LIMIT_FIELDS", "RateLimits"]

#: The field names, as LiteLLM's proxy spells them (config, key API, entity API).
RATE_LIMIT_FIELDS: tuple[str, ...] = (
    "rpm_limit",
    "tpm_limit",
    "tpd_limit",
    "max_parallel_requests",
)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Limits on requests, tokens and parallel calls; ``None`` is no limit."""

    rpm_limit: int | None = None
    tpm_limit: int | None = None
    tpd_limit: int | None = None
    max_parallel_requests: int | None = None

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def to_dict(self) -> dict[str, int]:
        """The limits that are set, by field name (JSON-friendly)."""
        out: dict[str, int] = {}
        for name in RATE_LIMIT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None, where: str) -> RateLimits:
        """The limits among ``data``'s fields (other fields are ignored: callers check them)."""
        return cls().updated(data or {}, where)

    def updated(self, data: Mapping[str, Any], where: str) -> RateLimits:
        """These limits with the fields present in ``data`` changed (``None`` removes one)."""
        changes: dict[str, int | None] = {}
        for name in RATE_LIMIT_FIELDS:
            if name in data:
                changes[name] = _limit(data[name], f"{where}.{name}")
        return replace(self, **changes) if changes else self


def _limit(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{where} must be a whole number or null, got {value!r}")
    if not 1 <= value <= INT64_MAX:
        raise InvalidInputError(f"{where} must be at least 1, got {value}")
    return value
