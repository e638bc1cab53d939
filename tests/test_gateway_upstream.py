"""The gateway's lean upstream HTTP client against hand-written servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Awaitable, Callable

import pytest

from llmbudget.gateway.upstream import (
    FastClient,
    HttpxClient,
    UpstreamError,
    UpstreamTimeoutError,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1/x"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return await reader.readexactly(length)


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        body = await _read_request(reader)
        # Keep-alive advertised, then the connection is closed anyway (as idle timeouts do).
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    async def main() -> list[bytes]:
        server, url = await _serve(handler)
        client = FastClient()
        out = []
        async with server:
            for i in range(3):
                r = await client.post(url, b"hello %d" % i, {}, 5)
                out.append(await r.aread())
                await asyncio.sleep(0.05)  # let the close arrive
            await client.aclose()
        return out

    assert asyncio.run(main()) == [b"hello 0", b"hello 1", b"hello 2"]
    assert connections == 3


def test_keep_alive_reuses_one_connection_and_decodes_chunked_and_gzip() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                body = await _read_request(reader)
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
        server, url = await _serve(handler)
        client = FastClient()
        async with server:
            first = await client.post(url, b"chunks", {"x-b": "2"}, 5)
            status, header = first.status_code, first.headers["x-a"]
            chunks = [c async for c in first.aiter_bytes()]
            second = await client.post(url, b"gzip", {}, 5)
            zipped = await second.aread()
            await client.aclose()
        return [b"".join(chunks), zipped], status, header

    bodies, status, header = asyncio.run(main())
    assert bodies == [b"hello world", b"zipped!"]
    assert (status, header) == (201, "1")
    assert connections == 1


def test_timeouts_and_refused_connections_are_upstream_errors() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async def main() -> None:
        server, url = await _serve(silent)
        client = FastClient()
        async with server:
            with pytest.raises(UpstreamTimeoutError):
                await client.post(url, b"x", {}, 0.2)
        with pytest.raises(UpstreamError):
            await client.post("http://127.0.0.1:1/v1/x", b"x", {}, 1)
        await client.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["fast", "httpx"])
def test_errors_say_whether_the_request_may_have_been_sent(kind: str) -> None:
    """Only a request that never left may be released: the gateway reads ``sent``."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async def main() -> None:
        server, url = await _serve(silent)
        client = FastClient() if kind == "fast" else HttpxClient()
        async with server:
            with pytest.raises(UpstreamTimeoutError) as timed_out:
                await client.post(url, b"x", {}, 0.2)
            assert timed_out.value.sent is True  # it was sent: the work may be billed
        with pytest.raises(UpstreamError) as refused:
            await client.post("http://127.0.0.1:1/v1/x", b"x", {}, 1)
        assert refused.value.sent is False  # no connection: nothing can have been billed
        await client.aclose()

    asyncio.run(main())
