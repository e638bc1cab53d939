"""Local alert receivers for the alert tests: an HTTP endpoint (Slack-shaped or a plain
webhook) and an SMTP sink, both on 127.0.0.1, both recording what they are sent.

Waiting is on a condition (``wait_for``), never a fixed sleep.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from llmbudget.server.testing import live_server
from tests.storekit import free_port


@dataclass
class Post:
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class HttpReceiver:
    """Answers each POST with the next of ``statuses`` (then 200 ``ok``, as Slack does) and
    records the posts it accepted, and when each attempt came (``times``, monotonic).
    ``retry_after`` goes on every refusal; ``hang`` holds every request until
    :meth:`release`."""

    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    retry_after: str | None = None
    posts: list[Post] = field(default_factory=list)
    attempts: int = 0
    times: list[float] = field(default_factory=list)
    url: str = ""
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _released: threading.Event = field(default_factory=threading.Event)

    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            body = await request.body()
            if self.hang:
                import anyio

                await anyio.to_thread.run_sync(self._released.wait)
            with self._cond:
                self.attempts += 1
                self.times.append(time.monotonic())
                status = self.statuses.pop(0) if self.statuses else 200
                if status < 300:
                    self.posts.append(Post(request.url.path, body, dict(request.headers)))
                self._cond.notify_all()
            if status < 300:
                return PlainTextResponse("ok")
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return PlainTextResponse("error", status_code=status, headers=headers)

        return Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])

    def release(self) -> None:
        self._released.set()

    def wait_for(self, predicate: Callable[[HttpReceiver], bool], timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    def wait_posts(self, count: int, timeout: float = 10.0) -> list[Post]:
        self.wait_for(lambda r: len(r.posts) >= count, timeout)
        with self._cond:
            return list(self.posts)


@contextmanager
def http_receiver(**kwargs: Any) -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(**kwargs)
    try:
        with live_server(receiver.app()) as base:
            receiver.url = f"{base}/services/T000/B000/XXXX"
            yield receiver
    finally:
        receiver.release()


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage


class SmtpSink:
    """An aiosmtpd handler that keeps every message."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.logins: list[str] = []
        self._cond = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        with self._cond:
            self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
            self._cond.notify_all()
        return "250 OK"

    def wait_mails(self, count: int, timeout: float = 10.0) -> list[Mail]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.mails) >= count, timeout)
            return list(self.mails)


@contextmanager
def smtp_sink(
    *,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
    users: dict[str, str] | None = None,
) -> Iterator[tuple[SmtpSink, int]]:
    """An SMTP server on 127.0.0.1: plain, with STARTTLS required (``starttls``), or TLS
    from the first byte (``implicit_tls``); ``users`` requires a login."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    sink = SmtpSink()
    kwargs: dict[str, Any] = {}
    if starttls is not None:
        kwargs.update(tls_context=starttls, require_starttls=True)
    if implicit_tls is not None:
        kwargs.update(ssl_context=implicit_tls)
    if users is not None:

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
        ) -> AuthResult:
            ok = isinstance(auth_data, LoginPassword) and (
                users.get(auth_data.login.decode()) == auth_data.password.decode()
            )
            if ok:
                sink.logins.append(auth_data.login.decode())
            return AuthResult(success=ok, handled=False)

        kwargs.update(
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=starttls is not None or implicit_tls is not None,
        )
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()
