"""One budgeted call from reservation to settlement, written once as plans.

::

    meter = Meter(call, price, groups)          # what is sent, at what prices, within what
    yield from meter.plan_open()                # reserve the worst case; meter.cap to forward
    ... send the request with meter.cap ...
    yield from meter.plan_close(usage, text=..., finished=...)   # settle what it cost
    # or, if sending failed:
    yield from meter.plan_fail(error)           # released if nothing was billed, else charged

The worst case and the cap follow :mod:`llmbudget.metering.policy`, the charge
:mod:`llmbudget.metering.usage`, the release-or-charge verdict
:mod:`llmbudget.metering.billing`, and the holds span every store of ``groups``
(:mod:`llmbudget.reservations`). The gateway, :func:`llmbudget.completion`, the SDK
patch and the BudgetManager run these same plans.

Rate limits among the budgets (:mod:`llmbudget.units`) are held in the same reserve: one
request, the worst case in tokens, one slot; settled with one request, the real tokens
(by the rules of the charge) and no slot. A refusal by a budget in tokens lowers the cap
like one in dollars; a refusal in requests or slots cannot be squeezed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from decimal import Decimal

from llmbudget.errors import BudgetExceededError, UnknownModelError
from llmbudget.ledger import LogRecord
from llmbudget.metering.billing import nothing_billed
from llmbudget.metering.calls import BillableCall
from llmbudget.metering.policy import (
    MIN_OUTPUT_TOKENS,
    affordable_cap,
    affordable_tokens_cap,
    default_cap,
    worst_case,
    worst_case_tokens,
)
from llmbudget.metering.usage import Charged, charge
from llmbudget.plans import Io, Plan
from llmbudget.pricing import ModelPrice, TokenUsage
from llmbudget.reservations import MultiHold, ScopeGroup, plan_release, plan_reserve, plan_settle
from llmbudget.units import Unit

__all__ = ["Meter"]

log = logging.getLogger(__name__)

# Concurrent calls can take the room a lowered cap was computed for: try this many times.
_ATTEMPTS = 8
_warned_unpriced: set[str] = set()


class Meter:
    """One call's reservation and settlement.

    ``price`` ``None`` means the model has no known price: it costs nothing when ``free``
    (a local server's model), is refused when a budget limits it (``unknown`` is raised),
    and is otherwise sent uncharged with a warning. ``configured_cap`` is the deployment's
    own output limit; ``squeeze(scope)`` says whether a refusal by ``scope`` may lower the
    cap (the gateway skips an exhausted deployment instead). ``entry(meter, status)``
    builds the log entry appended with the settle (the gateway's spend log).
    ``on_settled`` observers are called once the call is charged.

    A ``call`` whose prompt is only bounded (``prompt_bound``: counted as bytes, without
    loading a tokenizer) is reserved with that bound while it decides nothing. It is
    counted exactly with ``recount()`` the moment it would: when it would lower the output
    cap against the context window, when a budget refuses the reservation, and when the
    charge has no usage to go by.
    """

    def __init__(
        self,
        call: BillableCall,
        price: ModelPrice | None,
        groups: Sequence[ScopeGroup],
        *,
        label: str | None = None,
        free: bool = False,
        unknown: UnknownModelError | None = None,
        configured_cap: int | None = None,
        min_output_tokens: int = MIN_OUTPUT_TOKENS,
        squeeze: Callable[[str], bool] | None = None,
        ttl: float | None = None,
        entry: Callable[[Meter, str], LogRecord] | None = None,
        on_settled: Sequence[Callable[[Meter], None]] = (),
        recount: Callable[[], BillableCall] | None = None,
    ) -> None:
        self.call = call
        self.recount = recount
        self.price = price
        self.groups = list(groups)
        self.label = label or call.model
        self.free = free
        self.unknown = unknown
        self.configured_cap = configured_cap
        self.min_output_tokens = min_output_tokens
        self.squeeze = squeeze
        self.ttl = ttl
        self.entry = entry
        self.on_settled = list(on_settled)
        self.hold: MultiHold | None = None
        #: The output cap to forward (``None``: leave the request as it is).
        self.cap: int | None = None
        self.reserved = Decimal(0)
        #: The worst case in tokens held on budgets in tokens (and settled when the real
        #: tokens are unknown).
        self.reserved_tokens = 0
        #: What was charged, once settled (``None`` for an unpriced model).
        self.cost: Decimal | None = None
        self.charged: Charged | None = None
        #: The usage block the provider reported, as read (``None`` if it sent none).
        self.usage: object = None
        self.status = "open"
        self._done = False
        self._lock = threading.Lock()

    # -- state ---------------------------------------------------------------------------

    @property
    def priced(self) -> bool:
        return self.price is not None or self.free

    @property
    def limited(self) -> bool:
        return any(group.limited for group in self.groups)

    def limited_in(self, unit: Unit) -> bool:
        """Whether a budget in ``unit`` limits this call (``"usd"``, ``"tokens"``...)."""
        return any(
            b.limit is not None and b.unit == unit for group in self.groups for b in group.budgets
        )

    @property
    def tokens(self) -> TokenUsage | None:
        return self.charged.tokens if self.charged else None

    @property
    def estimated(self) -> bool:
        return self.charged.estimated if self.charged else False

    @property
    def done(self) -> bool:
        return self._done

    def worst(self, cap: int) -> Decimal:
        return worst_case(self.price, self.call, cap) if self.price else Decimal(0)

    def counts(self, cap: int) -> dict[str, int]:
        """What the call takes of each counted unit with output ``cap``: one request, its
        worst case in tokens, one slot."""
        tokens = worst_case_tokens(self.price, self.call, cap)
        return {"requests": 1, "tokens": tokens, "concurrent": 1}

    def used(self, charged: Charged) -> dict[str, int]:
        """What the call used of each counted unit (slots are freed by the ledger)."""
        return {"requests": 1, "tokens": charged.token_count(self.reserved_tokens)}

    # -- plans ---------------------------------------------------------------------------

    def plan_open(self) -> Plan[None]:
        """Reserve the worst case on every group, or raise; sets :attr:`cap`."""
        call = self.call
        money_limited = self.limited_in("usd")
        if not self.priced:
            if money_limited and self.unknown is not None:
                raise self.unknown  # a limit applies and the cost cannot be bounded
            if self.label not in _warned_unpriced:
                _warned_unpriced.add(self.label)
                log.warning(
                    "llmbudget: no price for %r; its calls are not charged "
                    "(register a price with PriceBook.register)",
                    self.label,
                )
        explicit = call.requested_cap is not None
        cap = call.requested_cap or self._cap()
        if call.prompt_bound and not explicit and cap != self._cap(unbounded=True):
            # The bound, not the prompt, may be what shortens the cap: count it.
            cap = self._cap() if (yield from self.plan_exact()) else cap
        # Rules 2 and 3 of the policy: a cap is forwarded when something limits the call
        # and output costs money, or tokens are limited (or the API demands a cap);
        # tracking alone, or free output, changes nothing in the request.
        costly = self.price is not None and self.worst(1) > self.worst(0)
        bounded = (money_limited and costly) or self.limited_in("tokens")
        send = call.has_output and (explicit or call.requires_cap or bounded)
        attempt = 0
        while True:
            output = cap if call.has_output else 0
            counts = self.counts(output)
            try:
                self.hold = yield from plan_reserve(
                    self.groups, self.worst(output), ttl=self.ttl, counts=counts
                )
            except BudgetExceededError as exc:
                if (yield from self.plan_exact()):
                    # Refused on the bound: try again with the prompt's real size.
                    cap = call.requested_cap or self._cap()
                    continue
                lowered = self._lowered(exc, cap) if not explicit and send else None
                attempt += 1
                if lowered is None or attempt == _ATTEMPTS:
                    raise
                cap = lowered
                continue
            self.cap = cap if send else None
            self.reserved = self.hold.amount
            self.reserved_tokens = counts["tokens"]
            return

    def _cap(self, *, unbounded: bool = False) -> int:
        """The default output cap; ``unbounded``: as if the prompt took no room."""
        call = replace(self.call, prompt_tokens=0) if unbounded else self.call
        return default_cap(self.price, call, self.configured_cap)

    def plan_exact(self) -> Plan[bool]:
        """Replace a bounded prompt with its exact count (under asyncio in a worker thread:
        the first count may load a vocabulary); ``False`` if there is nothing to recount
        (already exact, or no ``recount``). A door runs it before :meth:`assess` when the
        response brought no usage."""
        if not self.call.prompt_bound or self.recount is None:
            return False
        self.call = yield Io(self.recount)
        return True

    def _count_exactly(self) -> None:
        if self.call.prompt_bound and self.recount is not None:
            self.call = self.recount()

    def _lowered(self, refusal: BudgetExceededError, cap: int) -> int | None:
        """The cap the refusing budget can still pay (in dollars or tokens), or ``None``
        to refuse the call: a request or a slot cannot be made smaller."""
        if self.squeeze is not None and not self.squeeze(refusal.scope):
            return None
        if refusal.unit == "usd" and self.price is not None:
            fits = affordable_cap(self.price, self.call, refusal.remaining)
        elif refusal.unit == "tokens":
            fits = affordable_tokens_cap(self.price, self.call, int(refusal.remaining))
        else:
            return None
        if fits < min(self.min_output_tokens, cap) or fits >= cap:
            return None
        return fits

    def _claim(self) -> bool:
        with self._lock:
            if self._done:
                return False
            self._done = True
            return True

    def assess(
        self,
        usage: object = None,
        *,
        text: str | None = None,
        finished: bool = False,
        status: str = "ok",
    ) -> Charged | None:
        """Decide what the call is charged (see :func:`~llmbudget.metering.usage.charge`),
        without recording it yet; ``None`` if it was already decided. A door that answers
        its client first (the gateway) records it after, with :meth:`plan_record`."""
        if not self._claim():
            return None
        self.usage = usage
        if usage is None:
            self._count_exactly()  # what was sent may have to be counted now
        charged = charge(
            self.price if self.priced else None,
            self.call,
            usage=usage,
            text=text,
            finished=finished,
            reserved=self.reserved,
        )
        if not self.priced:
            charged = Charged(Decimal(0), charged.tokens, charged.source)
        self.charged, self.status = charged, status
        return charged

    def plan_record(self) -> Plan[Decimal | None]:
        """Settle the charge :meth:`assess` decided (with the log entry, if any)."""
        charged = self.charged
        assert charged is not None, "assess() first"
        if self.hold is not None:
            record = self.entry(self, self.status) if self.entry else None
            yield from plan_settle(self.hold, charged.cost, self.label, record, self.used(charged))
        self.cost = charged.cost if self.priced else None
        for observer in self.on_settled:
            observer(self)
        return self.cost

    def plan_close(
        self,
        usage: object = None,
        *,
        text: str | None = None,
        finished: bool = False,
        status: str = "ok",
    ) -> Plan[Decimal | None]:
        """Charge the call: :meth:`assess`, then :meth:`plan_record`. Idempotent: a second
        close returns the first cost."""
        if self.assess(usage, text=text, finished=finished, status=status) is None:
            return self.cost
        return (yield from self.plan_record())

    def plan_release(self, status: str = "released") -> Plan[None]:
        """The call was not processed (nothing billed): release, charge nothing."""
        if not self._claim():
            return
        self.cost = Decimal(0)
        self.charged, self.status = Charged(Decimal(0), None, "upstream"), status
        if self.hold is not None:
            yield from plan_release(self.hold)

    def plan_fail(self, error: BaseException, status: str = "failed") -> Plan[None]:
        """Sending raised ``error``: released when it proves nothing was billed, else the
        whole reservation is charged (see :mod:`llmbudget.metering.billing`)."""
        if nothing_billed(error):
            yield from self.plan_release(status)
        else:
            yield from self.plan_close(None, status=status)
