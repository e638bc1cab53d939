"""HTTP clients for the upstream call: aiohttp by default, httpx on request.

:class:`AiohttpClient` is the gateway's client: keep-alive pools per origin, proxies from
the environment (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``, as enterprises reach
providers through egress proxies), custom CA bundles and client certificates. It was
measured against httpx on this machine kind (``bench/bench_upstream.py``): httpx costs an
order of magnitude more CPU per request under concurrency because httpcore polls the
socket of every pooled connection on each request, so httpx is kept only where a
transport is injected (an ASGI app or a mock in tests) or asked for
(``general_settings.upstream_client: httpx``), through :class:`HttpxClient`, with the same
behaviour.

Both clients say whether a failed request may have reached the upstream
(:attr:`UpstreamError.sent`): only one that certainly did not may have its hold released.
Neither repeats a request; retrying is the router's job.

>>> import asyncio
>>> asyncio.run(AiohttpClient().aclose())
"""

from __future__ import annotations

import base64
import ssl
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp
import httpx

__all__ = [
    "AiohttpClient",
    "HttpxClient",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamResponse",
    "UpstreamTimeoutError",
]


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


class AiohttpClient:
    """The default upstream client: aiohttp, keep-alive pools per origin.

    Proxies come from the environment as everywhere else (``HTTPS_PROXY``, ``HTTP_PROXY``,
    ``NO_PROXY``), read once when the client is made; certificates are verified against
    ``ca_bundle`` when given, else the system's (``SSL_CERT_FILE`` / ``SSL_CERT_DIR``
    are honoured); ``client_cert`` (and ``client_key``) authenticate the gateway to an
    upstream that asks for a client certificate (mutual TLS).

    >>> import asyncio
    >>> asyncio.run(AiohttpClient().aclose())
    """

    def __init__(
        self,
        *,
        ca_bundle: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        verify: bool = True,
        max_connections: int = 1024,
    ) -> None:
        self._ssl = _ssl_context(ca_bundle, client_cert, client_key, verify)
        self._max = max_connections
        self._session: aiohttp.ClientSession | None = None
        # aiohttp's own trust_env re-reads the environment (and ~/.netrc) in a worker
        # thread on every request: two thread hops per call, measured at over a quarter of
        # the gateway's CPU. The environment is read here once, and the choice cached.
        self._proxies = urllib.request.getproxies_environment()
        self._proxy_for: dict[tuple[str, str], tuple[str | None, Mapping[str, str] | None]] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the loop it was made in.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max, limit_per_host=self._max, keepalive_timeout=60, ssl=self._ssl
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,  # proxies are chosen in _proxy()
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> UpstreamResponse:
        limits = self._timeouts.get(timeout)
        if limits is None:
            limits = self._timeouts[timeout] = aiohttp.ClientTimeout(
                total=None, sock_connect=min(10.0, timeout), sock_read=timeout
            )
        proxy, proxy_headers = self._proxy(url)
        try:
            response = await self._client().post(
                url,
                data=body,
                headers=headers,
                timeout=limits,
                proxy=proxy,
                proxy_headers=proxy_headers,
            )
        except aiohttp.ConnectionTimeoutError as exc:
            # No connection was made: the request never left this process.
            raise UpstreamTimeoutError(f"{url} timed out connecting: {exc}", sent=False) from None
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
            raise UpstreamError(f"{url}: {exc}", sent=False) from None
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise UpstreamTimeoutError(f"{url} timed out: {exc}") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"{url}: {exc}") from None
        return _AiohttpResponse(response)

    def _proxy(self, url: str) -> tuple[str | None, Mapping[str, str] | None]:
        scheme, rest = url.split("://", 1) if "://" in url else ("http", url)
        netloc = rest.split("/", 1)[0]
        found = self._proxy_for.get((scheme, netloc))
        if found is None:
            proxy = self._proxies.get(scheme)
            host = netloc.rsplit("@", 1)[-1]
            if proxy and urllib.request.proxy_bypass_environment(host, self._proxies):  # type: ignore[attr-defined]
                proxy = None
            headers = None
            if proxy:
                parts = urllib.parse.urlsplit(proxy)
                if parts.username:
                    login = f"{urllib.parse.unquote(parts.username)}:"
                    login += urllib.parse.unquote(parts.password or "")
                    token = base64.b64encode(login.encode()).decode()
                    headers = {"Proxy-Authorization": f"Basic {token}"}
                    proxy = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
            found = self._proxy_for[(scheme, netloc)] = (proxy or None, headers)
        return found

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in response.headers.items()}

    async def aread(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise UpstreamTimeoutError(str(exc) or "read timed out") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(str(exc) or type(exc).__name__) from None

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise UpstreamTimeoutError(str(exc) or "read timed out") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(str(exc) or type(exc).__name__) from None

    async def aclose(self) -> None:
        self._response.release()


def _ssl_context(
    ca_bundle: str | None, client_cert: str | None, client_key: str | None, verify: bool
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_bundle)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert:
        context.load_cert_chain(client_cert, client_key)
    return context


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
