"""What one alert says: a threshold crossed by a budget in one window, as JSON and as text.

Every channel renders the same :class:`Alert`: the webhook sends :meth:`Alert.payload`
as it is, Slack and email the readable :meth:`Alert.headline` and :meth:`Alert.facts`.

>>> from datetime import UTC, datetime
>>> from decimal import Decimal
>>> from llmbudget.budgets import BudgetStatus
>>> status = BudgetStatus("user:support-bot:alice", Decimal(10), Decimal("8.15"), Decimal(0),
...     datetime(2026, 3, 15, tzinfo=UTC), datetime(2026, 3, 16, tzinfo=UTC), {})
>>> alert = Alert("user:support-bot:alice", 0.8, status, 1_773_596_530.0)
>>> alert.headline()
'user alice of project support-bot: 80% of its budget used ($8.15 of $10.00)'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

from llmbudget.budgets import BudgetStatus
from llmbudget.money import format_dollars
from llmbudget.units import Unit

__all__ = ["EVENT", "Alert", "describe", "format_threshold", "show_amount"]

EVENT = "budget.threshold_crossed"


def format_threshold(value: float) -> str:
    """A threshold fraction as text, the same in marker keys and messages.

    >>> format_threshold(0.8), format_threshold(1.0)
    ('0.8', '1')
    """
    return f"{value:g}"


def show_amount(value: Decimal | None, unit: Unit) -> str:
    """An amount for people: ``$8.15`` for dollars, ``1,200 tokens`` for counts.

    >>> show_amount(Decimal("8.15"), "usd"), show_amount(Decimal(1200), "tokens")
    ('$8.15', '1,200 tokens')
    """
    if unit == "usd" or value is None:
        return format_dollars(value)
    return f"{int(value):,} {unit}"


def _library_user(scope: str) -> tuple[str, str] | None:
    parts = scope.split(":")
    if len(parts) >= 3 and parts[0] == "user":
        return unquote(parts[1]), unquote(":".join(parts[2:]))
    return None


def describe(scope: str) -> str:
    """Who a budget belongs to, for people.

    >>> describe("user:support-bot:alice"), describe("gw-team:ml")
    ('user alice of project support-bot', 'team ml')
    """
    found = _library_user(scope)
    if found is not None:
        return f"user {found[1]} of project {found[0]}"
    from llmbudget.gateway.budgets import describe_scope

    return unquote(describe_scope(scope))


@dataclass(frozen=True, slots=True)
class Alert:
    """One threshold crossed in one window."""

    scope: str
    threshold: float
    status: BudgetStatus
    fired_at: float

    @property
    def percent(self) -> str:
        return format_threshold(self.threshold * 100)

    def payload(self) -> dict[str, Any]:
        """The JSON the generic webhook sends (documented in docs/server.md)."""
        found = _library_user(self.scope)
        body: dict[str, Any] = {
            "event": EVENT,
            "scope": self.scope,
            "project": found[0] if found else None,
            "user": found[1] if found else None,
            "threshold": self.threshold,
            "threshold_percent": round(self.threshold * 100, 4),
        }
        body.update(self.status.to_dict())
        body["scope"] = self.scope
        body["fired_at"] = datetime.fromtimestamp(self.fired_at, UTC).isoformat()
        return body

    def headline(self) -> str:
        """One line: who, which threshold, spent of limit."""
        status = self.status
        return (
            f"{describe(self.scope)}: {self.percent}% of its budget used "
            f"({show_amount(status.spent, status.unit)} of {show_amount(status.limit, status.unit)})"
        )

    def facts(self) -> list[tuple[str, str]]:
        """Labelled values for a message body, in reading order."""
        status = self.status
        resets = status.resets_at.isoformat() if status.resets_at else "never (a total budget)"
        return [
            ("Budget", describe(self.scope)),
            ("Threshold", f"{self.percent}%"),
            ("Spent", show_amount(status.spent, status.unit)),
            ("Held", show_amount(status.held, status.unit)),
            ("Limit", show_amount(status.limit, status.unit)),
            ("Remaining", show_amount(status.remaining, status.unit)),
            ("Window started", status.window_start.isoformat()),
            ("Resets at", resets),
            ("Scope", self.scope),
        ]
