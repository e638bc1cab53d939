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
budget does. A scope keeps one unit, so each limit has a scope of its own: the owner's
kind with a suffix (``gw-key`` -> ``gw-key-rpm:<K>``, ``gw-key-tpm:<K>``,
``gw-key-tpd:<K>``, ``gw-key-parallel:<K>``).

Windows are fixed and calendar-aligned, as the ledger keys spend by window start: a
minute runs from ``:00`` to ``:00`` of the next minute, a day from midnight UTC. They
are exact (one counter per window, no reset job, the same on every store); the price is
that a client may burst up to twice a limit across a boundary. A slot
(``max_parallel_requests``) has no window: it is held while the call's hold lives and
freed by its settle, release or expiry (``hold_ttl``).

>>> limits = RateLimits.parse({"rpm_limit": 10, "max_parallel_requests": 3}, "key")
>>> limits.to_dict()
{'rpm_limit': 10, 'max_parallel_requests': 3}
>>> [(b.scope, b.unit) for b in limits.budgets("gw-key", "key_1")]
[('gw-key-rpm:key_1', 'requests'), ('gw-key-parallel:key_1', 'concurrent')]
>>> bool(RateLimits())
False
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from typing import Any

from llmbudget.budgets import Budget, scope_key
from llmbudget.errors import InvalidInputError
from llmbudget.periods import LIFETIME, Period
from llmbudget.units import Unit
from llmbudget.validation import INT64_MAX

__all__ = ["LIMIT_SUFFIXES", "RATE_LIMIT_FIELDS", "RateLimits", "limit_kind"]

#: The field names, as LiteLLM's proxy spells them (config, key API, entity API).
RATE_LIMIT_FIELDS: tuple[str, ...] = (
    "rpm_limit",
    "tpm_limit",
    "tpd_limit",
    "max_parallel_requests",
)

_MINUTE = Period.parse("1m")
_DAY = Period.parse("1d")
# field -> the scope suffix, the unit counted and its window.
_LAYOUT: tuple[tuple[str, str, Unit, Period], ...] = (
    ("rpm_limit", "rpm", "requests", _MINUTE),
    ("tpm_limit", "tpm", "tokens", _MINUTE),
    ("tpd_limit", "tpd", "tokens", _DAY),
    ("max_parallel_requests", "parallel", "concurrent", LIFETIME),
)
#: A limit's scope suffix -> how its window reads in a refusal ("10 requests per minute").
LIMIT_SUFFIXES: dict[str, str] = {
    "rpm": "per minute",
    "tpm": "per minute",
    "tpd": "per day",
    "parallel": "at once",
}


def limit_kind(kind: str) -> tuple[str, str] | None:
    """A rate limit's scope kind split into its owner's kind and its suffix, else ``None``.

    >>> limit_kind("gw-end-user-tpd"), limit_kind("gw-key")
    (('gw-end-user', 'tpd'), None)
    """
    owner, _, suffix = kind.rpartition("-")
    return (owner, suffix) if owner and suffix in LIMIT_SUFFIXES else None


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

    def budgets(self, kind: str, *names: str) -> tuple[Budget, ...]:
        """The budgets of the limits that are set, on scopes ``<kind>-<suffix>:<names>``."""
        out: list[Budget] = []
        for name, suffix, unit, period in _LAYOUT:
            value = getattr(self, name)
            if value is not None:
                scope = scope_key(f"{kind}-{suffix}", *names)
                out.append(Budget(scope, Decimal(value), period, unit=unit))
        return tuple(out)

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
