"""Alerts as Slack messages, through an incoming webhook (``hooks.slack.com/services/...``).

Slack's message shape: ``text`` (the notification line, also what clients without blocks
show) and ``blocks``: a header, who crossed what, the figures as fields, and the scope.
Slack answers 200 ``ok``; 429 (with ``Retry-After``) and 5xx are retried like the webhook.

>>> from datetime import UTC, datetime
>>> from decimal import Decimal
>>> from llmbudget.budgets import BudgetStatus
>>> status = BudgetStatus("gw-team:ml", Decimal(100), Decimal(51), Decimal(0),
...     datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC), {})
>>> message = slack_message(Alert("gw-team:ml", 0.5, status, 1_773_596_530.0))
>>> message["text"]
'Budget alert: team ml: 50% of its budget used ($51.00 of $100.00)'
>>> [block["type"] for block in message["blocks"]]
['header', 'section', 'section', 'context']
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from .alert_event import Alert
from .alert_webhook import post

__all__ = ["SlackChannel", "slack_message"]

# Slack shows at most 10 fields in a section block.
_FIELDS = ("Spent", "Limit", "Remaining", "Held", "Resets at", "Window started")


def _escape(text: str) -> str:
    """Slack's mrkdwn escaping: only these three characters are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(alert: Alert) -> dict[str, Any]:
    """The incoming-webhook body for one alert."""
    facts = dict(alert.facts())
    fired = datetime.fromtimestamp(alert.fired_at, UTC).isoformat()
    return {
        "text": f"Budget alert: {alert.headline()}",
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": f"Budget alert: {alert.percent}% used"},
            },
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"*{_escape(facts['Budget'])}* has used *{alert.percent}%* "
                    "of its budget in this window.",
                },
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{name}*\n{_escape(facts[name])}"}
                    for name in _FIELDS
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"scope `{_escape(alert.scope)}` · fired at {fired} · llmbudget",
                    }
                ],
            },
        ],
    }


class SlackChannel:
    """POSTs :func:`slack_message` to an incoming-webhook URL."""

    name = "slack"

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self._client = httpx.Client(timeout=timeout)

    def deliver(self, alert: Alert) -> None:
        body = json.dumps(slack_message(alert)).encode("utf-8")
        post(self._client, self.name, self.url, body, {"Content-Type": "application/json"})

    def close(self) -> None:
        self._client.close()
