"""Budgets around code that calls the ``openai`` and ``anthropic`` SDKs directly.

::

    import openai, llmbudget

    client = openai.OpenAI()
    with llmbudget.budget(max_usd=5, name="agent", warn_at=0.8) as b:
        client.chat.completions.create(model="gpt-4o", messages=[...])   # reserved, then settled
        run_my_agent()                                                   # every call inside too
    print(b.spent, b.summary())

Inside the block every request the SDKs send to Chat Completions, Responses, Completions,
Embeddings (``openai``) or Messages (``anthropic``) — sync or async, streamed or not,
through ``create``, ``stream``, ``parse`` or ``with_raw_response`` — is budgeted:

1. its worst-case cost (prompt tokens counted offline, plus ``max_tokens`` output tokens)
   is reserved on every enclosing block first; a refusal raises
   :class:`~llmbudget.errors.BudgetExceededError` and **nothing is sent**;
2. when the request sets no output limit, one is added so the call cannot cost more than
   the budget has left (see *The output cap* in ``docs/completion.md``);
3. once the response (or the stream's last event) arrives, the real usage is charged and
   the rest of the reservation freed; a request that fails is charged nothing if the
   failure proves it was not processed (HTTP error answer, no connection), else its
   whole reservation (a timeout may have been billed). The SDK's retries are made by
   llmbudget, one reservation per attempt (see :func:`retry_delay`).

Blocks nest: a call is charged to every enclosing block, so an inner block can never
spend past its parent. Blocks are tracked in a :mod:`contextvars` variable: concurrent
asyncio tasks each see their own blocks, and a thread started inside a block does *not*
inherit it (run it with ``contextvars.copy_context().run`` to share the block).

The SDKs are patched at their client's ``request`` method while at least one block is
open anywhere in the process, and restored when the last one closes. Calls made outside
any block pass straight through.

This module also holds the metering engine (:class:`Meter`) that
:func:`llmbudget.completion` uses for its own calls.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import random
import threading
import uuid
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from llmbudget.budgets import Budget, BudgetStatus, scope_key
from llmbudget.clock import Clock
from llmbudget.errors import BudgetExceededError, InvalidInputError, PricingError, UnknownModelError
from llmbudget.global_budget import (
    MultiHold,
    ScopeGroup,
    anchor,
    exceeded,
    plan_release,
    plan_reserve,
    plan_settle,
    plan_tightest,
)
from llmbudget.ledger import Ledger
from llmbudget.money import MoneyLike, to_money
from llmbudget.plans import Plan, run_async, run_sync
from llmbudget.pricing import DEFAULT_MAX_OUTPUT_TOKENS, ModelPrice, PriceBook, TokenUsage
from llmbudget.pricing import normalize_usage as _normalize_usage
from llmbudget.responses import StreamTracker
from llmbudget.retrying import Retrying
from llmbudget.stores import Store, open_store
from llmbudget.stores.memory import MemoryStore

__all__ = [
    "SAFE_OUTPUT_CAP",
    "BudgetBlock",
    "Meter",
    "ModelSpend",
    "active_blocks",
    "budget",
    "bypass",
    "mark_not_sent",
    "nothing_billed",
    "retry_delay",
]

logger = logging.getLogger(__name__)

#: Output cap sent when a budget applies, the caller set none, and the model's maximum
#: output is not known: small enough that every chat model accepts it.
SAFE_OUTPUT_CAP = 4096
# Concurrent calls can take the room a cap was computed for; recompute this many times.
_ATTEMPTS = 8

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


class bypass:  # noqa: N801 - used like a function: ``with bypass(): ...``
    """Let SDK calls through the patches unbudgeted (for code that budgets them itself,
    such as :func:`llmbudget.completion`)."""

    def __enter__(self) -> None:
        self._token = _bypass.set(True)

    def __exit__(self, *exc: object) -> None:
        _bypass.reset(self._token)


# --------------------------------------------------------------------------- blocks


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
        _blocks.set((*_blocks.get(), self))
        _patches.acquire()
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
        _patches.release()

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
        return ScopeGroup(self.ledger, (self.budget,))

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


# --------------------------------------------------------------------------- the meter


_warned_unpriced: set[str] = set()


@dataclass(eq=False)
class Meter:
    """One budgeted call: reserve its worst case, then settle its real cost.

    ``prompt_tokens`` are counted before the call; ``requested_max`` is the caller's own
    output limit (``None``: not given); ``require_cap`` is true when the request must
    carry an output limit (Anthropic). After :meth:`plan_open`, ``cap`` is the output
    limit to send (``None``: leave the request as it is).
    """

    label: str
    price: ModelPrice | None
    prompt_tokens: int
    groups: list[ScopeGroup]
    blocks: tuple[BudgetBlock, ...] = ()
    n: int = 1
    requested_max: int | None = None
    require_cap: bool = False
    free: bool = False
    cache_writes: bool = False
    unknown: UnknownModelError | None = None
    hold: MultiHold | None = None
    cap: int | None = None
    reserved: Decimal = Decimal(0)
    cost: Decimal | None = None
    tokens: TokenUsage | None = None
    estimated: bool = False
    _done: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(
        cls,
        label: str,
        pricing_model: str,
        prompt_tokens: int,
        groups: Sequence[ScopeGroup],
        *,
        blocks: tuple[BudgetBlock, ...] = (),
        prices: PriceBook | None = None,
        free_if_unknown: bool = False,
        n: int = 1,
        requested_max: int | None = None,
        require_cap: bool = False,
        cache_writes: bool = False,
    ) -> Meter:
        book = prices or next((b.prices for b in reversed(blocks) if b.prices), None)
        book = book or PriceBook.default()
        price: ModelPrice | None = None
        unknown: UnknownModelError | None = None
        try:
            price = book.lookup(pricing_model)
        except UnknownModelError as exc:
            unknown = exc
        if requested_max is not None and (
            isinstance(requested_max, bool)
            or not isinstance(requested_max, int)
            or requested_max < 0
        ):
            raise InvalidInputError(f"max_tokens must be a non-negative int, got {requested_max!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInputError(f"n must be a positive int, got {n!r}")
        return cls(
            label=label,
            price=price,
            prompt_tokens=prompt_tokens,
            groups=[*groups, *(b.group for b in blocks)],
            blocks=blocks,
            n=n,
            requested_max=requested_max,
            require_cap=require_cap,
            free=price is None and free_if_unknown,
            cache_writes=cache_writes,
            unknown=unknown,
        )

    # -- pricing -------------------------------------------------------------------------

    @property
    def priced(self) -> bool:
        return self.price is not None or self.free

    def worst(self, output_tokens: int) -> Decimal:
        """Most a call with this prompt and ``output_tokens`` generated can cost."""
        price = self.price
        if price is None:
            return Decimal(0)
        p = self.prompt_tokens
        inputs: list[dict[str, int]] = [{"input_tokens": p}]
        if self.cache_writes:
            # Marked for caching: the prompt may be billed at the (dearer) cache-write price.
            inputs += [
                {"input_tokens": p, "cache_write_tokens": p},
                {"input_tokens": p, "cache_write_tokens": p, "cache_write_1h_tokens": p},
            ]
        outputs = [{"output_tokens": output_tokens}]
        if price.output_reasoning_per_mtok is not None:
            outputs.append({"output_tokens": output_tokens, "reasoning_tokens": output_tokens})
        best = price.cost(TokenUsage(**inputs[0], **outputs[0]))
        for inp in inputs:
            for out in outputs:
                best = max(best, price.cost(TokenUsage(**inp, **out)))
        return best

    @property
    def hard_max(self) -> int:
        """The largest output cap worth sending for this model."""
        price = self.price
        cap = (price.max_output_tokens if price else None) or SAFE_OUTPUT_CAP
        if self.require_cap:
            # Anthropic's SDK refuses a large max_tokens without streaming, and the field
            # is compulsory there: keep its default at the conventional 4096.
            cap = min(cap, SAFE_OUTPUT_CAP)
        window = price.context_window if price else None
        if window:
            cap = min(cap, max(1, window - self.prompt_tokens))
        return cap

    def _unbounded(self) -> int:
        price = self.price
        if price is None:
            return 0
        return price.max_output_tokens or price.context_window or DEFAULT_MAX_OUTPUT_TOKENS

    def _amount(self, tight: tuple[Budget, BudgetStatus] | None) -> tuple[Decimal, int | None]:
        n = self.n
        if self.requested_max is not None:
            return self.worst(n * self.requested_max), None
        if tight is None:
            cap = self.hard_max if self.require_cap else None
            return self.worst(n * (cap if cap is not None else self._unbounded())), cap
        budget_, current = tight
        room = current.remaining
        assert room is not None
        one = self.worst(n)
        if one > room:
            # Not even the prompt and one token fit: refuse before anything is sent.
            raise exceeded(budget_, current, one)
        base = self.worst(0)
        per = one - base
        if per <= 0:  # output is free: no cap needed unless the API demands one
            cap = self.hard_max if self.require_cap else None
            return one if cap is None else self.worst(n * cap), cap
        cap = min(self.hard_max, int((room - base) // per))
        while cap > 1 and self.worst(n * cap) > room:
            cap -= 1  # the cost is linear in output tokens, so this runs at most once or twice
        return self.worst(n * cap), cap

    # -- plans ---------------------------------------------------------------------------

    def plan_open(self) -> Plan[None]:
        """Reserve the worst case on every group (or raise); sets :attr:`cap`."""
        for attempt in range(_ATTEMPTS):
            tight = yield from plan_tightest(self.groups)
            if not self.priced:
                if tight is not None and self.unknown is not None:
                    raise self.unknown  # a limit applies and the cost cannot be bounded
                if self.label not in _warned_unpriced:
                    _warned_unpriced.add(self.label)
                    logger.warning(
                        "llmbudget: no price for %r; its calls are not charged "
                        "(register a price with PriceBook.register)",
                        self.label,
                    )
            amount, cap = self._amount(tight)
            try:
                self.hold = yield from plan_reserve(self.groups, amount)
            except BudgetExceededError:
                # Another call took the room this cap was computed for: compute again.
                if tight is None or self.requested_max is not None or attempt == _ATTEMPTS - 1:
                    raise
                continue
            self.cap = cap
            self.reserved = self.hold.amount
            return

    def _claim(self) -> bool:
        with self._lock:
            if self._done:
                return False
            self._done = True
            return True

    def plan_close(self, usage: object = None, *, text: str | None = None) -> Plan[Decimal | None]:
        """Charge the call: from ``usage`` when known; else from the tokens of the
        generated ``text`` (given only for a call known to have finished); else (a stream
        abandoned or broken midway) the whole reservation, since the provider may have
        billed output that was never seen. Idempotent: later calls return the first cost."""
        if not self._claim():
            return self.cost
        price = self.price
        cost: Decimal
        tokens: TokenUsage | None = None
        if usage is not None:
            try:
                tokens = _normalize_usage(usage)
                cost = price.cost(tokens) if price is not None else Decimal(0)
            except PricingError:
                logger.warning("llmbudget: unreadable usage %r; charging the reservation", usage)
                tokens, cost, self.estimated = None, self.reserved, True
        elif text is not None:
            from llmbudget.tokens import count_tokens

            tokens = TokenUsage(
                input_tokens=self.prompt_tokens, output_tokens=count_tokens(text, self.label)
            )
            cost = price.cost(tokens) if price is not None else Decimal(0)
            self.estimated = True
        else:
            cost, self.estimated = self.reserved, True
        if self.hold is not None:
            yield from plan_settle(self.hold, cost, self.label)
        self.cost = cost if self.priced else None
        self.tokens = tokens
        for block in self.blocks:
            block._record(self.label, tokens, cost, self.estimated)
        return self.cost

    def plan_abort(self) -> Plan[None]:
        """The call failed: release the reservation, charge nothing."""
        if not self._claim():
            return
        self.cost = Decimal(0)
        if self.hold is not None:
            yield from plan_release(self.hold)

    def plan_fail(self, error: BaseException) -> Plan[None]:
        """The call raised ``error``: release the reservation only when ``error`` proves
        the provider processed nothing (see :func:`nothing_billed`); otherwise (a timeout,
        a connection lost after sending, cancellation...) the provider may have billed
        the call, so its whole reservation is charged."""
        if nothing_billed(error):
            yield from self.plan_abort()
        else:
            yield from self.plan_close(None)


# --------------------------------------------------------------------------- failures and retries

# Transport errors raised before a request left the machine (httpx and httpx2 share the
# names): connection refused or never established, no pooled connection, bad URL.
_NOT_SENT = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "PoolTimeout",
        "ConnectionRefusedError",
        "UnsupportedProtocol",
        "InvalidURL",
    }
)
_SDK_ROOTS = frozenset({"OpenAIError", "AnthropicError"})


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


_NOT_SENT_MARK = "__llmbudget_not_sent__"


@contextlib.contextmanager
def mark_not_sent() -> Iterator[None]:
    """Mark errors raised inside as raised before any request was sent (so released)."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(AttributeError, TypeError):
            setattr(exc, _NOT_SENT_MARK, True)
        raise


def nothing_billed(error: BaseException) -> bool:
    """Whether ``error`` proves an LLM request was not processed, so nothing was billed.

    True for an HTTP error response (``openai.APIStatusError`` and Anthropic's: providers
    do not bill 4xx/5xx answers), a connection that was never established (connection
    refused, connect or pool timeout, caused by ``httpx.ConnectError`` /
    ``ConnectTimeout``...), and errors the SDKs raise before sending (an ``OpenAIError``
    that is not an ``APIError``: no API key, bad arguments). False for everything else —
    read timeouts (``APITimeoutError``), connections lost after sending, a response that
    could not be read, cancellation, unknown errors — since the provider may have
    processed, and billed, the request."""
    names = _names(error)
    if "APIStatusError" in names or getattr(error, _NOT_SENT_MARK, False):
        return True
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _names(current) & _NOT_SENT:
            return True
        cause = current.__cause__
        if cause is None and not current.__suppress_context__:
            cause = current.__context__
        current = cause
    return bool(names & _SDK_ROOTS) and "APIError" not in names


def _status_of(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) and not isinstance(status, bool) else None


def retry_delay(
    error: BaseException,
    retries_taken: int,
    remaining: int,
    client: Any = None,
    options: Any = None,
) -> float | None:
    """Seconds to wait before trying a failed request again, or ``None`` to give up.

    Retried as the SDKs retry: connection errors and timeouts, HTTP 408, 409, 429 and
    5xx (and whatever the server's ``x-should-retry`` header says). The pause honours
    ``Retry-After`` (through the SDK client's own rule when ``client`` is given)."""
    if remaining <= 0 or not isinstance(error, Exception):
        return None
    names = _names(error)
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if "APIStatusError" in names or ("ProviderError" in names and _status_of(error) is not None):
        should = getattr(client, "_should_retry", None)
        if callable(should) and response is not None:
            try:
                if not should(response):
                    return None
            except Exception:
                should = None
        if not callable(should) or response is None:
            status = _status_of(error) or 0
            if status not in (408, 409, 429) and status < 500:
                return None
    elif not names & {"APIConnectionError", "ProviderConnectionError"}:
        return None
    else:
        headers = None
    calculate = getattr(client, "_calculate_retry_timeout", None)
    if callable(calculate) and options is not None:
        try:
            return float(calculate(remaining, options, headers))
        except Exception:
            pass
    after: Any = None
    if headers is not None:
        try:
            after = float(headers.get("retry-after"))
        except (TypeError, ValueError):
            after = None
    if after is None:
        after = getattr(error, "retry_after", None)
    if isinstance(after, int | float) and 0 < after <= 60:
        return float(after)
    return min(0.5 * 2.0**retries_taken, 8.0) * (1 - 0.25 * random.random())


# --------------------------------------------------------------------------- SDK requests


@dataclass(eq=False)
class _Intercepted:
    meter: Meter
    body: dict[str, Any]
    cap_param: str | None
    stream: bool
    swallow_usage_chunk: bool


def _path(options: Any) -> str:
    return urlsplit(str(getattr(options, "url", "") or "")).path.rstrip("/")


def _body(options: Any) -> dict[str, Any] | None:
    data = getattr(options, "json_data", None)
    if not isinstance(data, Mapping):
        return None
    extra = getattr(options, "extra_json", None)
    return {**data, **(extra if isinstance(extra, Mapping) else {})}


def _is_openai_host(client: Any) -> bool:
    if type(client).__name__ in ("AzureOpenAI", "AsyncAzureOpenAI"):
        return True
    host = urlsplit(str(getattr(client, "base_url", ""))).hostname or ""
    return host == "api.openai.com" or host.endswith(".openai.azure.com")


def _count_chat(model: str, messages: object, tools: object) -> int:
    from llmbudget.tokens import count_message_tokens

    if not isinstance(messages, Sequence) or isinstance(messages, str):
        messages = [{"role": "user", "content": str(messages or "")}]
    return count_message_tokens(list(messages), model, tools=_tool_list(tools))


def _tool_list(tools: object) -> list[Any] | None:
    if not tools:
        return None
    out: list[Any] = []
    for tool in tools if isinstance(tools, Sequence) else [tools]:
        if isinstance(tool, Mapping) and "input_schema" in tool and "function" not in tool:
            # An Anthropic tool: count its schema as OpenAI counts function parameters.
            function = {k: v for k, v in tool.items() if k != "input_schema"}
            out.append(
                {"type": "function", "function": {**function, "parameters": tool["input_schema"]}}
            )
        else:
            out.append(tool)
    return out


def _count_texts(model: str, value: object) -> int:
    from llmbudget.tokens import count_tokens

    if isinstance(value, str):
        return count_tokens(value, model)
    if isinstance(value, Sequence):
        if value and all(isinstance(v, int) for v in value):
            return len(value)  # already token ids
        return sum(_count_texts(model, v) for v in value)
    return 0


def _intercept(sdk: str, client: Any, options: Any, stream: bool) -> _Intercepted | None:
    """The meter for an SDK request, or ``None`` if it is not a priced endpoint."""
    if str(getattr(options, "method", "")).lower() != "post":
        return None
    path = _path(options)
    body = _body(options)
    if body is None or not isinstance(body.get("model"), str):
        return None
    model: str = body["model"]
    blocks = _blocks.get()
    cap_param: str | None = None
    n = 1
    require_cap = False
    requested: Any
    if sdk == "openai" and path.endswith("/chat/completions"):
        prompt = _count_chat(model, body.get("messages"), body.get("tools"))
        # Both given: reserve for the larger; only that is sent (see _with_body).
        requested = _requested_cap(body, "max_completion_tokens", "max_tokens")
        cap_param = "max_completion_tokens" if _is_openai_host(client) else "max_tokens"
        n = int(body.get("n") or 1)
    elif sdk == "openai" and path.endswith("/responses"):
        items = body.get("input")
        messages: list[Any] = []
        if body.get("instructions"):
            messages.append({"role": "system", "content": body["instructions"]})
        if isinstance(items, str):
            messages.append({"role": "user", "content": items})
        elif isinstance(items, Sequence):
            messages.extend(items)
        prompt = _count_chat(model, messages, body.get("tools"))
        if body.get("previous_response_id") or body.get("conversation"):
            # The server adds earlier turns we cannot see: assume the whole context window.
            window = _price_of(model, blocks)
            prompt = max(prompt, window.context_window or prompt) if window else prompt
        requested = body.get("max_output_tokens")
        cap_param = "max_output_tokens"
    elif sdk == "openai" and path.endswith("/completions"):
        prompt = _count_texts(model, body.get("prompt"))
        requested = body.get("max_tokens", 16)  # the legacy endpoint's documented default
        n = int(body.get("best_of") or body.get("n") or 1)
    elif sdk == "openai" and path.endswith("/embeddings"):
        prompt = _count_texts(model, body.get("input"))
        requested = 0
    elif sdk == "anthropic" and path.endswith("/messages"):
        messages = []
        system = body.get("system")
        if system:
            messages.append({"role": "system", "content": system})
        messages.extend(body.get("messages") or [])
        prompt = _count_chat(model, messages, body.get("tools"))
        requested = body.get("max_tokens")
        cap_param = "max_tokens"
        require_cap = True
    else:
        return None
    meter = Meter.create(
        model,
        model,
        prompt,
        [],
        blocks=blocks,
        n=n,
        requested_max=requested if isinstance(requested, int) else None,
        require_cap=require_cap,
        cache_writes="cache_control" in json.dumps(body, default=str),
    )
    swallow = False
    if stream and sdk == "openai" and path.endswith("/chat/completions"):
        stream_options = body.get("stream_options") or {}
        if not stream_options.get("include_usage"):
            # Ask for the usage chunk, and hide it again from code that did not ask.
            body["stream_options"] = {**stream_options, "include_usage": True}
            swallow = True
    return _Intercepted(meter, body, cap_param, stream, swallow)


def _price_of(model: str, blocks: tuple[BudgetBlock, ...]) -> ModelPrice | None:
    book = next((b.prices for b in reversed(blocks) if b.prices), None) or PriceBook.default()
    try:
        return book.lookup(model)
    except UnknownModelError:
        return None


def _with_body(options: Any, call: _Intercepted) -> Any:
    body = dict(call.body)
    if call.cap_param is not None:
        cap = call.meter.cap if call.meter.cap is not None else call.meter.requested_max
        if cap is not None:
            # Only the reserved cap is sent, in the one field this endpoint reads: a second,
            # larger output-limit field could let the server generate past the reservation.
            for key in _CAP_FIELDS:
                body.pop(key, None)
            body[call.cap_param] = cap
    # extra_json was merged into the body we read; send it all as json_data. One attempt
    # per reservation: the SDK's own retries would send (and may bill) the request again
    # under this hold, so llmbudget retries it itself with a fresh reservation each time.
    return options.model_copy(update={"json_data": body, "extra_json": None, "max_retries": 0})


_CAP_FIELDS = ("max_tokens", "max_completion_tokens")


def _requested_cap(body: Mapping[str, Any], *keys: str) -> Any:
    """The caller's output limit: the largest of ``keys`` given (an int), else the first
    value given (validated later), else ``None``."""
    given = [body[k] for k in keys if body.get(k) is not None]
    ints = [v for v in given if isinstance(v, int) and not isinstance(v, bool)]
    if ints:
        return max(ints)
    return given[0] if given else None


@dataclass(frozen=True, slots=True)
class _Send:
    options: Any


def _plan_sdk_call(call: _Intercepted, options: Any) -> Plan[Any]:
    meter = call.meter
    yield from meter.plan_open()
    try:
        result = yield _Send(_with_body(options, call))
    except BaseException as exc:
        # An HTTP error answer or a connection never made: released. A timeout, a
        # connection lost after sending, cancellation: the provider may have billed it,
        # so the whole reservation is charged.
        yield from meter.plan_fail(exc)
        raise
    if call.stream or _is_stream(result):
        return result
    parsed = _parsed(result)
    if parsed is None or getattr(parsed, "status", None) in ("queued", "in_progress"):
        # A raw streamed response we cannot watch, or a background response still being
        # generated: the real usage is out of sight, so the whole reservation is charged.
        yield from meter.plan_close(None)
        return result
    yield from meter.plan_close(_usage_of(parsed), text=_text_of_response(parsed))
    return result


def _is_stream(result: object) -> bool:
    return hasattr(result, "_iterator") and hasattr(result, "response")


def _parsed(result: object) -> object | None:
    if hasattr(result, "http_response") and callable(getattr(result, "parse", None)):
        # with_raw_response / with_streaming_response: parse() caches, so the caller's own
        # parse() later returns the same object.
        if getattr(result, "_stream", False):
            return None
        try:
            parsed: object = result.parse()  # type: ignore[attr-defined]
        except Exception:
            return None
        return parsed
    return result


def _usage_of(response: object) -> object:
    if isinstance(response, Mapping):
        return response.get("usage")
    return getattr(response, "usage", None)


def _text_of_response(response: object) -> str:
    parts: list[str] = []
    for choice in getattr(response, "choices", None) or ():
        message = getattr(choice, "message", None)
        parts.append(str(getattr(message, "content", None) or getattr(choice, "text", "") or ""))
    for block in getattr(response, "content", None) or ():
        parts.append(str(getattr(block, "text", "") or ""))
    output_text = getattr(response, "output_text", None)
    if isinstance(output_text, str):
        parts.append(output_text)
    return "".join(parts)


def _usage_only(item: object) -> bool:
    return not getattr(item, "choices", None) and getattr(item, "usage", None) is not None


def watch_stream(stream: Any, meter: Meter, swallow_usage_chunk: bool = False) -> None:
    """Charge ``meter`` when a synchronous SDK stream ends (or is closed or dropped).

    The stream object keeps its type: its iterator is wrapped (to read usage as it goes
    by) and its ``close`` extended. Charging follows :meth:`Meter.plan_close`: the final
    usage if seen, else the streamed text if the model finished, else the reservation.
    """
    tracker = StreamTracker(meter.label)
    original: Iterator[Any] = stream._iterator

    def finish() -> None:
        text = tracker.text if tracker.finish_reason else None
        run_sync(meter.plan_close(tracker.usage, text=text))

    def watched() -> Generator[Any, None, None]:
        try:
            for item in original:
                tracker.observe(item)
                if swallow_usage_chunk and _usage_only(item):
                    continue
                yield item
        finally:
            finish()

    iterator = watched()
    stream._iterator = iterator
    close = stream.close

    @functools.wraps(close)
    def closing() -> None:
        try:
            close()
        finally:
            iterator.close()
            finish()  # a no-op if the iteration already charged the call

    stream.close = closing
    # A stream dropped unread and unclosed is charged when it is garbage-collected.
    weakref.finalize(stream, finish)


def watch_async_stream(stream: Any, meter: Meter, swallow_usage_chunk: bool = False) -> None:
    """:func:`watch_stream` for an ``AsyncStream``."""
    tracker = StreamTracker(meter.label)
    original: AsyncIterator[Any] = stream._iterator

    def closing_plan() -> Plan[Decimal | None]:
        text = tracker.text if tracker.finish_reason else None
        return meter.plan_close(tracker.usage, text=text)

    async def watched() -> AsyncGenerator[Any, None]:
        try:
            async for item in original:
                tracker.observe(item)
                if swallow_usage_chunk and _usage_only(item):
                    continue
                yield item
        finally:
            await run_async(closing_plan())

    iterator = watched()
    stream._iterator = iterator
    close = stream.close

    @functools.wraps(close)
    async def closing() -> None:
        try:
            await close()
        finally:
            await iterator.aclose()
            await run_async(closing_plan())

    stream.close = closing
    # Dropped unread: there is no loop to await on at collection time; run it inline.
    weakref.finalize(stream, lambda: run_sync(closing_plan()))


def _max_retries(client: Any, options: Any) -> int:
    given = getattr(options, "max_retries", None)
    if not isinstance(given, int) or isinstance(given, bool):
        given = getattr(client, "max_retries", 0)
    return given if isinstance(given, int) and not isinstance(given, bool) and given > 0 else 0


def _keyed(client: Any, options: Any) -> Any:
    # Every attempt of one call carries the same idempotency key, as the SDK's retries do.
    make = getattr(client, "_idempotency_key", None)
    if getattr(options, "idempotency_key", "") is None and callable(make):
        return options.model_copy(update={"idempotency_key": make()})
    return options


def _sync_wrapper(original: Callable[..., Any], sdk: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def request(self: Any, cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        if not _blocks.get() or _bypass.get():
            return original(self, cast_to, options, *args, **kwargs)
        stream = bool(kwargs.get("stream", False))
        first = _intercept(sdk, self, options, stream)
        if first is None:
            return original(self, cast_to, options, *args, **kwargs)

        def send(effect: Any) -> Any:
            return original(self, cast_to, effect.options, *args, **kwargs)

        options = _keyed(self, options)

        def delay_for(error: BaseException, number: int, left: int) -> float | None:
            return retry_delay(error, number, left, self, options)

        # Each attempt is reserved, sent once (max_retries=0) and settled on its own.
        for attempt in Retrying(_max_retries(self, options) + 1, delay_for):
            with attempt:
                call = first if attempt.number == 0 else _intercept(sdk, self, options, stream)
                assert call is not None
                result = run_sync(_plan_sdk_call(call, options), send)
            if attempt.error is None:
                assert call is not None
                if _is_stream(result):
                    watch_stream(result, call.meter, call.swallow_usage_chunk)
                return result
        raise AssertionError("Retrying raises the last error when it gives up")

    request.__llmbudget_original__ = original  # type: ignore[attr-defined]
    return request


def _async_wrapper(original: Callable[..., Any], sdk: str) -> Callable[..., Any]:
    @functools.wraps(original)
    async def request(self: Any, cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        if not _blocks.get() or _bypass.get():
            return await original(self, cast_to, options, *args, **kwargs)
        stream = bool(kwargs.get("stream", False))
        first = _intercept(sdk, self, options, stream)
        if first is None:
            return await original(self, cast_to, options, *args, **kwargs)

        async def send(effect: Any) -> Any:
            return await original(self, cast_to, effect.options, *args, **kwargs)

        options = _keyed(self, options)

        def delay_for(error: BaseException, number: int, left: int) -> float | None:
            return retry_delay(error, number, left, self, options)

        async for attempt in Retrying(_max_retries(self, options) + 1, delay_for):
            with attempt:
                call = first if attempt.number == 0 else _intercept(sdk, self, options, stream)
                assert call is not None
                result = await run_async(_plan_sdk_call(call, options), send)
            if attempt.error is None:
                assert call is not None
                if _is_stream(result):
                    watch_async_stream(result, call.meter, call.swallow_usage_chunk)
                return result
        raise AssertionError("Retrying raises the last error when it gives up")

    request.__llmbudget_original__ = original  # type: ignore[attr-defined]
    return request


class _Patches:
    """Reference-counted patching of the SDK clients' ``request`` methods."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._saved: list[tuple[type, Callable[..., Any]]] = []

    def _targets(self) -> list[tuple[type, str, bool]]:
        found: list[tuple[type, str, bool]] = []
        for sdk in ("openai", "anthropic"):
            try:
                module = __import__(f"{sdk}._base_client", fromlist=["SyncAPIClient"])
            except ImportError:
                continue  # an SDK that is not installed needs no patch
            found.append((module.SyncAPIClient, sdk, False))
            found.append((module.AsyncAPIClient, sdk, True))
        return found

    def acquire(self) -> None:
        with self._lock:
            self._count += 1
            if self._count > 1:
                return
            for cls, sdk, is_async in self._targets():
                original = cls.__dict__["request"]
                wrapper = (
                    _async_wrapper(original, sdk) if is_async else _sync_wrapper(original, sdk)
                )
                cls.request = wrapper  # type: ignore[attr-defined]
                self._saved.append((cls, original))

    def release(self) -> None:
        with self._lock:
            self._count -= 1
            if self._count > 0:
                return
            for cls, original in self._saved:
                current = cls.__dict__.get("request")
                if getattr(current, "__llmbudget_original__", None) is original:
                    cls.request = original  # type: ignore[attr-defined]
                else:  # someone patched over us since: leave their patch in place
                    logger.warning("llmbudget: %s.request was re-patched; not restoring", cls)
            self._saved.clear()

    @property
    def active(self) -> bool:
        return self._count > 0


_patches = _Patches()
