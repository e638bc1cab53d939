"""``completion()``: call any provider, within every budget that applies, never past one.

>>> from llmbudget import completion
>>> r = completion(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}],
...                mock_response="Hello!")
>>> r.choices[0].message.content, r._hidden_params["response_cost"]
('Hello!', Decimal('0.00004'))

Each call:

1. counts its prompt tokens offline and looks up the model's prices;
2. reserves its worst-case cost on every budget that applies — the global
   ``llmbudget.max_budget``, the user's budget when ``user=`` and ``budget_manager=`` are
   given, and every enclosing :func:`llmbudget.budget` block — all or none, raising
   :class:`~llmbudget.errors.BudgetExceededError` **before anything is sent**;
3. if you gave no ``max_tokens`` and a limit applies, sends the largest output cap the
   tightest budget can pay for (so the call cannot physically overspend), refusing only
   when not even the prompt plus one output token fits;
4. charges the real cost from the response's usage (streams: from their final usage
   event, else from the tokens of the streamed text); a failure releases the reservation
   only if it proves nothing was processed (an HTTP error answer, no connection), and
   charges it whole otherwise (a timeout may have been billed). Each retry is a new
   attempt with its own reservation (the SDK clients themselves never retry).

The result is the OpenAI SDK's ``ChatCompletion`` (Anthropic's answers are converted to
it), with ``_hidden_params["response_cost"]`` the ``Decimal`` dollars charged (also
:func:`response_cost`). ``stream=True`` returns a :class:`CompletionStream` of
``ChatCompletionChunk`` objects whose ``cost`` is set once it ends. :func:`acompletion`
is the same call for asyncio; both run the same plan (see :mod:`llmbudget.global_budget`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any

from llmbudget.errors import InvalidInputError
from llmbudget.global_budget import ScopeGroup, global_group
from llmbudget.manager import BudgetManager
from llmbudget.plans import Io, Plan, run_async, run_sync
from llmbudget.pricing import PriceBook
from llmbudget.providers import ProviderAuthError, Route, map_sdk_error, resolve
from llmbudget.responses import (
    StreamTracker,
    anthropic_request,
    anthropic_to_openai,
    build_chunk,
    build_completion,
    mock_chunks,
    mock_completion,
    truncate_to_tokens,
)
from llmbudget.retrying import Retrying
from llmbudget.sdk_budget import Meter, active_blocks, bypass, mark_not_sent, retry_delay
from llmbudget.stores.memory import MemoryStore

__all__ = [
    "AsyncCompletionStream",
    "CompletionStream",
    "acompletion",
    "completion",
    "response_cost",
]

# Arguments completion() consumes itself; everything else goes to the provider.
_OWN = {
    "api_base",
    "base_url",
    "api_key",
    "api_version",
    "provider",
    "custom_llm_provider",
    "timeout",
    "max_retries",
    "num_retries",
    "mock_response",
    "budget_manager",
    "prices",
    "pricing_model",
}


_CAP_FIELDS = ("max_completion_tokens", "max_tokens")
# Retries when the caller gives no max_retries (the SDKs' own default).
_DEFAULT_RETRIES = 2


@dataclass(eq=False)
class _Request:
    """A prepared call: everything decided before any I/O."""

    route: Route
    label: str
    pricing_model: str
    messages: list[Any]
    params: dict[str, Any]
    stream: bool
    wants_usage_chunk: bool
    prompt_tokens: int
    requested_max: int | None
    n: int
    user: str | None
    budget_manager: BudgetManager | None
    prices: PriceBook | None
    mock: object
    timeout: float | None
    max_retries: int | None
    cache_writes: bool
    meter: Meter | None = None
    arguments: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.route.provider.kind


def _prepare(model: str, messages: object, kwargs: dict[str, Any]) -> _Request:
    from llmbudget.tokens import count_message_tokens

    if isinstance(messages, str) or not isinstance(messages, Sequence):
        raise InvalidInputError("messages must be a list of chat messages")
    route = resolve(
        model,
        provider=kwargs.get("provider") or kwargs.get("custom_llm_provider"),
        api_base=kwargs.get("api_base") or kwargs.get("base_url"),
        api_key=kwargs.get("api_key"),
        api_version=kwargs.get("api_version"),
    )
    params = {k: v for k, v in kwargs.items() if k not in _OWN}
    stream = bool(params.pop("stream", False))
    stream_options = params.pop("stream_options", None) or {}
    wants_usage = bool(stream_options.get("include_usage"))
    caps = [params[k] for k in _CAP_FIELDS if params.get(k) is not None]
    for value in caps:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"max_tokens must be a positive int, got {value!r}")
    # Both given: reserve for the larger; only that value is sent (see _call_arguments).
    requested = max(caps) if caps else None
    n = params.get("n") or 1
    mock = kwargs.get("mock_response")
    if mock is None:
        _require_sdk(route)
        _require_key(route)
    manager = kwargs.get("budget_manager")
    if manager is not None and not isinstance(manager, BudgetManager):
        raise InvalidInputError("budget_manager must be a BudgetManager")
    user = params.get("user")
    if manager is not None and not user:
        raise InvalidInputError("budget_manager= needs user= (whose budget to charge)")
    # Spend is recorded under the name the caller used; prices are looked up by the
    # route's name (provider/model) unless pricing_model= says otherwise.
    label = model
    pricing_model = kwargs.get("pricing_model") or route.pricing_model
    retries = kwargs.get("max_retries", kwargs.get("num_retries"))
    return _Request(
        route=route,
        label=label,
        pricing_model=pricing_model,
        messages=list(messages),
        params=params,
        stream=stream,
        wants_usage_chunk=wants_usage,
        prompt_tokens=count_message_tokens(
            list(messages), pricing_model, tools=params.get("tools")
        ),
        requested_max=requested,
        n=n,
        user=user,
        budget_manager=manager,
        prices=kwargs.get("prices"),
        mock=mock,
        timeout=kwargs.get("timeout"),
        max_retries=retries,
        cache_writes="cache_control" in json.dumps([messages, params], default=str),
        extra={"stream_options": stream_options},
    )


def _require_key(route: Route) -> None:
    """Fail before any network attempt when the provider needs a key and none is set: an
    SDK would send a placeholder, be refused, and the error would not name the variable."""
    provider = route.provider
    if route.api_key or not provider.key_required:
        return
    names = " or ".join(f"${name}" for name in provider.api_key_env)
    where = f"set {names}, or pass api_key=" if names else "pass api_key="
    raise ProviderAuthError(f"{provider.name}: no API key: {where}", provider=provider.name)


def _require_sdk(route: Route) -> None:
    package = "anthropic" if route.provider.kind == "anthropic" else "openai"
    try:
        __import__(package)
    except ImportError:
        raise ImportError(
            f"calling {route.provider.name} needs the {package!r} package: "
            f"pip install 'llmbudget[{package}]'"
        ) from None


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True)
class _Send:
    request: _Request


def _plan(req: _Request) -> Plan[Any]:
    groups: list[ScopeGroup] = [global_group()]
    manager = req.budget_manager
    if manager is not None:
        blocking = not isinstance(manager.ledger.store, MemoryStore)
        user_budget = yield Io(manager.get_budget, (req.user,), blocking)  # UnknownUserError
        groups.append(ScopeGroup(manager.ledger, (user_budget,)))
    meter = Meter.create(
        req.label,
        req.pricing_model,
        req.prompt_tokens,
        groups,
        blocks=active_blocks(),
        prices=req.prices,
        free_if_unknown=req.route.provider.local,
        n=req.n,
        requested_max=req.requested_max,
        require_cap=req.kind == "anthropic",
        cache_writes=req.cache_writes,
    )
    req.meter = meter
    yield from meter.plan_open()
    if req.mock is not None:
        return (yield from _plan_mock(req, meter))
    try:
        req.arguments = _call_arguments(req)
    except BaseException:
        yield from meter.plan_abort()  # nothing was sent
        raise
    try:
        raw = yield _Send(req)
    except BaseException as exc:
        # Released only if the error proves the provider processed nothing (an HTTP
        # error answer, a connection never made); a timeout, a connection lost after
        # sending or a cancellation may have been billed: the reservation is charged.
        yield from meter.plan_fail(exc)
        mapped = map_sdk_error(exc, req.route.provider.name)
        if mapped is not None:
            raise mapped from exc
        raise
    if req.stream:
        return raw
    data = anthropic_to_openai(raw, req.route.model) if req.kind == "anthropic" else None
    usage = getattr(raw, "usage", None)
    text = _completion_text(raw) if usage is None else None
    yield from meter.plan_close(usage, text=text)
    response = build_completion(data) if data is not None else raw
    _attach(response, req, meter)
    return response


def _plan_mock(req: _Request, meter: Meter) -> Plan[Any]:
    if isinstance(req.mock, BaseException):
        # A mocked failure behaves as a real one: nothing is charged.
        yield from meter.plan_abort()
        raise req.mock
    limit = meter.cap if meter.cap is not None else meter.requested_max
    text, tokens, cut = truncate_to_tokens(str(req.mock), req.label, limit)
    shape: dict[str, Any] = {
        "prompt_tokens": meter.prompt_tokens,
        "completion_tokens": tokens,
        "finish_reason": "length" if cut else "stop",
    }
    if req.stream:
        return mock_chunks(req.route.model, text, **shape)
    data = mock_completion(req.route.model, text, **shape)
    yield from meter.plan_close(data["usage"])
    response = build_completion(data)
    _attach(response, req, meter)
    return response


def _completion_text(raw: object) -> str:
    parts = []
    for choice in getattr(raw, "choices", None) or ():
        message = getattr(choice, "message", None)
        parts.append(str(getattr(message, "content", None) or ""))
        for call in getattr(message, "tool_calls", None) or ():
            function = getattr(call, "function", None)
            parts.append(str(getattr(function, "arguments", "") or ""))
    return "".join(parts)


def _hidden(req: _Request, meter: Meter) -> dict[str, Any]:
    return {
        "response_cost": meter.cost,
        "reserved": meter.reserved,
        "output_cap": meter.cap,
        "usage_estimated": meter.estimated,
        "llm_provider": req.route.provider.name,
        "model": req.route.model,
        "pricing_model": req.pricing_model,
        "api_base": req.route.base_url,
        "mock": req.mock is not None,
    }


def _attach(response: Any, req: _Request, meter: Meter) -> None:
    with contextlib.suppress(AttributeError, TypeError, ValueError):  # frozen/slotted objects
        response._hidden_params = _hidden(req, meter)


def response_cost(response: object) -> Decimal | None:
    """The dollars :func:`completion` charged for ``response`` (``None`` if unknown).

    Works for responses and finished :class:`CompletionStream` objects.
    """
    hidden = getattr(response, "_hidden_params", None)
    if isinstance(hidden, Mapping):
        cost = hidden.get("response_cost")
        return cost if isinstance(cost, Decimal) else None
    return None


# --------------------------------------------------------------------------- SDK clients


_TIMEOUT_DEFAULT = 600.0
_clients: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_clients_lock = threading.Lock()
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], Any]]
_async_clients = weakref.WeakKeyDictionary()
_SIGNATURES: dict[str, frozenset[str]] = {}


def _client_key(req: _Request) -> tuple[Any, ...]:
    route = req.route
    return (
        route.provider.kind,
        route.base_url,
        route.api_key,
        route.api_version,
        req.timeout,
    )


def _new_client(req: _Request, asynchronous: bool) -> Any:
    route = req.route
    # The SDK must not retry inside one reservation (each attempt may be billed):
    # completion() retries itself, reserving again for every attempt.
    options: dict[str, Any] = {"timeout": req.timeout or _TIMEOUT_DEFAULT, "max_retries": 0}
    if route.provider.extra_headers:
        options["default_headers"] = dict(route.provider.extra_headers)
    if route.provider.kind == "anthropic":
        import anthropic

        cls = anthropic.AsyncAnthropic if asynchronous else anthropic.Anthropic
        return cls(api_key=route.api_key, base_url=route.base_url, **options)
    import openai

    if route.provider.kind == "azure":
        azure = openai.AsyncAzureOpenAI if asynchronous else openai.AzureOpenAI
        return azure(
            api_key=route.api_key,
            azure_endpoint=str(route.base_url),
            api_version=route.api_version,
            **options,
        )
    plain = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    return plain(api_key=route.api_key, base_url=route.base_url, **options)


def _sync_client(req: _Request) -> Any:
    key = _client_key(req)
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            _clients.move_to_end(key)
            return client
    client = _new_client(req, asynchronous=False)
    with _clients_lock:
        _clients[key] = client
        while len(_clients) > 64:  # keys and URLs come from callers: bound the cache
            _clients.popitem(last=False)
    return client


def _async_client(req: _Request) -> Any:
    # httpx's async pools belong to one event loop: keep one set of clients per loop.
    loop = asyncio.get_running_loop()
    per_loop = _async_clients.setdefault(loop, {})
    key = _client_key(req)
    client = per_loop.get(key)
    if client is None:
        client = per_loop[key] = _new_client(req, asynchronous=True)
    return client


def _accepted(kind: str) -> frozenset[str]:
    names = _SIGNATURES.get(kind)
    if names is None:
        if kind == "anthropic":
            from anthropic.resources.messages import Messages

            create: Any = Messages.create
        else:
            from openai.resources.chat.completions import Completions

            create = Completions.create
        names = frozenset(inspect.signature(create).parameters) - {"self"}
        _SIGNATURES[kind] = names
    return names


def _call_arguments(req: _Request) -> dict[str, Any]:
    """Keyword arguments for the SDK's ``create``, with the output cap applied."""
    meter = req.meter
    assert meter is not None
    params = dict(req.params)
    cap_key = req.route.provider.max_tokens_param
    if req.route.base_url != req.route.provider.base_url and req.kind != "azure":
        cap_key = "max_tokens"  # a self-hosted stand-in may not know the newer field
    if meter.cap is not None and meter.requested_max is None:
        params[cap_key] = meter.cap
    elif meter.requested_max is not None and all(params.get(k) is not None for k in _CAP_FIELDS):
        # Both fields given: send only the reserved (larger) value, in the provider's field,
        # so no server can read a cap other than the one reserved.
        for key in _CAP_FIELDS:
            params.pop(key, None)
        params[cap_key] = meter.requested_max
    if req.kind == "anthropic":
        arguments = anthropic_request(req.messages, params)
    else:
        arguments = {"messages": req.messages, **params}
        if req.stream:
            stream_options = dict(req.extra.get("stream_options") or {})
            stream_options["include_usage"] = True  # the real usage arrives in the last chunk
            arguments["stream_options"] = stream_options
    arguments["model"] = req.route.model
    if req.stream:
        arguments["stream"] = True
    accepted = _accepted("anthropic" if req.kind == "anthropic" else "openai")
    unknown = {k: arguments.pop(k) for k in list(arguments) if k not in accepted}
    if unknown:
        # Provider-specific fields (top_k, repetition_penalty...) travel in the JSON body.
        arguments["extra_body"] = {**unknown, **(arguments.get("extra_body") or {})}
    return arguments


def _send_sync(effect: _Send) -> Any:
    req = effect.request
    assert req.arguments is not None
    with mark_not_sent():
        client = _sync_client(req)
    with bypass():
        if req.kind == "anthropic":
            return client.messages.create(**req.arguments)
        return client.chat.completions.create(**req.arguments)


async def _send_async(effect: _Send) -> Any:
    req = effect.request
    assert req.arguments is not None
    with mark_not_sent():
        client = _async_client(req)
    with bypass():
        if req.kind == "anthropic":
            return await client.messages.create(**req.arguments)
        return await client.chat.completions.create(**req.arguments)


def _attempts(req: _Request) -> int:
    if req.mock is not None:
        return 1  # a mocked failure is raised as given
    retries = req.max_retries if req.max_retries is not None else _DEFAULT_RETRIES
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidInputError(f"max_retries must be a non-negative int, got {retries!r}")
    return retries + 1


# --------------------------------------------------------------------------- streams


def _chunks_for(event: object, req: _Request, tracker: StreamTracker) -> list[Any]:
    """What the caller sees for one upstream event (after ``tracker.observe``)."""
    if isinstance(event, Mapping):  # a mocked chunk
        shapes: Iterable[Any] = [event]
    elif req.kind == "anthropic":
        shapes = tracker.to_chunks(event)
    else:
        shapes = [event]
    out = []
    for shape in shapes:
        usage_only = not _field(shape, "choices") and _field(shape, "usage") is not None
        if usage_only and not req.wants_usage_chunk:
            continue  # we asked for it to charge the call; the caller did not
        out.append(build_chunk(shape) if isinstance(shape, Mapping) else shape)
    return out


def _field(obj: object, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)


class _StreamBase:
    """What both stream types share: the request, the tracker and the result."""

    def __init__(self, raw: Any, req: _Request) -> None:
        assert req.meter is not None
        self._raw = raw
        self._req = req
        self._meter = req.meter
        self.tracker = StreamTracker(req.route.model)
        self.cost: Decimal | None = None
        self._hidden_params: dict[str, Any] = {}

    @property
    def usage(self) -> Any:
        """The final usage block (``None`` until the stream ends, or if none came)."""
        return self.tracker.usage

    def _closing_plan(self) -> Plan[Decimal | None]:
        # Without usage, the streamed text tells the cost only if the model is known to
        # have finished (a finish reason arrived); a stream cut short may have been billed
        # for output never delivered, so it is charged its whole reservation.
        tracker = self.tracker
        text = tracker.text if tracker.finish_reason else None
        return self._meter.plan_close(tracker.usage, text=text)

    def _finished(self) -> None:
        self.cost = self._meter.cost
        self._hidden_params = _hidden(self._req, self._meter)

    def _mapped(self, exc: BaseException) -> BaseException:
        mapped = map_sdk_error(exc, self._req.route.provider.name)
        return exc if mapped is None else mapped


class CompletionStream(_StreamBase):
    """The chunks of a ``completion(..., stream=True)``; charged when it ends.

    Iterate it (or use it in a ``with``). A stream that ends normally is charged its real
    usage; one closed early is charged by the text received if the model had finished,
    else its whole reservation (the provider may have produced, and billed, more).
    """

    def __init__(self, raw: Any, req: _Request) -> None:
        super().__init__(raw, req)
        self._iterator = self._run()

    def _run(self) -> Generator[Any, None, None]:
        try:
            for event in self._raw:
                self.tracker.observe(event)
                yield from _chunks_for(event, self._req, self.tracker)
        except Exception as exc:
            mapped = self._mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        finally:
            try:
                run_sync(self._closing_plan())
            finally:
                self._finished()
                close = getattr(self._raw, "close", None)
                if callable(close):
                    close()

    def __iter__(self) -> CompletionStream:
        return self

    def __next__(self) -> Any:
        return next(self._iterator)

    def close(self) -> None:
        """Stop reading; settles the call (see the class doc)."""
        self._iterator.close()
        if self.cost is None and not self._hidden_params:
            # Never iterated: the generator's finally did not run.
            run_sync(self._closing_plan())
            self._finished()
            close = getattr(self._raw, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> CompletionStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Dropped unread: charge now rather than leave the hold to expire unrecorded.
        with contextlib.suppress(Exception):  # never raise from a finaliser
            self.close()


class AsyncCompletionStream(_StreamBase):
    """:class:`CompletionStream` for :func:`acompletion` (``async for`` / ``async with``)."""

    def __init__(self, raw: Any, req: _Request) -> None:
        super().__init__(raw, req)
        self._iterator = self._run()

    async def _run(self) -> AsyncGenerator[Any, None]:
        try:
            if isinstance(self._raw, list):  # mocked chunks
                for event in self._raw:
                    self.tracker.observe(event)
                    for chunk in _chunks_for(event, self._req, self.tracker):
                        yield chunk
            else:
                async for event in self._raw:
                    self.tracker.observe(event)
                    for chunk in _chunks_for(event, self._req, self.tracker):
                        yield chunk
        except Exception as exc:
            mapped = self._mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        finally:
            try:
                await run_async(self._closing_plan())
            finally:
                self._finished()
                close = getattr(self._raw, "close", None)
                if callable(close):
                    result = close()
                    if inspect.isawaitable(result):
                        await result

    def __aiter__(self) -> AsyncCompletionStream:
        return self

    async def __anext__(self) -> Any:
        return await self._iterator.__anext__()

    async def aclose(self) -> None:
        """Stop reading; settles the call."""
        await self._iterator.aclose()
        if self.cost is None and not self._hidden_params:
            await run_async(self._closing_plan())
            self._finished()
            close = getattr(self._raw, "close", None)
            if callable(close):
                result = close()
                if inspect.isawaitable(result):
                    await result

    async def __aenter__(self) -> AsyncCompletionStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


# --------------------------------------------------------------------------- the API


def completion(model: str, messages: Sequence[Any], **kwargs: Any) -> Any:
    """Call ``model`` with ``messages`` within every budget that applies (see module doc).

    Arguments of its own: ``api_base`` (alias ``base_url``), ``api_key``, ``api_version``
    (Azure), ``provider`` (alias ``custom_llm_provider``), ``timeout``, ``max_retries``
    (alias ``num_retries``), ``mock_response`` (a string answered without calling
    anything, or an exception to raise), ``budget_manager`` with ``user`` (charge that
    user's budget too), ``prices`` (a :class:`~llmbudget.pricing.PriceBook`) and
    ``pricing_model`` (the name to price the call by, e.g. for an Azure deployment).
    Everything else (``temperature``, ``tools``, ``max_tokens``, ``stream``...) is sent
    to the provider.

    >>> r = completion("claude-3-5-haiku-latest", [{"role": "user", "content": "Hi"}],
    ...                mock_response="Hello there", max_tokens=50)
    >>> r.usage.completion_tokens > 0
    True
    """
    req = _prepare(model, messages, kwargs)
    # Every attempt reserves, sends once and settles on its own (see _new_client).
    for attempt in Retrying(_attempts(req), retry_delay):
        with attempt:
            result = run_sync(_plan(req), _send_sync)
            return CompletionStream(result, req) if req.stream else result
    raise AssertionError("Retrying raises the last error when it gives up")


async def acompletion(model: str, messages: Sequence[Any], **kwargs: Any) -> Any:
    """:func:`completion` for asyncio (the same plan, awaited).

    >>> import asyncio
    >>> r = asyncio.run(acompletion("gpt-4o-mini", [{"role": "user", "content": "Hi"}],
    ...                             mock_response="Hey"))
    >>> r.choices[0].message.content
    'Hey'
    """
    req = _prepare(model, messages, kwargs)
    async for attempt in Retrying(_attempts(req), retry_delay):
        with attempt:
            result = await run_async(_plan(req), _send_async)
            return AsyncCompletionStream(result, req) if req.stream else result
    raise AssertionError("Retrying raises the last error when it gives up")
