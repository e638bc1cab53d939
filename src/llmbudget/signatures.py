"""Signed webhooks: an HMAC-SHA256 of the timestamp and the body, in one header.

The budget server signs each alert webhook it sends with a shared secret, as Stripe does::

    X-LLMBudget-Signature: t=1773590530,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

``v1`` is the hex HMAC-SHA256 of ``"<t>.<raw body>"`` under the secret. A receiver
recomputes it over the bytes it was sent (before parsing the JSON) and refuses a
signature that does not match, or whose timestamp is too old (a replayed request).
This module needs nothing but the standard library, so a receiver can use it with only
``llmbudget`` installed::

    from llmbudget.signatures import InvalidSignatureError, verify_signature

    try:
        verify_signature(secret, request.headers["X-LLMBudget-Signature"], raw_body)
    except InvalidSignatureError:
        return 400

>>> header = sign(b"whsec", b'{"a": 1}', timestamp=1_773_590_530)
>>> header[:15]
't=1773590530,v1'
>>> verify_signature(b"whsec", header, b'{"a": 1}', now=1_773_590_560)
1773590530
"""

from __future__ import annotations

import hashlib
import hmac
import time

from llmbudget.errors import InvalidSignatureError

__all__ = [
    "DEFAULT_TOLERANCE",
    "SIGNATURE_HEADER",
    "InvalidSignatureError",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "X-LLMBudget-Signature"
#: Seconds a signature stays acceptable: room for clock skew and retries, little for replay.
DEFAULT_TOLERANCE = 300.0


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def _digest(secret: str | bytes, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(_secret_bytes(secret), message, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, *, timestamp: float) -> str:
    """The signature header's value for ``body`` sent at ``timestamp`` (unix seconds).

    >>> sign("s", b"{}", timestamp=1.9).split(",")[0]
    't=1'
    """
    stamp = int(timestamp)
    return f"t={stamp},v1={_digest(secret, stamp, body)}"


def verify_signature(
    secret: str | bytes,
    header: str | None,
    body: bytes,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    now: float | None = None,
) -> int:
    """Check a ``X-LLMBudget-Signature`` header against the raw ``body``; returns its
    timestamp, or raises :class:`InvalidSignatureError`.

    Several ``v1=`` entries are accepted (any may match), so a sender can sign with an old
    and a new secret while the receiver moves over. ``tolerance`` is in seconds either side
    of ``now`` (default: the system clock).

    >>> verify_signature("s", sign("s", b"{}", timestamp=100), b"{}", now=100)
    100
    """
    if not header:
        raise InvalidSignatureError("no signature header", reason="malformed")
    stamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise InvalidSignatureError(
                f"malformed signature header {header!r}", reason="malformed"
            )
        if name == "t":
            if not value.isdigit():
                raise InvalidSignatureError(
                    f"malformed timestamp in {header!r}", reason="malformed"
                )
            stamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if stamp is None or not candidates:
        raise InvalidSignatureError(
            f"signature header {header!r} needs t=<unix time> and v1=<hex>", reason="malformed"
        )
    expected = _digest(secret, stamp, body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise InvalidSignatureError("signature does not match the body", reason="mismatch")
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance:
        raise InvalidSignatureError(
            f"signature timestamp {stamp} is more than {tolerance:g}s from now", reason="stale"
        )
    return stamp
