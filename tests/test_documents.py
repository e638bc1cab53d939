"""Documents and logs: the generic storage the server and gateway use, on every store."""

from __future__ import annotations

import threading

from llmbudget.stores.base import Store


def test_documents_round_trip_and_are_copied(store: Store) -> None:
    data = {"user": "u1", "models": ["gpt-4o"], "limit": "1.50", "n": 3, "ok": True, "x": None}
    store.put_doc("key", "h:abc", data)
    data["models"].append("mutated")  # type: ignore[attr-defined]
    got = store.get_doc("key", "h:abc")
    assert got == {"user": "u1", "models": ["gpt-4o"], "limit": "1.50", "n": 3, "ok": True,
                   "x": None}  # fmt: skip
    assert store.get_doc("key", "missing") is None
    assert store.get_doc("other-kind", "h:abc") is None
    store.put_doc("key", "h:abc", {"replaced": 1})
    assert store.get_doc("key", "h:abc") == {"replaced": 1}


def test_list_docs_by_prefix_with_awkward_keys(store: Store) -> None:
    for key in ["a%", "a_", "a:b", "ab", "b", "a/ü"]:
        store.put_doc("k", key, {"key": key})
    store.put_doc("other", "a1", {})
    assert [k for k, _ in store.list_docs("k", "a")] == ["a%", "a/ü", "a:b", "a_", "ab"]
    assert [k for k, _ in store.list_docs("k", "a_")] == ["a_"]
    assert [k for k, _ in store.list_docs("k")] == ["a%", "a/ü", "a:b", "a_", "ab", "b"]
    assert store.delete_doc("k", "b") is True
    assert store.delete_doc("k", "b") is False


def test_create_doc_is_atomic_insert_if_absent(store: Store) -> None:
    wins: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def attempt(i: int) -> None:
        barrier.wait()
        if store.create_doc("alert", "user:x:2026-03-15:80", {"by": i}):
            with lock:
                wins.append(i)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get_doc("alert", "user:x:2026-03-15:80") == {"by": wins[0]}


def test_logs_newest_first_filtered_by_time_and_kind(store: Store) -> None:
    for i in range(10):
        store.append_log("spend", 1000.0 + i, {"i": i})
    store.append_log("audit", 1005.0, {"i": "audit"})
    entries = store.read_log("spend", since=1002.0, until=1008.0, limit=3)
    assert [e.data["i"] for e in entries] == [7, 6, 5]
    assert [e.at for e in entries] == [1007.0, 1006.0, 1005.0]
    assert len(store.read_log("spend", limit=100)) == 10
    assert store.read_log("nothing") == []
