"""Run the server for real (uvicorn, a loopback port) inside a test or a script.

>>> from llmbudget.server import ServerConfig, create_app
>>> with live_server(create_app(ServerConfig(store="memory://"))) as base:  # doctest: +SKIP
...     httpx.get(f"{base}/v1/health").json()["status"]
'ok'
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp

__all__ = ["live_server"]


@contextmanager
def live_server(
    app: ASGIApp,
    host: str = "127.0.0.1",
    *,
    timeout: float = 10.0,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a free port of ``host``; yields the base
    URL (``https://`` when a certificate is given) and stops the server (lifespan
    shutdown included) on exit."""
    import uvicorn

    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on sockets that say so, and
    # without it every keep-alive response waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="llmbudget-live-server", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"{'https' if ssl_certfile else 'http'}://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
