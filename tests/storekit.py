"""Store factories the conformance suite is parametrised over.

Each factory yields a fresh, isolated store and cleans up after it. A backend whose server
is unreachable is skipped with a clear reason on a developer's machine, and fails under
``CI=true`` (CI must exercise every backend).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from llmbudget.errors import StoreUnavailableError
from llmbudget.stores.base import Store

# The shared test servers (override to point the suite elsewhere).
POSTGRES_URL = os.environ.get(
    "LLMBUDGET_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("LLMBUDGET_TEST_REDIS", "redis://127.0.0.1:6379/0")

StoreFactory = Callable[[Path], AbstractContextManager[Store]]


def unavailable(backend: str, reason: str) -> None:
    """Skip locally, fail in CI, when a backend's server cannot be reached."""
    message = f"{backend} unavailable: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: store tests must not be skipped)")
    pytest.skip(message)


@contextmanager
def memory_store(tmp_path: Path) -> Iterator[Store]:
    from llmbudget.stores.memory import MemoryStore

    yield MemoryStore()


@contextmanager
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    from llmbudget.stores.sqlite import SQLiteStore

    store = SQLiteStore(str(tmp_path / "ledger.db"))
    try:
        yield store
    finally:
        store.close()


def with_query(url: str, **params: str) -> str:
    """``url`` with query parameters added (or replaced)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def isolation_name(tmp_path: Path) -> str:
    """A schema / key prefix unique to one test (tmp_path is unique per test and session,
    even across concurrent pytest runs), the same for every process given that tmp_path."""
    digest = hashlib.sha1(str(tmp_path.resolve()).encode()).hexdigest()[:16]
    return f"llmbudget_test_{digest}"


def drop_postgres_schema(schema: str, url: str = POSTGRES_URL) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def delete_redis_prefix(prefix: str, url: str = REDIS_URL) -> int:
    """Delete every key of a store prefix (SCAN + UNLINK); returns how many there were."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        removed = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match="{" + prefix + "}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                removed += client.unlink(*batch)
                batch.clear()
        if batch:
            removed += client.unlink(*batch)
        return removed
    finally:
        client.close()


def postgres_url(tmp_path: Path) -> str:
    return with_query(POSTGRES_URL, schema=isolation_name(tmp_path))


def redis_url(tmp_path: Path) -> str:
    return with_query(REDIS_URL, prefix=isolation_name(tmp_path))


@contextmanager
def postgres_store(tmp_path: Path) -> Iterator[Store]:
    try:
        from llmbudget.stores.postgres import PostgresStore
    except ImportError as exc:
        unavailable("postgres", f"psycopg not installed ({exc})")
    url = postgres_url(tmp_path)
    try:
        store = PostgresStore(url)
    except StoreUnavailableError as exc:
        unavailable("postgres", str(exc))
    try:
        yield store
    finally:
        store.close()
        drop_postgres_schema(isolation_name(tmp_path))


@contextmanager
def redis_store(tmp_path: Path) -> Iterator[Store]:
    try:
        import redis

        from llmbudget.stores.redis import RedisStore
    except ImportError as exc:
        unavailable("redis", f"redis-py not installed ({exc})")
    probe = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        probe.ping()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        unavailable("redis", f"{REDIS_URL}: {exc}")
    finally:
        probe.close()
    store = RedisStore(redis_url(tmp_path))
    try:
        yield store
    finally:
        store.close()
        delete_redis_prefix(isolation_name(tmp_path))


@contextmanager
def http_store(tmp_path: Path) -> Iterator[Store]:
    """An HttpStore on a live budget server over a memory store, taking the client's times
    as sent (``trust_client_clock``), so tests may drive time by hand."""
    from llmbudget.server import ServerConfig, create_app
    from llmbudget.server.testing import live_server
    from llmbudget.stores.http import HttpStore
    from llmbudget.stores.memory import MemoryStore

    config = ServerConfig(admin_key="storekit-key", trust_client_clock=True)
    with live_server(create_app(config, store=MemoryStore())) as base:
        store = HttpStore(base, api_key="storekit-key")
        try:
            yield store
        finally:
            store.close()


# Every backend, the HTTP store included (the conformance suite runs over HTTP separately,
# in test_hosted_manager.py).
ALL_FACTORIES: dict[str, StoreFactory] = {}


# Backends that share state across processes (used by the multi-process race tests),
# by name; each value opens the same underlying state given the same tmp_path.
FACTORIES: dict[str, StoreFactory] = {
    "memory": memory_store,
    "sqlite": sqlite_store,
    "postgres": postgres_store,
    "redis": redis_store,
}
SHARED_ACROSS_PROCESSES = {"sqlite", "postgres", "redis"}
ALL_FACTORIES.update(FACTORIES, http=http_store)


def store_url(backend: str, tmp_path: Path) -> str:
    """The URL another process opens to reach the store ``FACTORIES[backend](tmp_path)``."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    if backend == "postgres":
        return postgres_url(tmp_path)
    if backend == "redis":
        return redis_url(tmp_path)
    raise ValueError(f"{backend} is not shared across processes")


# -- private servers and a cuttable TCP proxy (outage and cluster tests) ---------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_redis(
    tmp_path: Path, *, cluster: bool = False, port: int | None = None
) -> Iterator[int]:
    """A redis-server of our own on a free port (never the shared one); yields its port.

    ``cluster=True`` makes it a one-node Redis Cluster owning all 16384 slots, so the real
    ``redis+cluster://`` client path runs without a multi-node cluster. ``port`` restarts
    a server on the port an earlier one had."""
    import shutil
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server", "binary not found (apt-get install redis-server)")
    import redis

    port = port or free_port()
    folder = tmp_path / f"redis-{port}"
    folder.mkdir(parents=True, exist_ok=True)
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(folder)]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-config-file", str(folder / "nodes.conf")]
        # The bus port defaults to port + 10000, past 65535 for a high free port.
        args += ["--cluster-port", str(free_port())]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=1, decode_responses=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"private redis-server on {port} did not start") from None
                time.sleep(0.05)
        if cluster:
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            while "cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise RuntimeError("one-node cluster did not become ready")
                time.sleep(0.05)
        yield port
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a server and can be cut and restored, so a test can take
    a store's server away without touching the shared server other tests use.

    ``cut()`` closes every connection and refuses new ones (a server that is down);
    ``stall()`` keeps connections open but forwards nothing (a hung server or network);
    ``restore()`` forwards again on the same port.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        import socket
        import threading

        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stalled = threading.Event()
        self.restore()

    def _listen(self) -> None:
        import socket
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: Any) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: Any, dst: Any) -> None:
        import time

        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                while self._stalled.is_set():
                    if src.fileno() < 0:
                        return
                    time.sleep(0.05)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._close(src)
            self._close(dst)

    def _close(self, sock: Any) -> None:
        import socket

        with self._lock:
            self._sockets.discard(sock)
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> None:
        import socket

        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            with suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            self._close(sock)

    def stall(self) -> None:
        self._stalled.set()

    def restore(self) -> None:
        self._stalled.clear()
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self._stalled.clear()
        self.cut()
