"""The gateway's upstream HTTP clients (aiohttp, httpx) against hand-written servers.

Real sockets on 127.0.0.1: keep-alive, chunked and gzip bodies, idle connections closed
by the server, timeouts, whether a failed request may have been sent, egress proxies
from the environment (plain and ``CONNECT``), custom CA bundles and client certificates.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trustme

from llmbudget.gateway.upstream import (
    AiohttpClient,
    HttpxClient,
    UpstreamClient,
    UpstreamError,
    UpstreamTimeoutError,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
KINDS = ["aiohttp", "httpx"]


def _client(kind: str, **tls: object) -> UpstreamClient:
    if kind == "aiohttp":
        return AiohttpClient(**tls)  # type: ignore[arg-type]
    return HttpxClient()


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy in the developer's environment must not carry these local requests.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def _serve(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(request head, body) of one request."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer every request on the connection with its own body."""
    try:
        while True:
            _, body = await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_connection_the_server_closed_while_idle_is_replaced(kind: str) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        _, body = await _read_request(reader)
        # Keep-alive advertised, then the connection is closed anyway (as idle timeouts do).
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    async def main() -> list[bytes]:
        server, port = await _serve(handler)
        client = _client(kind)
        out = []
        async with server:
            for i in range(3):
                r = await client.post(f"http://127.0.0.1:{port}/v1/x", b"hello %d" % i, {}, 5)
                out.append(await r.aread())
                await r.aclose()
                await asyncio.sleep(0.05)  # let the close arrive
            await client.aclose()
        return out

    assert asyncio.run(main()) == [b"hello 0", b"hello 1", b"hello 2"]
    assert connections == 3


@pytest.mark.parametrize("kind", KINDS)
def test_keep_alive_reuses_one_connection_and_decodes_chunked_and_gzip(kind: str) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                _, body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            if body == b"gzip":
                payload = gzip.compress(b"zipped!")
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(payload), payload)
                )
            else:
                writer.write(
                    b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\nx-a: 1\r\n\r\n"
                    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: y\r\n\r\n"
                )
            await writer.drain()

    async def main() -> tuple[list[bytes], int, str]:
        server, port = await _serve(handler)
        url = f"http://127.0.0.1:{port}/v1/x"
        client = _client(kind)
        async with server:
            first = await client.post(url, b"chunks", {"x-b": "2"}, 5)
            status, header = first.status_code, first.headers["x-a"]
            chunks = [c async for c in first.aiter_bytes()]
            await first.aclose()
            second = await client.post(url, b"gzip", {}, 5)
            zipped = await second.aread()
            await second.aclose()
            await client.aclose()
        return [b"".join(chunks), zipped], status, header

    bodies, status, header = asyncio.run(main())
    assert bodies == [b"hello world", b"zipped!"]
    assert (status, header) == (201, "1")
    assert connections == 1


@pytest.mark.parametrize("kind", KINDS)
def test_errors_say_whether_the_request_may_have_been_sent(kind: str) -> None:
    """Only a request that never left may be released: the gateway reads ``sent``."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async def main() -> None:
        server, port = await _serve(silent)
        client = _client(kind)
        async with server:
            with pytest.raises(UpstreamTimeoutError) as timed_out:
                await client.post(f"http://127.0.0.1:{port}/v1/x", b"x", {}, 0.2)
            assert timed_out.value.sent is True  # it was sent: the work may be billed
        with pytest.raises(UpstreamError) as refused:
            await client.post("http://127.0.0.1:1/v1/x", b"x", {}, 1)
        assert refused.value.sent is False  # no connection: nothing can have been billed
        await client.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_cut_mid_body_is_an_upstream_error(kind: str) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        writer.close()

    async def main() -> list[bytes]:
        server, port = await _serve(cut)
        client = _client(kind)
        got: list[bytes] = []
        async with server:
            response = await client.post(f"http://127.0.0.1:{port}/v1/x", b"x", {}, 5)
            with pytest.raises(UpstreamError) as broken:
                async for chunk in response.aiter_bytes():
                    got.append(chunk)
            assert broken.value.sent is True
            await response.aclose()
        await client.aclose()
        return got

    assert b"".join(asyncio.run(main())) == b"hello"


# --------------------------------------------------------------------------- TLS and proxies


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    yield str(path)


def _server_tls(ca: trustme.CA, *, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("upstream.test", "127.0.0.1").configure_cert(context)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


def test_certificates_are_verified_against_the_configured_ca_bundle(
    ca: trustme.CA, ca_file: str
) -> None:
    async def main() -> None:
        server, port = await _serve(_echo, _server_tls(ca))
        url = f"https://127.0.0.1:{port}/v1/x"
        async with server:
            untrusting = AiohttpClient()  # the system's CAs do not know this one
            with pytest.raises(UpstreamError) as refused:
                await untrusting.post(url, b"x", {}, 5)
            assert refused.value.sent is False  # the handshake failed: nothing was sent
            await untrusting.aclose()

            trusting = AiohttpClient(ca_bundle=ca_file)
            response = await trusting.post(url, b"over tls", {}, 5)
            assert await response.aread() == b"over tls"
            await response.aclose()
            await trusting.aclose()

            unverified = AiohttpClient(verify=False)
            response = await unverified.post(url, b"unchecked", {}, 5)
            assert await response.aread() == b"unchecked"
            await response.aclose()
            await unverified.aclose()

    asyncio.run(main())


def test_a_client_certificate_is_presented_to_an_upstream_that_requires_one(
    ca: trustme.CA, ca_file: str, tmp_path: Path
) -> None:
    identity = ca.issue_cert("gateway.test")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    for blob in identity.cert_chain_pems:
        with cert.open("ab") as out:
            out.write(blob.bytes())
    identity.private_key_pem.write_to_path(str(key))

    async def main() -> None:
        server, port = await _serve(_echo, _server_tls(ca, require_client_cert=True))
        url = f"https://127.0.0.1:{port}/v1/x"
        async with server:
            anonymous = AiohttpClient(ca_bundle=ca_file)
            with pytest.raises(UpstreamError):
                response = await anonymous.post(url, b"x", {}, 5)
                await response.aread()
            await anonymous.aclose()

            known = AiohttpClient(ca_bundle=ca_file, client_cert=str(cert), client_key=str(key))
            response = await known.post(url, b"mutual", {}, 5)
            assert await response.aread() == b"mutual"
            await response.aclose()
            await known.aclose()

    asyncio.run(main())


class _Proxy:
    """An egress proxy: absolute-form requests and ``CONNECT`` tunnels, every host mapped
    to one local port (so a name only the proxy can 'resolve' proves the route)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.requests: list[bytes] = []
        self.auth: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head.split(b"\r\n", 1)[0])
        self.auth.extend(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"proxy-authorization:")
        )
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        if head.startswith(b"CONNECT "):
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
        else:
            up_writer.write(head)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def test_requests_go_through_the_proxy_named_in_the_environment(
    ca: trustme.CA, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> list[bytes]:
        plain, plain_port = await _serve(_echo)
        secure, secure_port = await _serve(_echo, _server_tls(ca))
        http_proxy, https_proxy = _Proxy(plain_port), _Proxy(secure_port)
        p1, p1_port = await _serve(http_proxy.handle)
        p2, p2_port = await _serve(https_proxy.handle)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{p1_port}")
        monkeypatch.setenv("HTTPS_PROXY", f"http://egress:s%40cret@127.0.0.1:{p2_port}")
        bodies = []
        async with plain, secure, p1, p2:
            client = AiohttpClient(ca_bundle=ca_file)
            for url in ("http://upstream.test/v1/x", "https://upstream.test/v1/x"):
                response = await client.post(url, url.encode(), {}, 5)
                bodies.append(await response.aread())
                await response.aclose()
            await client.aclose()
        assert http_proxy.requests == [b"POST http://upstream.test/v1/x HTTP/1.1"]
        assert https_proxy.requests == [b"CONNECT upstream.test:443 HTTP/1.1"]
        # Credentials in the proxy URL are sent to the proxy, never to the upstream.
        assert http_proxy.auth == [] and https_proxy.auth == [b"Basic ZWdyZXNzOnNAY3JldA=="]
        return bodies

    assert asyncio.run(main()) == [b"http://upstream.test/v1/x", b"https://upstream.test/v1/x"]


def test_no_proxy_hosts_are_reached_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> tuple[bytes, list[bytes]]:
        upstream, port = await _serve(_echo)
        proxy = _Proxy(port)
        p, p_port = await _serve(proxy.handle)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{p_port}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        async with upstream, p:
            client = AiohttpClient()
            response = await client.post(f"http://127.0.0.1:{port}/v1/x", b"direct", {}, 5)
            body = await response.aread()
            await response.aclose()
            await client.aclose()
        return body, proxy.requests

    assert asyncio.run(main()) == (b"direct", [])


def test_the_gateway_reaches_a_tls_upstream_with_its_configured_ca_bundle(
    ca: trustme.CA, ca_file: str, tmp_path: Path
) -> None:
    from tests.gateway_fakes import FakeUpstream, Gw, ServerThread, deployment

    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    issued = ca.issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    upstream = FakeUpstream()
    with ServerThread(upstream.app(), ssl_certfile=str(cert), ssl_keyfile=str(key)) as server:
        assert server.url.startswith("https://")
        for settings, status in (({}, 502), ({"ssl_ca_bundle": ca_file}, 200)):
            with Gw({"model_list": [deployment(server.url)], "general_settings": settings}) as gw:
                key_id, secret = gw.key(budget=1)
                assert gw.chat(secret, max_tokens=5).status_code == status
                spent = gw.settled(f"gw-key:{key_id}")
                # An unverifiable upstream never got the request: the hold was released.
                assert spent.held == 0 and (spent.spent > 0) == (status == 200)
    assert len(upstream.calls) == 1
