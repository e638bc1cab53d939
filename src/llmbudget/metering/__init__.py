"""The metering core: one implementation of every rule about what a call may cost.

::

            gateway routes        completion()        SDK patch         BudgetManager
     (chat, responses, messages,  (any provider)   (openai, anthropic)  (projected_cost,
      completions, embeddings)          │           inside budget()      reserve)
                 │                      │                  │                 │
                 └──────────────┬───────┴──────────┬───────┘                 │
                                ▼                  ▼                         ▼
          calls.describe(api, body) ──► BillableCall ──► policy.worst_case / default_cap
                                                              │
          Meter.plan_open ─── reservations.plan_reserve ──────┘   (lower the cap on refusal)
                │                                                  forwarding.forward(body)
                ▼
          send ──► watch.BodyWatcher / Tracker ──► usage.charge ──► Meter.plan_close
                └─ error ──► billing.nothing_billed ──► Meter.plan_fail (release or charge)

* :mod:`~llmbudget.metering.calls`: a typed description of a billable request, per API.
* :mod:`~llmbudget.metering.policy`: worst case (in dollars and in tokens) and the output cap.
* :mod:`~llmbudget.metering.forwarding`: the body sent, so the upstream cannot exceed it.
* :mod:`~llmbudget.metering.watch`: usage, text and finish, from events or bytes.
* :mod:`~llmbudget.metering.usage`: usage → cost, and the fallbacks when it is missing.
* :mod:`~llmbudget.metering.billing`: "may it have been billed?".
* :mod:`~llmbudget.metering.meter`: the plans that tie them together.

>>> from llmbudget.ledger import Ledger
>>> from llmbudget.budgets import Budget
>>> from llmbudget.plans import run_sync
>>> from llmbudget.pricing import PriceBook
>>> from llmbudget.reservations import ScopeGroup
>>> call = describe("chat", {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]})
>>> group = ScopeGroup(Ledger("memory://").plans, (Budget.of("user:a", "0.01"),))
>>> meter = Meter(call, PriceBook.default().lookup("gpt-4o"), [group])
>>> run_sync(meter.plan_open()); meter.cap
998
"""

from llmbudget.metering.billing import billed_answer, mark_not_sent, not_sent, nothing_billed
from llmbudget.metering.calls import API_CAP_FIELDS, Api, BillableCall, describe
from llmbudget.metering.forwarding import forward, needs_usage_request
from llmbudget.metering.meter import Meter
from llmbudget.metering.policy import (
    DEFAULT_OUTPUT_CAP,
    MIN_OUTPUT_TOKENS,
    affordable_cap,
    affordable_tokens_cap,
    default_cap,
    worst_case,
    worst_case_tokens,
)
from llmbudget.metering.usage import Charged, charge
from llmbudget.metering.watch import BodyWatcher, Tracker

__all__ = [
    "API_CAP_FIELDS",
    "DEFAULT_OUTPUT_CAP",
    "MIN_OUTPUT_TOKENS",
    "Api",
    "BillableCall",
    "BodyWatcher",
    "Charged",
    "Meter",
    "Tracker",
    "affordable_cap",
    "affordable_tokens_cap",
    "billed_answer",
    "charge",
    "default_cap",
    "describe",
    "forward",
    "mark_not_sent",
    "needs_usage_request",
    "not_sent",
    "nothing_billed",
    "worst_case",
    "worst_case_tokens",
]
