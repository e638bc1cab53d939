"""The gateway's proxy endpoints against a fake upstream on 127.0.0.1: costs, streams, errors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from llmbudget.clock import FrozenClock
from tests.gateway_fakes import HI_TOKENS, MASTER, FakeUpstream, Gw, ServerThread, cost, deployment


@pytest.fixture
def fake() -> Iterator[tuple[FakeUpstream, str]]:
    upstream = FakeUpstream()
    with ServerThread(upstream.app()) as server:
        yield upstream, server.url


def scope(key_id: str) -> str:
    return f"gw-key:{key_id}"


def test_chat_passes_the_response_through_and_settles_the_real_cost(fake):
    upstream, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        key_id, secret = gw.key(budget=1, period="daily")
        r = gw.chat(secret, max_tokens=50)
        assert r.status_code == 200
        body = r.json()
        assert body["usage"] == {
            "prompt_tokens": HI_TOKENS,
            "completion_tokens": 20,
            "total_tokens": 28,
        }
        assert body["choices"][0]["message"]["content"] == " a" * 20
        # The upstream got the provider's model name and the upstream key, never the client's.
        assert upstream.calls[-1]["model"] == "gpt-4o-mini"
        assert Decimal(r.headers["x-llmbudget-cost"]) == cost(HI_TOKENS, 20)
        status = gw.settled(scope(key_id), "daily")
        assert status.spent == cost(HI_TOKENS, 20)
        assert status.held == 0
        [entry] = gw.logs()
        assert entry["key"] == key_id and entry["user"] == "alice"
        assert entry["cost"] == str(cost(HI_TOKENS, 20))
        assert (entry["prompt_tokens"], entry["completion_tokens"]) == (HI_TOKENS, 20)
        assert entry["status"] == "ok" and entry["stream"] is False
        assert entry["reserved"] == str(cost(HI_TOKENS, 50))
        assert secret not in json.dumps(entry)


def _events(text: str) -> list[dict]:
    out = []
    for block in text.strip().split("\n\n"):
        data = block.removeprefix("data: ")
        if data != "[DONE]":
            out.append(json.loads(data))
    return out


def test_stream_strips_the_usage_chunk_the_client_did_not_ask_for(fake):
    upstream, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        key_id, secret = gw.key()
        r = gw.chat(secret, max_tokens=50, stream=True)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.text)
        assert r.text.rstrip().endswith("data: [DONE]")
        assert all("usage" not in e for e in events)
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == " a" * 20
        assert upstream.calls[-1]["stream_options"] == {"include_usage": True}
        status = gw.settled(scope(key_id))
        assert status.spent == cost(HI_TOKENS, 20)
        assert gw.logs()[0]["usage_source"] == "upstream"


def test_stream_keeps_usage_when_the_client_asked(fake):
    _, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        _, secret = gw.key()
        r = gw.chat(secret, max_tokens=50, stream=True, stream_options={"include_usage": True})
        usage = [e["usage"] for e in _events(r.text) if e.get("usage")]
        assert usage == [{"prompt_tokens": HI_TOKENS, "completion_tokens": 20, "total_tokens": 28}]


def test_stream_without_upstream_usage_is_charged_by_counting_the_text(fake):
    upstream, url = fake
    upstream.send_usage = False
    with Gw({"model_list": [deployment(url)]}) as gw:
        key_id, secret = gw.key()
        r = gw.chat(secret, max_tokens=50, stream=True)
        assert r.status_code == 200
        status = gw.settled(scope(key_id))
        assert status.spent == cost(HI_TOKENS, 20)  # " a" x 20 is 20 tokens
        assert gw.logs()[0]["usage_source"] == "counted"


def test_missing_max_tokens_is_forwarded_as_the_reserved_cap(fake):
    upstream, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        _, secret = gw.key(budget=1)
        assert gw.chat(secret).status_code == 200
        # Reserved for the deployment's max output (1000) and told the upstream so.
        assert upstream.calls[-1]["max_tokens"] == 1000
        assert gw.logs()[0]["reserved"] == str(cost(HI_TOKENS, 1000))


def test_missing_max_tokens_is_capped_to_what_the_budget_can_pay(fake):
    upstream, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        # $0.000208 pays the 8-token prompt ($0.000008) plus 100 completion tokens.
        _, secret = gw.key(budget="0.000208")
        assert gw.chat(secret).status_code == 200
        assert upstream.calls[-1]["max_tokens"] == 100
        # Spent 8 + 20 tokens: $0.000048 left of ... too little for 16 completion tokens? No:
        # 0.000208 - 0.000048 = 0.00016 -> (0.00016 - 0.000008) / 0.000002 = 76 tokens.
        assert gw.chat(secret).status_code == 200
        assert upstream.calls[-1]["max_tokens"] == 76


def test_capping_refuses_below_min_completion_tokens(fake):
    upstream, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        _, secret = gw.key(budget="0.00003")  # prompt + 11 tokens: under the 16-token floor
        r = gw.chat(secret)
        assert r.status_code == 429
        assert upstream.count == 0


def test_explicit_max_tokens_is_never_lowered(fake):
    upstream, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        _, secret = gw.key(budget="0.000208")
        assert gw.chat(secret, max_tokens=101).status_code == 429
        assert upstream.count == 0


def test_budget_refusal_is_an_openai_error_with_retry_after(fake):
    upstream, url = fake
    clock = FrozenClock(1_773_576_000.0)  # 2026-03-15 12:00 UTC: 12 h to the daily reset
    with Gw({"model_list": [deployment(url)]}, clock=clock) as gw:
        key_id, secret = gw.key(budget="0.0001", period="daily")
        r = gw.chat(secret, max_tokens=100)
        assert r.status_code == 429
        assert r.headers["retry-after"] == str(12 * 3600)
        assert r.headers["x-should-retry"] == "false"
        error = r.json()["error"]
        assert error["type"] == "budget_exceeded" and error["code"] == "budget_exceeded"
        assert error["param"] is None
        assert error["scope"] == scope(key_id)
        assert error["limit"] == "0.0001" and error["spent"] == "0"
        assert error["requested"] == str(cost(HI_TOKENS, 100))
        assert error["resets_at"] == "2026-03-16T00:00:00+00:00"
        assert key_id in error["message"] and "0.0001" in error["message"]
        assert upstream.count == 0
        assert gw.status(scope(key_id), None, "daily").held == 0
        assert gw.logs()[0]["status"] == "budget_exceeded"


def test_a_lifetime_budget_refusal_has_no_retry_after(fake):
    _, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        _, secret = gw.key(budget="0.0001")
        r = gw.chat(secret, max_tokens=100)
        assert r.status_code == 429
        assert "retry-after" not in r.headers
        assert r.json()["error"]["resets_at"] is None


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"authorization": "Bearer sk-llmb-not-a-key"}, "invalid_api_key"),
        ({"authorization": "Basic abc"}, "missing_api_key"),
    ],
)
def test_bad_credentials_get_401_in_openai_shape(fake, headers, code):
    upstream, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        r = gw.http.post(
            "/v1/chat/completions", json={"model": "m", "messages": []}, headers=headers
        )
        assert r.status_code == 401
        assert r.json()["error"]["code"] == code
        assert set(r.json()["error"]) >= {"type", "message", "param", "code"}
        assert upstream.count == 0


def test_revoked_and_expired_keys_are_refused(fake):
    _, url = fake
    clock = FrozenClock(1_773_576_000.0)
    with Gw({"model_list": [deployment(url)]}, clock=clock) as gw:
        _key_id, secret = gw.key(duration="1h")
        assert gw.chat(secret, max_tokens=5).status_code == 200
        clock.advance(3600)
        r = gw.chat(secret, max_tokens=5)
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
        other_id, other = gw.key()
        assert gw.chat(other, max_tokens=5).status_code == 200
        gw.admin("DELETE", f"/v1/keys/{other_id}")
        r = gw.chat(other, max_tokens=5)  # same process: the cache is dropped at once
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_unknown_model_is_404_and_forbidden_model_403(fake):
    upstream, url = fake
    with Gw({"model_list": [deployment(url, "m"), deployment(url, "big")]}) as gw:
        _, secret = gw.key(models=["m"])
        r = gw.chat(secret, model="nope", max_tokens=5)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = gw.chat(secret, model="big", max_tokens=5)
        assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
        assert upstream.count == 0
        r = gw.http.get("/v1/models", headers={"authorization": f"Bearer {secret}"})
        assert [m["id"] for m in r.json()["data"]] == ["m"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[1, 2]",
        json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(),
        json.dumps({"model": "m"}).encode(),
        json.dumps({"model": "m", "messages": "hi"}).encode(),
        json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}
        ).encode(),
        json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1.5}
        ).encode(),
        json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}).encode(),
        json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}
        ).encode(),
        json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "user": 5}
        ).encode(),
    ],
)
def test_bad_input_is_400_and_nothing_is_reserved_or_stored(fake, body):
    upstream, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        key_id, secret = gw.key()
        r = gw.http.post(
            "/v1/chat/completions",
            content=body,
            headers={"authorization": f"Bearer {secret}", "content-type": "application/json"},
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert upstream.count == 0
        status = gw.status(scope(key_id))
        assert (status.spent, status.held) == (0, 0)
        assert gw.logs() == []


def test_a_non_retryable_upstream_error_is_passed_through_and_released(fake):
    upstream, url = fake
    upstream.fail_status = 400
    with Gw({"model_list": [deployment(url)]}) as gw:
        key_id, secret = gw.key(budget=1)
        r = gw.chat(secret, max_tokens=50)
        assert r.status_code == 400
        assert "fake failed" in r.json()["error"]["message"]
        assert upstream.count == 1  # a 400 is the request's fault: no other deployment tried
        status = gw.status(scope(key_id), 1)
        assert (status.spent, status.held) == (0, 0)


def test_embeddings_are_charged_for_input_tokens(fake):
    _, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        key_id, secret = gw.key()
        r = gw.http.post(
            "/v1/embeddings",
            json={"model": "m", "input": ["hello world", "x"]},
            headers={"authorization": f"Bearer {secret}"},
        )
        assert r.status_code == 200
        assert len(r.json()["data"]) == 2
        assert gw.settled(scope(key_id)).spent == cost(3, 0)
        r = gw.http.post(
            "/v1/embeddings",
            json={"model": "m", "input": []},
            headers={"authorization": f"Bearer {secret}"},
        )
        assert r.status_code == 400


def test_a_client_gone_mid_stream_is_charged_its_whole_reservation(fake):
    upstream, url = fake
    upstream.reply_tokens = 400
    upstream.chunk_delay = 0.01
    with Gw({"model_list": [deployment(url)]}) as gw:
        key_id, secret = gw.key(budget=1)
        received = 0
        with (
            httpx.Client(base_url=gw.url, timeout=30) as client,
            client.stream(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": "m",
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream": True,
                    "max_tokens": 400,
                },
                headers={"authorization": f"Bearer {secret}"},
            ) as r,
        ):
            for line in r.iter_lines():
                if '"content": " a"' in line:
                    received += 1
                if received == 10:
                    break
        deadline = time.monotonic() + 5
        while not gw.logs() and time.monotonic() < deadline:
            time.sleep(0.02)
        [entry] = gw.logs()
        assert entry["status"] == "client_disconnected"
        # The upstream was still generating when the client left; what it went on to
        # produce (and bill) before it saw the connection close is unknown: the whole
        # reservation is charged (the one rule of llmbudget.metering.usage).
        assert entry["usage_source"] == "reserved"
        assert entry["completion_tokens"] == 400
        status = gw.settled(scope(key_id), None)
        assert status.held == 0
        assert status.spent == cost(HI_TOKENS, 400) == Decimal(entry["cost"])
        assert upstream.closed_early == 1  # the upstream stream was closed, not read to its end


def test_the_upstream_key_and_the_master_key_are_never_exposed(fake):
    _upstream, url = fake
    with Gw({"model_list": [deployment(url)]}) as gw:
        _, secret = gw.key()
        r = gw.chat(secret, max_tokens=5)
        assert "upstream-secret" not in r.text and MASTER not in r.text
        assert "upstream-secret" not in repr(gw.gateway.config)


def test_the_httpx_upstream_client_behaves_the_same(fake):
    upstream, url = fake
    config = {"model_list": [deployment(url)], "general_settings": {"upstream_client": "httpx"}}
    with Gw(config) as gw:
        key_id, secret = gw.key()
        assert gw.chat(secret, max_tokens=50).json()["usage"]["completion_tokens"] == 20
        events = _events(gw.chat(secret, max_tokens=50, stream=True).text)
        assert all("usage" not in e for e in events)
        upstream.fail_status = 400
        assert gw.chat(secret, max_tokens=50).status_code == 400
        status = gw.settled(scope(key_id))
        assert status.spent == 2 * cost(HI_TOKENS, 20)
