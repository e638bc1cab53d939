"""The generic alert webhook: the alert's JSON, POSTed, signed when a secret is set.

With ``webhook_secret`` each request carries ``X-LLMBudget-Signature: t=<unix>,v1=<hex>``,
the HMAC-SHA256 of ``"<t>.<body>"`` (see :mod:`llmbudget.signatures`, whose
``verify_signature`` a receiver uses). Each attempt is signed afresh, so a retry is not
refused as stale.

:func:`post` is the one HTTP delivery both this channel and Slack's use: a 2xx delivers;
a 5xx, 429 or network error is retryable (after the ``Retry-After`` a 429 asks for, when
longer than the backoff); any other status is refused for good.

>>> channel = WebhookChannel("https://hooks.example/budget", secret="whsec")
>>> channel.name
'webhook'
>>> channel.close()
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import httpx

from llmbudget.clock import Clock, system_clock
from llmbudget.errors import AlertDeliveryError
from llmbudget.retrying import retry_after
from llmbudget.signatures import SIGNATURE_HEADER, sign

from .alert_event import Alert

__all__ = ["WebhookChannel", "post"]


def post(
    client: httpx.Client, channel: str, url: str, body: bytes, headers: Mapping[str, str]
) -> None:
    """POST ``body``; raise :class:`AlertDeliveryError` unless the answer is a 2xx."""
    try:
        response = client.post(url, content=body, headers=dict(headers))
    except httpx.HTTPError as exc:
        raise AlertDeliveryError(channel, f"{type(exc).__name__}: {exc}", retryable=True) from None
    status = response.status_code
    if status < 300:
        return
    retryable = status >= 500 or status == 429
    detail = response.text[:200].strip()
    raise AlertDeliveryError(
        channel,
        f"HTTP {status}" + (f": {detail}" if detail else ""),
        retryable=retryable,
        retry_after=retry_after(response.headers) if status == 429 else None,
    )


class WebhookChannel:
    """POSTs :meth:`Alert.payload` as JSON to ``url``."""

    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        clock: Clock = system_clock,
    ) -> None:
        self.url = url
        self.secret = secret
        self.headers = dict(headers or {})
        self.clock = clock
        self._client = httpx.Client(timeout=timeout)

    def deliver(self, alert: Alert) -> None:
        body = json.dumps(alert.payload(), separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json", **self.headers}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, body, timestamp=self.clock())
        post(self._client, self.name, self.url, body, headers)

    def close(self) -> None:
        self._client.close()
