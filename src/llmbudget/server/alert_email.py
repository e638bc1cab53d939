"""Alerts by email over SMTP (standard library ``smtplib`` and ``email``).

``security`` is ``starttls`` (port 587 by default: plain connection upgraded with
STARTTLS, refused if the server does not offer it), ``ssl`` (port 465: TLS from the first
byte) or ``none`` (port 25: only for a relay on a trusted network). ``username`` and
``password`` log in after TLS is up. Certificates are checked against the system's CAs,
or ``ca_file``.

``smtplib`` blocks, so delivery runs on the channel's own thread
(:mod:`.alert_delivery`), never on the event loop. A connection error or a 4xx reply is
retried; a refused login, refused recipients or a 5xx reply is not (retrying cannot help).

>>> channel = EmailChannel(EmailSettings(host="smtp.example.com", sender="budget@example.com",
...     to=("ops@example.com",)))
>>> (channel.settings.port, channel.settings.security)
(587, 'starttls')
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Literal

from llmbudget.errors import AlertDeliveryError

from .alert_event import Alert

__all__ = ["DEFAULT_PORTS", "EmailChannel", "EmailSettings", "Security", "email_message"]

Security = Literal["starttls", "ssl", "none"]
DEFAULT_PORTS: dict[Security, int] = {"starttls": 587, "ssl": 465, "none": 25}


@dataclass(frozen=True, slots=True)
class EmailSettings:
    """Where and how to send alert emails. ``port=None``: the security mode's usual port."""

    host: str
    sender: str
    to: tuple[str, ...]
    port: int | None = None
    security: Security = "starttls"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    subject_prefix: str = "[llmbudget]"
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.port is None:
            object.__setattr__(self, "port", DEFAULT_PORTS[self.security])


def email_message(alert: Alert, settings: EmailSettings) -> EmailMessage:
    """The message for one alert: the headline as subject, the figures as plain text."""
    message = EmailMessage()
    message["Subject"] = f"{settings.subject_prefix} {alert.headline()}".strip()
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.to)
    message["Date"] = format_datetime(datetime.fromtimestamp(alert.fired_at, UTC))
    message["Message-ID"] = make_msgid(domain=settings.sender.rpartition("@")[2] or None)
    facts = alert.facts()
    width = max(len(name) for name, _ in facts)
    lines = [alert.headline(), ""]
    lines += [f"{name + ':':<{width + 1}} {value}" for name, value in facts]
    lines += ["", "Sent by llmbudget once per threshold per budget window."]
    message.set_content("\n".join(lines) + "\n")
    return message


class EmailChannel:
    """Sends each alert as one email to ``settings.to``."""

    name = "email"

    def __init__(self, settings: EmailSettings) -> None:
        self.settings = settings

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.ca_file)

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        port = s.port or DEFAULT_PORTS[s.security]
        if s.security == "ssl":
            return smtplib.SMTP_SSL(s.host, port, timeout=s.timeout, context=self._context())
        smtp = smtplib.SMTP(s.host, port, timeout=s.timeout)
        try:
            if s.security == "starttls":
                smtp.starttls(context=self._context())
        except BaseException:
            smtp.close()
            raise
        return smtp

    def deliver(self, alert: Alert) -> None:
        s = self.settings
        message = email_message(alert, s)
        try:
            with self._connect() as smtp:
                if s.username is not None:
                    smtp.login(s.username, s.password or "")
                smtp.send_message(message)
        except smtplib.SMTPNotSupportedError as exc:
            raise AlertDeliveryError(self.name, f"{s.host}: {exc}", retryable=False) from None
        except smtplib.SMTPAuthenticationError as exc:
            raise AlertDeliveryError(
                self.name, f"login refused by {s.host}: {exc.smtp_code}", retryable=False
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise AlertDeliveryError(
                self.name, f"recipients refused: {sorted(exc.recipients)}", retryable=False
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise AlertDeliveryError(
                self.name,
                f"{s.host} answered {exc.smtp_code} {exc.smtp_error!r}",
                retryable=400 <= exc.smtp_code < 500,
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            # Connection refused or lost, timeouts, TLS failures: the server may be back soon.
            raise AlertDeliveryError(
                self.name, f"{s.host}:{s.port}: {type(exc).__name__}: {exc}", retryable=True
            ) from None

    def close(self) -> None:
        pass
