"""HTTP clients for the upstream call: a lean keep-alive HTTP/1.1 client, or httpx.

Why a client of its own: on the 2-core benchmark machine one ``httpx.AsyncClient`` POST
to a local upstream costs ~1 ms of CPU at concurrency 1 and ~2.7 ms at 64, because
httpcore polls the socket of *every* pooled connection on every request (``has_expired``
-> ``poll()``), making the pool O(connections) per request. A plain asyncio stream does
the same exchange in ~50 µs. The gateway's latency target (≤ 1 ms added) leaves no room
for the former, so :class:`FastClient` is the default and httpx stays available
(``general_settings.upstream_client: httpx``, or any ``transport=`` passed in, e.g. an
ASGI or mock transport in tests) through :class:`HttpxClient`, with identical behaviour.

:class:`FastClient` speaks HTTP/1.1 over TCP or TLS with a per-origin LIFO pool of idle
connections (``keepalive_expiry`` 60 s, at most ``max_per_origin`` open at once),
``Content-Length``, chunked and close-delimited bodies, gzip/deflate decoding should an
upstream compress anyway (it asks for ``identity``), and per-read timeouts. A request
that fails on a *reused* connection before any response byte arrives (the server closed
it while idle) is sent once more on a fresh connection; no other request is repeated
here (retrying is the router's job). It does not read proxy settings from the environment.

>>> import asyncio
>>> asyncio.run(FastClient().aclose())
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx

__all__ = [
    "FastClient",
    "HttpxClient",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamResponse",
    "UpstreamTimeoutError",
]

_READ_SIZE = 65_536
_HEAD_LIMIT = 1024 * 1024


class UpstreamError(Exception):
    """The upstream could not be reached, or broke the connection.

    ``sent`` is ``False`` only when the request certainly never reached the upstream
    (no connection could be made): then nothing can have been billed. Once any of the
    request may have been written, ``sent`` is ``True`` and the provider may have done,
    and billed, the work.
    """

    def __init__(self, message: str = "", *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not answer (or stopped sending) within the timeout."""


class UpstreamResponse(Protocol):
    status_code: int
    headers: Mapping[str, str]  # lower-case names

    async def aread(self) -> bytes: ...
    def aiter_bytes(self) -> AsyncIterator[bytes]: ...
    async def aclose(self) -> None: ...


class UpstreamClient(Protocol):
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> UpstreamResponse: ...
    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------- the lean client


@dataclass(frozen=True, slots=True)
class _Target:
    origin: tuple[str, str, int]
    host_header: str
    path: str


class _Conn:
    __slots__ = ("last_used", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.last_used = time.monotonic()

    def usable(self, expiry: float) -> bool:
        return (
            not self.writer.is_closing()
            and not self.reader.at_eof()
            and time.monotonic() - self.last_used < expiry
        )

    def close(self) -> None:
        self.writer.close()


class FastClient:
    """Keep-alive HTTP/1.1 client on asyncio streams (see the module docstring)."""

    def __init__(
        self,
        *,
        max_per_origin: int = 512,
        keepalive_expiry: float = 60.0,
        connect_timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_per_origin = max_per_origin
        self.keepalive_expiry = keepalive_expiry
        self.connect_timeout = connect_timeout
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._slots: dict[tuple[str, str, int], asyncio.Semaphore] = {}
        self._targets: dict[str, _Target] = {}
        self._closed = False

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            if scheme not in ("http", "https") or not parts.hostname:
                raise UpstreamError(f"unsupported upstream URL {url!r}", sent=False)
            port = parts.port or (443 if scheme == "https" else 80)
            default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
            host = parts.hostname if default else f"{parts.hostname}:{port}"
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            target = _Target((scheme, parts.hostname, port), host, path)
            self._targets[url] = target
        return target

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _connect(self, origin: tuple[str, str, int]) -> _Conn:
        scheme, host, port = origin
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=self._ssl_context() if scheme == "https" else None,
                    server_hostname=host if scheme == "https" else None,
                    limit=_HEAD_LIMIT,
                )
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"connecting to {host}:{port} timed out", sent=False
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f"cannot connect to {host}:{port}: {exc}", sent=False) from None
        return _Conn(reader, writer)

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> UpstreamResponse:
        if self._closed:
            raise UpstreamError("client is closed", sent=False)
        target = self._target(url)
        lines = [f"POST {target.path} HTTP/1.1\r\nhost: {target.host_header}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        lines.append(f"accept-encoding: identity\r\ncontent-length: {len(body)}\r\n\r\n")
        request = "".join(lines).encode("latin-1") + body
        slots = self._slots.get(target.origin)
        if slots is None:
            slots = self._slots[target.origin] = asyncio.Semaphore(self.max_per_origin)
        await slots.acquire()
        try:
            for attempt in (0, 1):
                conn, reused = self._take_idle(target.origin), True
                if conn is None:
                    conn, reused = await self._connect(target.origin), False
                try:
                    conn.writer.write(request)
                    async with asyncio.timeout(timeout):
                        if conn.writer.transport.get_write_buffer_size() > _READ_SIZE:
                            await conn.writer.drain()
                        head = await conn.reader.readuntil(b"\r\n\r\n")
                except TimeoutError:
                    conn.close()
                    raise UpstreamTimeoutError(f"{url} did not answer within {timeout} s") from None
                except asyncio.IncompleteReadError as exc:
                    conn.close()
                    if reused and attempt == 0 and not exc.partial:
                        continue  # the server had closed this idle connection: use a new one
                    raise UpstreamError(f"{url} closed the connection") from None
                except (OSError, asyncio.LimitOverrunError) as exc:
                    conn.close()
                    if reused and attempt == 0 and isinstance(exc, ConnectionError):
                        continue
                    raise UpstreamError(f"{url}: {exc}") from None
                return _FastResponse(self, target.origin, conn, head, timeout, slots)
            raise UpstreamError(f"{url} closed the connection")  # pragma: no cover
        except BaseException:
            slots.release()
            raise

    def _take_idle(self, origin: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()  # LIFO: the warmest connection, least likely to have expired
            if conn.usable(self.keepalive_expiry):
                return conn
            conn.close()
        return None

    def _give_back(self, origin: tuple[str, str, int], conn: _Conn) -> None:
        if self._closed:
            conn.close()
            return
        conn.last_used = time.monotonic()
        self._idle.setdefault(origin, []).append(conn)

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


class _FastResponse:
    """A response whose body is read on demand; the connection returns to the pool at its end."""

    def __init__(
        self,
        client: FastClient,
        origin: tuple[str, str, int],
        conn: _Conn,
        head: bytes,
        timeout: float,
        slots: asyncio.Semaphore,
    ) -> None:
        self._client = client
        self._origin = origin
        self._conn: _Conn | None = conn
        self._timeout = timeout
        self._slots = slots
        status_line, _, rest = head.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            conn.close()
            self._conn = None  # the caller releases the slot
            raise UpstreamError(f"not an HTTP response: {status_line[:80]!r}")
        self.status_code = int(parts[1])
        headers: dict[str, str] = {}
        for line in rest.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            key = name.strip().lower().decode("latin-1")
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.headers: Mapping[str, str] = headers
        self._keep_alive = (
            parts[0] == b"HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        )
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        self._remaining: int | None = None
        if not self._chunked:
            if length is not None and length.isdigit():
                self._remaining = int(length)
            elif self.status_code in (204, 304):
                self._remaining = 0
            else:
                self._keep_alive = False  # delimited by the close of the connection
        encoding = headers.get("content-encoding", "").lower()
        self._decoder = (
            zlib.decompressobj(16 + zlib.MAX_WBITS)
            if encoding == "gzip"
            else zlib.decompressobj()
            if encoding == "deflate"
            else None
        )
        self._done = False

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for raw in self._raw():
                data = raw if self._decoder is None else self._decoder.decompress(raw)
                if data:
                    yield data
            if self._decoder is not None:
                tail = self._decoder.flush()
                if tail:
                    yield tail
        except zlib.error as exc:
            self._discard()
            raise UpstreamError(f"cannot decode the upstream body: {exc}") from None
        self._done = True
        self._finish()

    async def _read(self, coro_fn: str, arg: int | bytes) -> bytes:
        conn = self._conn
        if conn is None:
            raise UpstreamError("the response is closed")
        try:
            async with asyncio.timeout(self._timeout):
                if coro_fn == "exactly":
                    assert isinstance(arg, int)
                    return await conn.reader.readexactly(arg)
                if coro_fn == "until":
                    assert isinstance(arg, bytes)
                    return await conn.reader.readuntil(arg)
                assert isinstance(arg, int)
                return await conn.reader.read(arg)
        except TimeoutError:
            self._discard()
            raise UpstreamTimeoutError("the upstream stopped sending") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self._discard()
            raise UpstreamError(f"the upstream connection broke: {exc!r}") from None

    async def _raw(self) -> AsyncIterator[bytes]:
        if self._chunked:
            while True:
                size_line = await self._read("until", b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while (await self._read("until", b"\r\n")) != b"\r\n":
                        pass  # trailers
                    return
                data = await self._read("exactly", size + 2)
                yield data[:-2]
        elif self._remaining is not None:
            while self._remaining > 0:
                data = await self._read("any", min(self._remaining, _READ_SIZE))
                if not data:
                    self._discard()
                    raise UpstreamError("the upstream closed the connection mid-body")
                self._remaining -= len(data)
                yield data
        else:
            while True:
                data = await self._read("any", _READ_SIZE)
                if not data:
                    return
                yield data

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self._keep_alive:
            self._client._give_back(self._origin, conn)
        else:
            conn.close()
        self._slots.release()

    def _discard(self) -> None:
        self._keep_alive = False
        self._finish()

    async def aclose(self) -> None:
        # A body not read to its end leaves the connection mid-message: it cannot be reused.
        if not self._done:
            self._keep_alive = False
        self._finish()


# --------------------------------------------------------------------------- httpx adapter


class HttpxClient:
    """The same interface over ``httpx.AsyncClient`` (any httpx transport)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(600.0, connect=10.0),
            limits=httpx.Limits(
                max_connections=1024, max_keepalive_connections=256, keepalive_expiry=60.0
            ),
        )

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> UpstreamResponse:
        request = self.client.build_request(
            "POST",
            url,
            content=body,
            headers=dict(headers),
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.ConnectTimeout as exc:
            # No connection was made: the request never left this process.
            raise UpstreamTimeoutError(f"{url} timed out: {exc}", sent=False) from None
        except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
            raise UpstreamError(f"{url}: {exc}", sent=False) from None
        except httpx.TimeoutException as exc:
            raise UpstreamTimeoutError(f"{url} timed out: {exc}") from None
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{url}: {exc}") from None
        return _HttpxResponse(response)

    async def aclose(self) -> None:
        await self.client.aclose()


class _HttpxResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status_code = response.status_code
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in response.headers.items()}

    async def aread(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.TimeoutException as exc:
            raise UpstreamTimeoutError(str(exc)) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(str(exc)) from None

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.TimeoutException as exc:
            raise UpstreamTimeoutError(str(exc)) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(str(exc)) from None

    async def aclose(self) -> None:
        await self._response.aclose()
