"""Every error llmbudget raises, rooted at one base class.

::

    LLMBudgetError
     ├── BudgetExceededError          a reserve would pass a limit (scope, limit, spent, held,
     │                                resets_at, unit: dollars or a rate limit's count)
     ├── InvalidInputError (ValueError)
     │    ├── InvalidAmountError      NaN, infinity, negative, bool, not a number, too precise
     │    │    └── CounterOverflowError   a sum a store counter cannot hold (past int64)
     │    ├── InvalidDurationError    not a known period or duration, unknown timezone,
     │    │                           windows that cannot be computed (past the year 3100)
     │    ├── InvalidNameError        an id or name that is not text, too long, NUL, surrogates
     │    ├── InvalidTimeError        a timestamp or ttl that is not finite seconds in range
     │    ├── InvalidRequestError     an LLM request that cannot be metered as sent (param)
     │    └── InvalidSignatureError   a webhook signature that is malformed, wrong or stale
     ├── NotFoundError (KeyError)
     │    ├── UnknownUserError        no budget for this user (the seed raised KeyError)
     │    ├── UnknownHoldError        settle/release of a hold the store never saw
     │    └── UnknownModelError       no price for a model; names the closest known models
     ├── PricingError                 a price or usage block that cannot be priced
     ├── StoreError                   a store failed in a way that is not the caller's fault
     │    ├── StoreUnavailableError   the store cannot be reached (fail-closed)
     │    └── CorruptRecordError      a stored record that cannot be used (written by an old
     │                                version that let a bad value through)
     ├── ProviderError                an LLM provider call failed (status, provider, body)
     └── AlertDeliveryError           an alert channel could not deliver (channel, retryable)

Driver exceptions (sqlite3, psycopg, redis, httpx) never leak: each store translates
them at its boundary into :class:`StoreError` / :class:`StoreUnavailableError`.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmbudget.units import Unit

__all__ = [
    "AlertDeliveryError",
    "BudgetExceededError",
    "CorruptRecordError",
    "CounterOverflowError",
    "InvalidAmountError",
    "InvalidDurationError",
    "InvalidInputError",
    "InvalidNameError",
    "InvalidRequestError",
    "InvalidSignatureError",
    "InvalidTimeError",
    "LLMBudgetError",
    "NotFoundError",
    "PricingError",
    "ProviderError",
    "StoreError",
    "StoreUnavailableError",
    "UnknownHoldError",
    "UnknownModelError",
    "UnknownUserError",
]


class LLMBudgetError(Exception):
    """Base class of every error raised by llmbudget."""


class BudgetExceededError(LLMBudgetError):
    """A call was refused because it would take a scope past its limit.

    Carries who was over (``scope``), the ``limit``, what is ``spent`` and ``held`` in the
    current window, the ``requested`` amount and when the window resets (``resets_at``,
    ``None`` for a lifetime budget), all in the budget's ``unit``: dollars (``"usd"``), or
    a count of ``"requests"``, ``"tokens"`` or ``"concurrent"`` calls for a rate limit.

    >>> try:
    ...     raise BudgetExceededError("user:1", Decimal("1"), Decimal("0.95"), Decimal("0"), Decimal("0.1"))
    ... except BudgetExceededError as e:
    ...     print(e.scope, e.remaining)
    user:1 0.05
    >>> print(BudgetExceededError("rpm:k", Decimal(10), Decimal(10), Decimal(0), Decimal(1),
    ...                           unit="requests"))
    rate limit exceeded for rpm:k: limit 10 requests, used 10, held 0, requested 1
    """

    def __init__(
        self,
        scope: str,
        limit: Decimal,
        spent: Decimal,
        held: Decimal,
        requested: Decimal,
        resets_at: datetime | None = None,
        message: str | None = None,
        *,
        unit: Unit = "usd",
    ) -> None:
        self.scope = scope
        self.limit = limit
        self.spent = spent
        self.held = held
        self.requested = requested
        self.resets_at = resets_at
        self.unit = unit
        if message is None:
            fields = self.to_dict()
            when = f"; resets at {fields['resets_at']}" if resets_at else ""
            if unit == "usd":
                message = (
                    f"budget exceeded for {scope}: limit ${fields['limit']}, "
                    f"spent ${fields['spent']}, held ${fields['held']}, "
                    f"requested ${fields['requested']}{when}"
                )
            else:
                message = (
                    f"rate limit exceeded for {scope}: limit {fields['limit']} {unit}, "
                    f"used {fields['spent']}, held {fields['held']}, "
                    f"requested {fields['requested']}{when}"
                )
        super().__init__(message)

    @property
    def remaining(self) -> Decimal:
        """What could still be reserved in this window (never negative)."""
        return max(Decimal(0), self.limit - self.spent - self.held)

    def to_dict(self) -> dict[str, str | None]:
        """JSON-friendly fields: money as plain decimal strings (exact, never ``6E-8``),
        counts as whole numbers, and the ``unit`` they are in."""
        from llmbudget.units import format_amount  # here: units.py imports this module

        def text(value: Decimal) -> str:
            return format_amount(value, self.unit)

        return {
            "scope": self.scope,
            "unit": self.unit,
            "limit": text(self.limit),
            "spent": text(self.spent),
            "held": text(self.held),
            "requested": text(self.requested),
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
        }


class InvalidInputError(LLMBudgetError, ValueError):
    """An argument was refused; nothing was stored."""


class InvalidAmountError(InvalidInputError):
    """Money that is not a finite, non-negative number of dollars."""


class CounterOverflowError(InvalidAmountError):
    """An operation that would take a store counter past the int64 range of nano-dollars
    (about $9.2 billion). Refused before anything changes; ``scope`` names the counter."""

    def __init__(self, scope: str | None = None, window: int | None = None) -> None:
        self.scope = scope
        self.window = window
        what = f"the spend of {scope!r}" if scope is not None else "a spend counter"
        super().__init__(
            f"refused: {what} would pass the largest amount a store counter holds "
            "(~$9.2 billion); nothing was recorded"
        )


class InvalidDurationError(InvalidInputError):
    """A period, duration or timezone that is not understood, or whose windows cannot be
    computed for as long as budgets must work."""


class InvalidNameError(InvalidInputError):
    """An id or name (scope, user, model, hold id ...) that is not a string of valid
    Unicode without NUL, or is empty or longer than the one limit every store keeps."""


class InvalidTimeError(InvalidInputError):
    """A timestamp or ttl that is not a finite number of seconds (bools and strings are
    refused), or lies outside the range every store can keep."""


class InvalidRequestError(InvalidInputError):
    """An LLM API request that cannot be budgeted as sent: malformed for its API, or asking
    for something whose cost cannot be bounded. ``param`` names the offending field.
    Nothing was reserved or sent (the gateway answers HTTP 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


class InvalidSignatureError(InvalidInputError):
    """A signed webhook's signature header is missing or malformed (``reason`` is
    ``malformed``), does not match the body (``mismatch``), or is too old (``stale``)."""

    def __init__(self, message: str, *, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class NotFoundError(LLMBudgetError, KeyError):
    """Something named does not exist. Also a ``KeyError``, as the seed raised."""

    def __str__(self) -> str:
        # KeyError.__str__ quotes its argument; a readable message is more useful.
        return str(self.args[0]) if self.args else ""


class UnknownUserError(NotFoundError):
    """The user has no budget in this project."""

    def __init__(self, user: str, project: str | None = None) -> None:
        self.user = user
        self.project = project
        where = f" in project {project!r}" if project else ""
        super().__init__(f"no budget for user {user!r}{where}; create_budget() first")


class UnknownHoldError(NotFoundError):
    """A hold id the store does not know (never reserved, or purged long after expiry)."""

    def __init__(self, hold_id: str) -> None:
        self.hold_id = hold_id
        super().__init__(f"unknown hold {hold_id!r}")


class UnknownModelError(NotFoundError):
    """No price is known for a model. ``suggestions`` lists the closest known names."""

    def __init__(self, model: str, suggestions: list[str] | None = None) -> None:
        self.model = model
        self.suggestions = list(suggestions or [])
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"no price known for model {model!r}{hint}")


class PricingError(LLMBudgetError):
    """A usage block or price that cannot be turned into a cost."""


class StoreError(LLMBudgetError):
    """The store failed (corrupt data, driver error) through no fault of the caller."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached. Operations fail closed: nothing is reserved or charged."""


class CorruptRecordError(StoreError):
    """A stored record cannot be used (e.g. a budget period whose windows cannot be
    computed, stored before such values were refused). Redefine or delete it."""

    def __init__(self, scope: str, reason: str) -> None:
        self.scope = scope
        self.reason = reason
        super().__init__(f"the stored budget of {scope!r} cannot be used: {reason}")


class ProviderError(LLMBudgetError):
    """An LLM provider call failed. Its hold was released when the error proves nothing was
    billed (an error status, a connection never made); after a timeout or a lost
    connection the provider may have billed the work, so the full hold was charged."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        body: object = None,
    ) -> None:
        self.provider = provider
        self.status_code = status_code
        self.body = body
        super().__init__(message)


class AlertDeliveryError(LLMBudgetError):
    """An alert channel (``webhook``, ``slack``, ``email``) could not deliver one alert.
    ``retryable`` says whether trying again may help (a 5xx, 429 or network error does;
    a 4xx or a refused login does not); ``retry_after`` is the wait the receiver asked for
    (a 429's ``Retry-After``), if any."""

    def __init__(
        self, channel: str, message: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        self.channel = channel
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(f"{channel}: {message}")
