"""Budgets around code that calls LLM SDKs: ``with llmbudget.budget(max_usd=5): ...``.

::

    import openai, llmbudget

    client = openai.OpenAI()
    with llmbudget.budget(max_usd=5, name="agent", warn_at=0.8) as b:
        client.chat.completions.create(model="gpt-4o", messages=[...])   # reserved, then settled
        run_my_agent()                                                   # every call inside too
    print(b.spent, b.summary())

Every billable request the ``openai`` and ``anthropic`` SDKs send inside the block is
metered by :mod:`llmbudget.sdk_patch`: reserved on every enclosing block before it is
sent (a refusal raises :class:`~llmbudget.errors.BudgetExceededError` and nothing is
sent), charged its real cost after. Blocks nest: a call is charged to every enclosing
block, so an inner block can never spend past its parent. Blocks are tracked in a
:mod:`contextvars` variable: concurrent asyncio tasks each see their own blocks, and a
thread started inside a block does *not* inherit it (run it with
``contextvars.copy_context().run`` to share the block).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llmbudget.anchors import anchor
from llmbudget.budgets import Budget, BudgetStatus, scope_key
from llmbudget.clock import Clock
from llmbudget.errors import InvalidInputError
from llmbudget.ledger import Ledger
from llmbudget.money import MoneyLike, to_money
from llmbudget.pricing import PriceBook, TokenUsage
from llmbudget.reservations import ScopeGroup
from llmbudget.stores import Store, open_store
from llmbudget.stores.memory import MemoryStore

if TYPE_CHECKING:
    from llmbudget.metering import Meter

__all__ = ["BudgetBlock", "ModelSpend", "active_blocks", "budget", "bypass", "bypassed"]

logger = logging.getLogger(__name__)

_blocks: contextvars.ContextVar[tuple[BudgetBlock, ...]] = contextvars.ContextVar(
    "llmbudget_blocks", default=()
)
_bypass: contextvars.ContextVar[bool] = contextvars.ContextVar("llmbudget_bypass", default=False)
# Blocks without a store of their own share one in-memory ledger, so the nested scopes of
# a call are reserved in one atomic operation.
_memory_ledger = Ledger(MemoryStore())


def active_blocks() -> tuple[BudgetBlock, ...]:
    """The ``budget()`` blocks enclosing the caller, outermost first."""
    return _blocks.get()


def bypassed() -> bool:
    """Whether the caller is inside :class:`bypass`."""
    return _bypass.get()


class bypass:  # noqa: N801 - used like a function: ``with bypass(): ...``
    """Let SDK calls through the patches unbudgeted, for code that budgets them itself
    (the gateway's own upstream calls, a test harness)."""

    def __enter__(self) -> None:
        self._token = _bypass.set(True)

    def __exit__(self, *exc: object) -> None:
        _bypass.reset(self._token)


@dataclass(slots=True)
class ModelSpend:
    """What one model cost inside a block."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    estimated_calls: int = 0


class BudgetBlock:
    """A spending limit for a block of code; see :func:`budget`."""

    def __init__(
        self,
        max_usd: MoneyLike | None,
        *,
        name: str = "budget",
        warn_at: float | None = None,
        warn_at_usd: MoneyLike | None = None,
        on_warn: Callable[[BudgetBlock], None] | None = None,
        store: Store | str | None = None,
        duration: str | None = None,
        prices: PriceBook | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidInputError("name must be a non-empty string")
        self.name = name
        timing: dict[str, Any] = {} if clock is None else {"clock": clock}
        if store is None:
            self.ledger = _memory_ledger if clock is None else Ledger(MemoryStore(), **timing)
            # A private scope: two blocks named alike must not share spend in memory.
            scope = scope_key("block", name, uuid.uuid4().hex)
        else:
            self.ledger = Ledger(store if isinstance(store, Store) else open_store(store), **timing)
            # A named, persistent budget: the same name continues the same spend.
            scope = scope_key("block", name)
        self.budget = Budget.of(scope, max_usd, duration, created_at=self.ledger.clock())
        if store is not None:
            # The same name continues the same windows too: multi-unit periods ("2d")
            # count from the first definition's created_at, not from this run's start.
            self.budget = anchor(self.ledger, self.budget)
        self.prices = prices
        self._thresholds: list[Decimal] = []
        if warn_at is not None:
            if self.budget.limit is None:
                raise InvalidInputError("warn_at is a fraction of max_usd; give max_usd")
            if isinstance(warn_at, bool) or not 0 < warn_at <= 1:
                raise InvalidInputError(f"warn_at must be a fraction in (0, 1], got {warn_at!r}")
            self._thresholds.append(self.budget.limit * to_money(warn_at, what="warn_at"))
        if warn_at_usd is not None:
            self._thresholds.append(to_money(warn_at_usd, what="warn_at_usd"))
        self._on_warn = on_warn
        self._warned = False
        self._lock = threading.Lock()
        self._models: dict[str, ModelSpend] = {}

    # -- context management ------------------------------------------------------------

    def __enter__(self) -> BudgetBlock:
        from llmbudget.sdk_patch import patches

        _blocks.set((*_blocks.get(), self))
        patches.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Remove this block from the *current* context's stack rather than resetting a
        # token: one block object may be entered from several threads or tasks at once.
        stack = _blocks.get()
        found = [i for i, block in enumerate(stack) if block is self]
        if found:
            _blocks.set(stack[: found[-1]] + stack[found[-1] + 1 :])
        from llmbudget.sdk_patch import patches

        patches.release()

    async def __aenter__(self) -> BudgetBlock:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- state -------------------------------------------------------------------------

    @property
    def group(self) -> ScopeGroup:
        return ScopeGroup(self.ledger.plans, (self.budget,))

    @property
    def limit(self) -> Decimal | None:
        """``max_usd`` as a ``Decimal`` (``None``: no limit, spend is only tracked)."""
        return self.budget.limit

    def status(self) -> BudgetStatus:
        return self.ledger.status(self.budget)

    @property
    def spent(self) -> Decimal:
        """Dollars charged so far (in the current window for a block with a duration)."""
        return self.status().spent

    @property
    def held(self) -> Decimal:
        """Dollars reserved by calls in flight."""
        return self.status().held

    @property
    def remaining(self) -> Decimal | None:
        """What can still be reserved, or ``None`` without a limit."""
        return self.status().remaining

    def summary(self) -> dict[str, Any]:
        """Calls, tokens and cost per model, and the totals.

        >>> with budget(max_usd=1) as b:
        ...     pass
        >>> b.summary()["calls"]
        0
        """
        with self._lock:
            models = {
                model: {
                    "calls": m.calls,
                    "input_tokens": m.input_tokens,
                    "output_tokens": m.output_tokens,
                    "cost": m.cost,
                    "estimated_calls": m.estimated_calls,
                }
                for model, m in sorted(self._models.items())
            }
        status = self.status()
        return {
            "name": self.name,
            "limit": self.limit,
            "spent": status.spent,
            "held": status.held,
            "remaining": status.remaining,
            "calls": sum(m["calls"] for m in models.values()),
            "input_tokens": sum(m["input_tokens"] for m in models.values()),
            "output_tokens": sum(m["output_tokens"] for m in models.values()),
            "models": models,
        }

    def record(self, meter: Meter) -> None:
        """Count a settled call in :meth:`summary` (the SDK patch calls this)."""
        self._record(meter.label, meter.tokens, meter.cost or Decimal(0), meter.estimated)

    def _record(
        self, model: str, tokens: TokenUsage | None, cost: Decimal, estimated: bool
    ) -> None:
        with self._lock:
            spend = self._models.setdefault(model, ModelSpend())
            spend.calls += 1
            if tokens is not None:
                spend.input_tokens += tokens.input_tokens
                spend.output_tokens += tokens.output_tokens
            spend.cost += cost
            spend.estimated_calls += int(estimated)
        self._check_warning()

    def _check_warning(self) -> None:
        if self._warned or not self._thresholds:
            return
        spent = self.spent
        with self._lock:
            if self._warned or spent < min(self._thresholds):
                return
            self._warned = True  # once per block, even if several calls cross together
        if self._on_warn is not None:
            self._on_warn(self)
        else:
            logger.warning(
                "llmbudget: budget %r has spent $%s of $%s", self.name, spent, self.limit
            )

    def __repr__(self) -> str:
        return f"<BudgetBlock {self.name!r} limit={self.limit}>"


def budget(
    max_usd: MoneyLike | None = None,
    *,
    name: str = "budget",
    warn_at: float | None = None,
    warn_at_usd: MoneyLike | None = None,
    on_warn: Callable[[BudgetBlock], None] | None = None,
    store: Store | str | None = None,
    duration: str | None = None,
    prices: PriceBook | None = None,
    clock: Clock | None = None,
) -> BudgetBlock:
    """A spending limit of ``max_usd`` dollars for the ``with`` (or ``async with``) block.

    Every ``openai``/``anthropic`` SDK call and every :func:`llmbudget.completion` inside
    is reserved before it is sent and charged its real cost after (see the module doc).

    ``warn_at``: a fraction of ``max_usd`` (``0.8``); ``warn_at_usd``: dollars. When spend
    first reaches either, ``on_warn(block)`` is called once (default: a logged warning).
    ``store``/``duration``: keep the spend in a store under ``name`` (persisting across
    runs, reset each ``duration``) instead of in memory for this block only. The windows
    of a multi-unit ``duration`` (``"2d"``) count from the name's first definition in
    that store, so later runs continue the same windows.
    ``prices``: a :class:`~llmbudget.pricing.PriceBook` for models the default book lacks
    (e.g. Azure deployment names). ``clock``: the time source (tests pass a
    :class:`~llmbudget.clock.FrozenClock`).

    >>> with budget(max_usd=5, name="agent", warn_at=0.8) as b:
    ...     pass  # client.chat.completions.create(...) here is budgeted
    >>> b.spent
    Decimal('0')
    """
    return BudgetBlock(
        max_usd,
        name=name,
        warn_at=warn_at,
        warn_at_usd=warn_at_usd,
        on_warn=on_warn,
        store=store,
        duration=duration,
        prices=prices,
        clock=clock,
    )
