"""Fuzz every operation of the OpenAPI document with schemathesis: never a 5xx.

In-process (ASGI transport), positive and negative examples, a bounded number per
operation so the whole run stays well under a minute. The store is seeded with a project
and a user so that generated requests reach real budgets, not only 404s.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from llmbudget.budgets import Budget  # noqa: E402
from llmbudget.clock import FrozenClock  # noqa: E402
from llmbudget.ledger import Ledger  # noqa: E402
from llmbudget.server import ServerConfig, create_app  # noqa: E402
from llmbudget.stores.memory import MemoryStore  # noqa: E402

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
EXAMPLES = 30

_store = MemoryStore()
_clock = FrozenClock(1_773_576_000.0)
_seed = Ledger(_store, clock=_clock)
for _user in ("ann", "a", "0"):
    for _project in ("app", "a", "0"):
        _seed.define(Budget.of(f"user:{_project}:{_user}", "5", "daily"))
app = create_app(ServerConfig(admin_key=KEY), store=_store, clock=_clock)

schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES
)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call(headers=AUTH)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    if response.status_code >= 400:
        body = response.json()
        assert "error" in body and body["error"]["message"], body
