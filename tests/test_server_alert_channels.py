"""Alert channels: Slack messages, a signed webhook, email over SMTP; retries, a dead
channel beside live ones, per-entity thresholds and the gateway's budgets."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trustme
from fastapi.testclient import TestClient

from llmbudget.clock import FrozenClock
from llmbudget.errors import InvalidInputError, InvalidSignatureError
from llmbudget.server import AlertConfig, ServerConfig, create_app
from llmbudget.server.alert_email import EmailSettings
from llmbudget.server.alerts import AlertManager
from llmbudget.server.config import EntityThresholds
from llmbudget.server.testing import live_server
from llmbudget.signatures import SIGNATURE_HEADER, sign, verify_signature
from llmbudget.stores.sqlite import SQLiteStore
from tests.alert_receivers import http_receiver, smtp_sink
from tests.gateway_fakes import HI, FakeUpstream, ServerThread, deployment
from tests.storekit import free_port

KEY = "alert-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
NOON = 1_773_576_000.0  # 2026-03-15 12:00 UTC
SECRET = "whsec_test_0123456789"


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(str(tmp_path / "alerts.db"))
    yield opened
    opened.close()


@pytest.fixture
def make_client(
    sqlite: SQLiteStore, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., TestClient]]:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    opened: list[TestClient] = []

    def make(**alerts: Any) -> TestClient:
        settings: dict[str, Any] = {"backoff": 0.01, "sweep_interval": 3600, **alerts}
        config = ServerConfig(admin_key=KEY, alerts=AlertConfig(**settings))
        client = TestClient(create_app(config, store=sqlite, clock=clock), headers=AUTH)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def _manager(client: TestClient) -> AlertManager:
    manager: AlertManager = client.app.state.llmbudget.alerts  # type: ignore[attr-defined]
    return manager


def _budget(client: TestClient, user: str = "ann", amount: str = "1") -> None:
    body = {"user": user, "amount": amount, "period": "daily"}
    assert client.post("/v1/projects/app/budgets", json=body).status_code == 201


def _charge(client: TestClient, amount: str, user: str = "ann") -> None:
    response = client.post("/v1/projects/app/charge", json={"user": user, "amount": amount})
    assert response.status_code == 200, response.text


def _eventually(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- Slack -----------------------------------------------------------------------------------


def test_slack_gets_a_readable_message_per_threshold(
    make_client: Callable[..., TestClient],
) -> None:
    with http_receiver() as slack:
        client = make_client(slack_webhook_url=slack.url)
        _budget(client)
        _charge(client, "0.85")  # crosses 50 % and 80 %
        posts = slack.wait_posts(2)
        assert _manager(client).wait_idle()
        assert len(slack.posts) == 2
        assert {p.path for p in posts} == {"/services/T000/B000/XXXX"}
        assert all(p.headers["content-type"] == "application/json" for p in posts)
        messages = sorted((json.loads(p.body) for p in posts), key=lambda m: m["text"])
        first = messages[0]
        assert first["text"] == (
            "Budget alert: user ann of project app: 50% of its budget used ($0.85 of $1.00)"
        )
        assert "80% of its budget used" in messages[1]["text"]
        assert [b["type"] for b in first["blocks"]] == ["header", "section", "section", "context"]
        assert first["blocks"][0]["text"] == {
            "type": "plain_text",
            "text": "Budget alert: 50% used",
        }
        fields = {
            f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in first["blocks"][2]["fields"]
        }
        assert fields["*Spent*"] == "$0.85"
        assert fields["*Limit*"] == "$1.00"
        assert fields["*Remaining*"] == "$0.15"
        assert fields["*Resets at*"] == "2026-03-16T00:00:00+00:00"
        assert "`user:app:ann`" in first["blocks"][3]["elements"][0]["text"]


def test_slack_text_is_escaped(make_client: Callable[..., TestClient]) -> None:
    with http_receiver() as slack:
        client = make_client(slack_webhook_url=slack.url)
        _budget(client, user="<!channel>&co")
        _charge(client, "0.6", user="<!channel>&co")
        message = json.loads(slack.wait_posts(1)[0].body)
        section = message["blocks"][1]["text"]["text"]
        assert "&lt;!channel&gt;&amp;co" in section and "<!channel>" not in section


def test_a_500_is_retried_then_delivered(make_client: Callable[..., TestClient]) -> None:
    with http_receiver(statuses=[500, 503]) as slack:
        client = make_client(slack_webhook_url=slack.url, retries=3)
        _budget(client)
        _charge(client, "0.6")
        assert len(slack.wait_posts(1)) == 1
        assert _manager(client).wait_idle()
        assert slack.attempts == 3
        assert (_manager(client).sent, _manager(client).failed) == (1, 0)


def test_a_429_waits_as_long_as_retry_after_asks(
    make_client: Callable[..., TestClient],
) -> None:
    with http_receiver(statuses=[429], retry_after="1") as slack:
        client = make_client(slack_webhook_url=slack.url, retries=2)  # backoff: 0.01 s
        _budget(client)
        _charge(client, "0.6")
        assert len(slack.wait_posts(1)) == 1
        assert slack.attempts == 2
        assert slack.times[1] - slack.times[0] >= 0.95


def test_a_4xx_is_not_retried(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    with http_receiver(statuses=[404, 200]) as slack:
        client = make_client(slack_webhook_url=slack.url, retries=3)
        _budget(client)
        _charge(client, "0.6")
        assert _manager(client).wait_idle()
        assert slack.attempts == 1 and slack.posts == []
        assert _manager(client).failed == 1
        assert "alert slack for user:app:ann at 50% failed after 1 attempt(s): slack: HTTP 404" in (
            caplog.text
        )


# -- signed webhook --------------------------------------------------------------------------


def test_the_webhook_is_signed_and_verifiable(
    make_client: Callable[..., TestClient], clock: FrozenClock
) -> None:
    with http_receiver() as hook:
        client = make_client(webhook_url=hook.url, webhook_secret=SECRET)
        _budget(client)
        _charge(client, "0.6")
        post = hook.wait_posts(1)[0]
        header = post.headers[SIGNATURE_HEADER.lower()]
        assert header.startswith(f"t={int(NOON)},v1=")
        # Good: the raw body under the shared secret, within the tolerance.
        assert verify_signature(SECRET, header, post.body, now=clock() + 60) == int(NOON)
        assert json.loads(post.body)["threshold"] == 0.5
        # Tampered body, wrong secret, stale timestamp: each refused, saying why.
        tampered = post.body.replace(b'"spent":"0.6"', b'"spent":"0.1"')
        assert tampered != post.body
        with pytest.raises(InvalidSignatureError) as bad:
            verify_signature(SECRET, header, tampered, now=clock())
        assert bad.value.reason == "mismatch"
        with pytest.raises(InvalidSignatureError) as wrong:
            verify_signature("another-secret", header, post.body, now=clock())
        assert wrong.value.reason == "mismatch"
        with pytest.raises(InvalidSignatureError) as stale:
            verify_signature(SECRET, header, post.body, tolerance=300, now=clock() + 301)
        assert stale.value.reason == "stale"


def test_an_unsigned_webhook_has_no_signature_header(
    make_client: Callable[..., TestClient],
) -> None:
    with http_receiver() as hook:
        client = make_client(webhook_url=hook.url, headers={"X-Source": "llmbudget"})
        _budget(client)
        _charge(client, "0.6")
        post = hook.wait_posts(1)[0]
        assert SIGNATURE_HEADER.lower() not in post.headers
        assert post.headers["x-source"] == "llmbudget"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "malformed"),
        ("", "malformed"),
        ("v1=abc", "malformed"),
        ("t=100", "malformed"),
        ("t=abc,v1=00", "malformed"),
        ("t=100,v1", "malformed"),
        ("t=100,v1=00", "mismatch"),
    ],
)
def test_malformed_signatures_are_refused(header: str | None, reason: str) -> None:
    with pytest.raises(InvalidSignatureError) as refused:
        verify_signature(SECRET, header, b"{}", now=100)
    assert refused.value.reason == reason
    assert isinstance(refused.value, InvalidInputError)


def test_any_of_several_signatures_may_match() -> None:
    good = sign(SECRET, b"{}", timestamp=100)
    rotated = sign("old-secret", b"{}", timestamp=100) + "," + good.split(",")[1]
    assert verify_signature(SECRET, rotated, b"{}", now=100) == 100
    assert verify_signature("old-secret", rotated, b"{}", now=100) == 100
    assert verify_signature(SECRET.encode(), good, b"{}", now=100) == 100


# -- email -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, str]:
    """A server context with a certificate for 127.0.0.1, and the CA file that trusts it."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return context, str(ca_file)


def _email(port: int, **extra: Any) -> EmailSettings:
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "sender": "budget@example.com",
        "to": ("ops@example.com", "cfo@example.com"),
        "timeout": 5.0,
        **extra,
    }
    return EmailSettings(**settings)


def test_email_over_starttls_with_a_login(
    make_client: Callable[..., TestClient], tls: tuple[ssl.SSLContext, str]
) -> None:
    context, ca_file = tls
    with smtp_sink(starttls=context, users={"alerts": "s3cret"}) as (sink, port):
        email = _email(port, username="alerts", password="s3cret", ca_file=ca_file)
        client = make_client(email=email)
        _budget(client)
        _charge(client, "0.6")
        mail = sink.wait_mails(1)[0]
        assert sink.logins == ["alerts"]
        assert mail.sender == "budget@example.com"
        assert mail.recipients == ["ops@example.com", "cfo@example.com"]
        message = mail.message
        # A long subject is folded onto a second line; unfolded, it reads:
        assert message["Subject"].strip() == (
            "[llmbudget] user ann of project app: 50% of its budget used ($0.60 of $1.00)"
        )
        assert message["To"] == "ops@example.com, cfo@example.com"
        body = message.get_body().get_content()  # type: ignore[union-attr]
        assert "Spent:          $0.60" in body
        assert "Remaining:      $0.40" in body
        assert "Resets at:      2026-03-16T00:00:00+00:00" in body
        assert "Scope:          user:app:ann" in body


def test_email_over_implicit_tls(
    make_client: Callable[..., TestClient], tls: tuple[ssl.SSLContext, str]
) -> None:
    context, ca_file = tls
    with smtp_sink(implicit_tls=context) as (sink, port):
        client = make_client(email=_email(port, security="ssl", ca_file=ca_file))
        _budget(client)
        _charge(client, "0.9")
        subjects = sorted(m.message["Subject"] for m in sink.wait_mails(2))
        assert ["50%" in subjects[0], "80%" in subjects[1]] == [True, True]


def test_an_untrusted_certificate_is_refused(
    make_client: Callable[..., TestClient], tls: tuple[ssl.SSLContext, str]
) -> None:
    context, _ = tls
    with smtp_sink(starttls=context) as (sink, port):
        client = make_client(email=_email(port), retries=1)  # system CAs: not trustme's
        _budget(client)
        _charge(client, "0.6")
        assert _manager(client).wait_idle()
        assert _manager(client).failed == 1 and sink.mails == []


# The sink asks for a login over plain SMTP to refuse it; aiosmtpd warns about that.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_refused_login_is_not_retried(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    with smtp_sink(users={"alerts": "s3cret"}) as (sink, port):
        email = _email(port, security="none", username="alerts", password="wrong")
        client = make_client(email=email, retries=3)
        _budget(client)
        _charge(client, "0.6")
        assert _manager(client).wait_idle()
        assert _manager(client).failed == 1 and sink.mails == []
        assert "failed after 1 attempt(s): email: login refused by 127.0.0.1: 535" in caplog.text


def test_an_unreachable_smtp_server_is_retried_then_counted(
    make_client: Callable[..., TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(email=_email(free_port(), security="none"), retries=2)
    _budget(client)
    _charge(client, "0.6")
    assert _manager(client).wait_idle()
    assert _manager(client).failed == 1
    assert "alert email for user:app:ann at 50% failed after 3 attempt(s)" in caplog.text
    assert client.get("/v1/projects/app/budgets/ann").json()["spent"] == "0.6"


# -- channels side by side -------------------------------------------------------------------


def test_a_dead_channel_does_not_block_the_others(
    make_client: Callable[..., TestClient],
) -> None:
    with (
        http_receiver(hang=True) as dead,
        http_receiver() as slack,
        smtp_sink() as (sink, port),
    ):
        client = make_client(
            webhook_url=dead.url,
            slack_webhook_url=slack.url,
            email=_email(port, security="none"),
            timeout=30,
        )
        _budget(client)
        _charge(client, "0.85")
        # Slack and email deliver both alerts while the webhook's first request hangs.
        assert len(slack.wait_posts(2)) == 2
        assert len(sink.wait_mails(2)) == 2
        webhook = next(w for w in _manager(client).workers if w.name == "webhook")
        assert (webhook.sent, webhook.failed, dead.attempts) == (0, 0, 0)
        # A request does not wait for any channel either.
        _charge(client, "0.01")
        dead.release()
        assert len(dead.wait_posts(2)) == 2
        assert _manager(client).wait_idle()
        assert (_manager(client).sent, _manager(client).failed) == (6, 0)


# -- thresholds per entity -------------------------------------------------------------------


def test_project_thresholds_and_exact_scopes(make_client: Callable[..., TestClient]) -> None:
    with http_receiver() as hook:
        client = make_client(
            webhook_url=hook.url,
            projects={"app": (0.9,)},
            budgets={"user:app:bob": (0.25,)},
        )
        _budget(client)
        _budget(client, user="bob")
        _charge(client, "0.85")  # ann: the project's 90 % is not reached
        _charge(client, "0.3", user="bob")  # bob: his own 25 % beats the project's
        assert _manager(client).wait_idle()
        assert [
            (json.loads(p.body)["user"], json.loads(p.body)["threshold"]) for p in hook.posts
        ] == [("bob", 0.25)]
        _charge(client, "0.1")  # ann at 95 %
        posts = hook.wait_posts(2)
        assert json.loads(posts[1].body)["threshold"] == 0.9
        got = client.get("/v1/projects/app/budgets/ann").json()["alert_thresholds"]
        assert got == [0.9]


def test_gateway_entity_thresholds_cover_their_model_scopes() -> None:
    config = AlertConfig(
        thresholds=(0.5,),
        gateway=EntityThresholds(
            keys={"key_1": (1.0,)},
            users={"ann": (0.6,)},
            teams={"ml": (0.7,)},
            orgs={"acme": (0.8,)},
            end_users={"cust:1": (0.9,)},
        ),
        budgets={"gw-team:ml": (0.95,)},
    )
    from llmbudget.server.alert_thresholds import configured_thresholds

    got = {
        scope: configured_thresholds(config, scope)
        for scope in (
            "gw-key:key_1",
            "gw-key-model:key_1:gpt-4o",
            "gw-user-model:ann:gpt-4o",
            "gw-team:ml",
            "gw-team-model:ml:gpt-4o",
            "gw-org:acme",
            "gw-end-user:cust%3A1",
            "gw-global",
            "gw-deployment:d1",
        )
    }
    assert got == {
        "gw-key:key_1": (1.0,),
        "gw-key-model:key_1:gpt-4o": (1.0,),
        "gw-user-model:ann:gpt-4o": (0.6,),
        "gw-team:ml": (0.95,),
        "gw-team-model:ml:gpt-4o": (0.7,),
        "gw-org:acme": (0.8,),
        "gw-end-user:cust%3A1": (0.9,),
        "gw-global": (0.5,),
        "gw-deployment:d1": (0.5,),
    }


def test_the_gateways_key_and_team_budgets_are_swept(
    tmp_path: Path, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gateway spend, through the openai SDK, raises alerts on the key's and the team's
    budgets: they are not budget records in the store, so the sweep asks the gateway."""
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    upstream = FakeUpstream()
    with ServerThread(upstream.app()) as up, http_receiver() as slack:
        config = ServerConfig.from_mapping(
            {
                "admin_key": KEY,
                "store": f"sqlite:///{tmp_path / 'gw.db'}",
                "model_list": [deployment(up.url)],
                "teams": {"ml": {"budget": 1, "period": "daily"}},
                "alerts": {
                    "slack_webhook_url": slack.url,
                    "sweep_interval": 3600,
                    "backoff": 0.01,
                    "gateway": {"teams": {"ml": [0.00001]}},
                },
            }
        )
        app = create_app(config, clock=clock)
        with live_server(app) as url, httpx.Client(base_url=url, headers=AUTH) as http:
            # One call costs $0.000048 (8 prompt + 20 completion tokens): 60 % of this key.
            created = http.post(
                "/v1/keys",
                json={"user": "ann", "team": "ml", "budget": "0.00008", "period": "daily"},
            )
            assert created.status_code == 201, created.text
            key_id = created.json()["id"]
            sdk = openai.OpenAI(api_key=created.json()["key"], base_url=f"{url}/v1", max_retries=0)
            sdk.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]
            # The settle (and its spend-log entry, in the same store operation) may land
            # just after the reply: wait for the entry.
            assert _eventually(lambda: len(http.get("/v1/spend/logs").json()["data"]) == 1)
            manager: AlertManager = app.state.llmbudget.alerts
            assert asyncio.run(manager.asweep()) == 2
            assert asyncio.run(manager.asweep()) == 0  # fired once
            posts = slack.wait_posts(2)
            texts = sorted(json.loads(p.body)["text"] for p in posts)
            assert texts == [
                f"Budget alert: key {key_id}: 50% of its budget used ($0.000048 of $0.00008)",
                "Budget alert: team ml: 0.001% of its budget used ($0.000048 of $1.00)",
            ]


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alerts", "message"),
    [
        (
            {"slack_webhok_url": "https://x"},
            "alerts.slack_webhok_url: unknown key; did you mean 'slack_webhook_url'?",
        ),
        ({"slack_webhook_url": "hooks.slack.com/x"}, "alerts.slack_webhook_url"),
        ({"gateway": {"tems": {}}}, "alerts.gateway.tems: unknown key; did you mean 'teams'?"),
        ({"gateway": {"teams": {"ml": [0]}}}, "alerts.gateway.teams.ml"),
        ({"projects": {"app": "0.5"}}, "alerts.projects.app"),
        (
            {"email": {"host": "h", "from": "a@b.c", "to": ["d@e.f"], "secuirty": "ssl"}},
            "alerts.email.secuirty: unknown key; did you mean 'security'?",
        ),
        (
            {"email": {"host": "h", "from": "a@b.c", "to": ["d@e.f"], "security": "tls"}},
            "alerts.email.security",
        ),
        ({"email": {"host": "h", "from": "a@b.c", "to": []}}, "alerts.email.to"),
        (
            {"email": {"host": "h", "from": "a@b.c", "to": ["x\r\nBcc: e@f.g"]}},
            "alerts.email.to[0]",
        ),
        ({"email": {"host": "h", "to": ["d@e.f"]}}, "alerts.email.sender"),
        (
            {"email": {"host": "h", "from": "a@b.c", "to": ["d@e.f"], "port": 0}},
            "alerts.email.port",
        ),
        ({"webhook_secret": "os.environ/LLMB_ALERT_SECRET_UNSET"}, "alerts.webhook_secret"),
        ({"retries": 100}, "alerts.retries"),
    ],
)
def test_alert_config_typos_are_errors_naming_the_path(
    alerts: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError) as refused:
        ServerConfig.from_mapping({"alerts": alerts})
    assert message in str(refused.value)


def test_alert_config_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmbudget.server import load_config

    monkeypatch.setenv("LLMB_ALERT_SECRET", "from-env")
    monkeypatch.setenv("LLMB_SMTP_PASSWORD", "smtp-env")
    path = tmp_path / "server.toml"
    path.write_text(
        """
[alerts]
webhook_url = "https://hooks.example.com/budget"
webhook_secret = "os.environ/LLMB_ALERT_SECRET"
slack_webhook_url = "https://hooks.slack.com/services/T0/B0/XYZ"
thresholds = [0.5, 1.0]
projects = { "support-bot" = [0.8] }

[alerts.gateway]
teams = { ml = [0.9] }

[alerts.email]
host = "smtp.example.com"
security = "ssl"
username = "alerts"
password = "os.environ/LLMB_SMTP_PASSWORD"
from = "budget@example.com"
to = ["ops@example.com"]
"""
    )
    alerts = load_config(path).alerts
    assert alerts.webhook_secret == "from-env"
    assert alerts.projects == {"support-bot": (0.8,)}
    assert alerts.gateway.teams == {"ml": (0.9,)}
    assert alerts.email is not None
    assert (alerts.email.port, alerts.email.password, alerts.email.to) == (
        465,
        "smtp-env",
        ("ops@example.com",),
    )


def test_the_alert_modules_examples_hold() -> None:
    import doctest
    import importlib

    for name in (
        "llmbudget.signatures",
        "llmbudget.server.alert_event",
        "llmbudget.server.alert_delivery",
        "llmbudget.server.alert_slack",
        "llmbudget.server.alert_email",
        "llmbudget.server.alert_webhook",
        "llmbudget.server.alert_thresholds",
        "llmbudget.server.alerts",
    ):
        result = doctest.testmod(importlib.import_module(name))
        assert result.failed == 0 and result.attempted > 0, name


def test_a_team_created_by_the_admin_api_is_swept(
    tmp_path: Path, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMBUDGET_ADMIN_KEY", raising=False)
    upstream = FakeUpstream()
    with ServerThread(upstream.app()) as up, http_receiver() as slack:
        config = ServerConfig.from_mapping(
            {
                "admin_key": KEY,
                "store": f"sqlite:///{tmp_path / 'gw.db'}",
                "model_list": [deployment(up.url)],
                "alerts": {"slack_webhook_url": slack.url, "sweep_interval": 3600},
            }
        )
        app = create_app(config, clock=clock)
        with live_server(app) as url, httpx.Client(base_url=url, headers=AUTH) as http:
            team = http.post(
                "/v1/teams", json={"id": "research", "budget": "0.00008", "period": "daily"}
            )
            assert team.status_code == 201, team.text
            created = http.post("/v1/keys", json={"user": "ann", "team": "research"})
            assert created.status_code == 201, created.text
            sdk = openai.OpenAI(api_key=created.json()["key"], base_url=f"{url}/v1", max_retries=0)
            sdk.chat.completions.create(model="m", messages=HI, max_tokens=20)  # type: ignore[arg-type]
            assert _eventually(lambda: len(http.get("/v1/spend/logs").json()["data"]) == 1)
            manager: AlertManager = app.state.llmbudget.alerts
            assert asyncio.run(manager.asweep()) == 1  # 60 % of the team's budget: 50 % fires
            posts = slack.wait_posts(1)
            assert json.loads(posts[0].body)["text"] == (
                "Budget alert: team research: 50% of its budget used ($0.000048 of $0.00008)"
            )
