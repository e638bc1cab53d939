"""``completion()``: call any provider, within every budget that applies, never past one.

>>> from llmbudget import completion
>>> r = completion(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}],
...                mock_response="Hello!")
>>> r.choices[0].message.content, r._hidden_params["response_cost"]
('Hello!', Decimal('0.00004'))

A call picks its provider (:mod:`llmbudget.providers`) and sends the request with that
provider's official SDK, metered as every SDK request is (:mod:`llmbudget.sdk_patch`):

1. its worst case is reserved on every budget that applies — the global
   ``llmbudget.max_budget``, the user's budget when ``user=`` and ``budget_manager=`` are
   given, and every enclosing :func:`llmbudget.budget` block — all or none, raising
   :class:`~llmbudget.errors.BudgetExceededError` **before anything is sent**;
2. without a ``max_tokens`` of yours and with a limit applying, the request carries the
   largest output cap the budgets can pay for, so it cannot physically overspend;
3. the real cost is charged from the response's usage (streams: when they end); a failure
   releases the reservation only if it proves nothing was billed, and charges it whole
   otherwise. Each retry is an attempt reserved and charged on its own.

The result is the OpenAI SDK's ``ChatCompletion`` (Anthropic's answers are converted to
it), with ``_hidden_params["response_cost"]`` the ``Decimal`` dollars charged (also
:func:`response_cost`). ``stream=True`` returns a :class:`CompletionStream` of
``ChatCompletionChunk`` objects whose ``cost`` is set once it ends. ``mock_response``
answers without calling anything, metered as a real call (reserved, capped, charged). :func:`acompletion` is the same call for asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any, NoReturn

from llmbudget.errors import InvalidInputError, LLMBudgetError
from llmbudget.global_budget import global_group
from llmbudget.manager import BudgetManager
from llmbudget.metering import DEFAULT_OUTPUT_CAP, Api, describe
from llmbudget.plans import Plan, run_async, run_sync
from llmbudget.pricing import PriceBook
from llmbudget.providers import ProviderAuthError, Route, map_sdk_error, resolve
from llmbudget.reservations import ScopeGroup
from llmbudget.responses import (
    AttrDict,
    anthropic_events,
    build_chunk,
    build_completion,
    mock_anthropic_message,
    mock_chunks,
    mock_completion,
    truncate_to_tokens,
)
from llmbudget.sdk_patch import MeteredCall, meter_for, metered_call
from llmbudget.self_hosted import self_hosted_provider
from llmbudget.translate import AnthropicChunks, anthropic_request, anthropic_to_openai

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
# Retries when the caller gives no max_retries (the SDKs' own default).
_DEFAULT_RETRIES = 2
_TIMEOUT_DEFAULT = 600.0


@dataclass(eq=False)
class _Request:
    """A prepared call: everything decided before any I/O."""

    route: Route
    label: str
    pricing_model: str
    messages: list[Any]
    params: dict[str, Any]
    stream: bool
    wants_usage: bool
    user: str | None
    budget_manager: BudgetManager | None
    prices: PriceBook | None
    mock: object
    timeout: float | None
    retries: int

    @property
    def kind(self) -> str:
        return self.route.provider.kind


def _prepare(model: str, messages: object, kwargs: dict[str, Any]) -> _Request:
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
    options = params.get("stream_options") or {}
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
    retries = kwargs.get("max_retries", kwargs.get("num_retries"))
    retries = _DEFAULT_RETRIES if retries is None else retries
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InvalidInputError(f"max_retries must be a non-negative int, got {retries!r}")
    return _Request(
        route=route,
        # Spend is recorded under the name the caller used; prices are looked up by the
        # route's name (provider/model) unless pricing_model= says otherwise.
        label=model,
        pricing_model=kwargs.get("pricing_model") or route.pricing_model,
        messages=list(messages),
        params=params,
        stream=stream,
        wants_usage=bool(isinstance(options, Mapping) and options.get("include_usage")),
        user=user,
        budget_manager=manager,
        prices=kwargs.get("prices"),
        mock=mock,
        timeout=kwargs.get("timeout"),
        # A mocked answer (or failure) is given once, as asked.
        retries=0 if mock is not None else retries,
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


def _metering(req: _Request) -> MeteredCall:
    """The budgets the call is reserved on besides ``budget()`` blocks."""
    groups: list[ScopeGroup] = [global_group()]
    manager = req.budget_manager
    if manager is not None:
        assert req.user is not None
        # The user's budget must exist: UnknownUserError before anything is sent.
        groups.append(ScopeGroup(manager.ledger.plans, (manager.get_budget(req.user),)))
    return MeteredCall(
        groups=groups,
        prices=req.prices,
        pricing_model=req.pricing_model,
        tokenizer=req.pricing_model,
        label=req.label,
        self_hosted=req.route.provider.local or self_hosted_provider(req.label) is not None,
    )


# --------------------------------------------------------------------------- SDK clients

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
        req.retries,
    )


def _new_client(req: _Request, asynchronous: bool) -> Any:
    route = req.route
    # max_retries: the patch makes each retry an attempt reserved and charged on its own.
    options: dict[str, Any] = {
        "timeout": req.timeout or _TIMEOUT_DEFAULT,
        "max_retries": req.retries,
    }
    if route.provider.extra_headers:
        options["default_headers"] = dict(route.provider.extra_headers)
    key = route.api_key
    if req.kind == "anthropic":
        import anthropic

        cls = anthropic.AsyncAnthropic if asynchronous else anthropic.Anthropic
        return cls(api_key=key, base_url=route.base_url, **options)
    import openai

    if req.kind == "azure":
        azure = openai.AsyncAzureOpenAI if asynchronous else openai.AzureOpenAI
        return azure(
            api_key=key,
            azure_endpoint=str(route.base_url),
            api_version=route.api_version,
            **options,
        )
    plain = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    return plain(api_key=key, base_url=route.base_url, **options)


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


def _body(req: _Request) -> dict[str, Any]:
    """The request as the provider's API reads it (before the meter's cap)."""
    params = dict(req.params)
    if req.kind == "anthropic":
        body = anthropic_request(req.messages, params)
    else:
        body = {"messages": req.messages, **params}
    body["model"] = req.route.model
    if req.stream:
        body["stream"] = True
    return body


def _arguments(req: _Request, metering: MeteredCall) -> dict[str, Any]:
    """Keyword arguments for the SDK's ``create`` (the output cap is the meter's)."""
    arguments = _body(req)
    if req.kind == "anthropic" and arguments.get("max_tokens") is None:
        # The SDK refuses a call without max_tokens; the meter replaces this one.
        arguments["max_tokens"] = DEFAULT_OUTPUT_CAP
        metering.placeholder_cap = True
    accepted = _accepted("anthropic" if req.kind == "anthropic" else "openai")
    unknown = {k: arguments.pop(k) for k in list(arguments) if k not in accepted}
    if unknown:
        # Provider-specific fields (top_k, repetition_penalty...) travel in the JSON body.
        arguments["extra_body"] = {**unknown, **(arguments.get("extra_body") or {})}
    return arguments


def _create(client: Any, req: _Request, metering: MeteredCall) -> Any:
    target = client.messages if req.kind == "anthropic" else client.chat.completions
    return target.create(**_arguments(req, metering))


def _mapped(exc: BaseException, req: _Request) -> BaseException:
    """The error to raise for ``exc``: an SDK error as a typed :class:`ProviderError`."""
    mapped = map_sdk_error(exc, req.route.provider.name)
    return exc if mapped is None else mapped


def _reraise(exc: Exception, req: _Request) -> NoReturn:
    mapped = _mapped(exc, req)
    if mapped is exc:
        raise exc
    raise mapped from exc


# --------------------------------------------------------------------------- results


def _hidden(req: _Request, meter: Any) -> dict[str, Any]:
    return {
        "response_cost": meter.cost if meter is not None else None,
        "reserved": meter.reserved if meter is not None else Decimal(0),
        "output_cap": meter.cap if meter is not None else None,
        "usage_estimated": meter.estimated if meter is not None else False,
        "llm_provider": req.route.provider.name,
        "model": req.route.model,
        "pricing_model": req.pricing_model,
        "api_base": req.route.base_url,
        "mock": req.mock is not None,
    }


def _finish(raw: Any, req: _Request, metering: MeteredCall) -> Any:
    """The response the caller gets: OpenAI's shape, with ``_hidden_params``."""
    meter = metering.meters[-1] if metering.meters else None
    if req.kind == "anthropic":
        response = build_completion(anthropic_to_openai(raw, req.route.model))
    else:
        response = raw
    with contextlib.suppress(AttributeError, TypeError, ValueError):  # frozen/slotted objects
        response._hidden_params = _hidden(req, meter)
    return response


def response_cost(response: object) -> Decimal | None:
    """The dollars :func:`completion` charged for ``response`` (``None`` if unknown).

    Works for responses and finished :class:`CompletionStream` objects.
    """
    hidden = getattr(response, "_hidden_params", None)
    if isinstance(hidden, Mapping):
        cost = hidden.get("response_cost")
        return cost if isinstance(cost, Decimal) else None
    return None


# --------------------------------------------------------------------------- mocks


def _plan_mock(req: _Request, metering: MeteredCall) -> Plan[Any]:
    """A mocked call, metered as a real one: described, reserved (a refusal raises), cut
    to the cap it would have been sent with, and charged its usage; a mocked failure is
    released, as an error answer is, and raised."""
    api: Api = "messages" if req.kind == "anthropic" else "chat"
    meter = meter_for(describe(api, _body(req), req.pricing_model), metering)
    yield from meter.plan_open()
    if isinstance(req.mock, BaseException):
        yield from meter.plan_release("mock_failure")
        raise req.mock
    call = meter.call
    text, output, cut = truncate_to_tokens(
        str(req.mock), call.counter, meter.cap or call.requested_cap
    )
    model = req.route.model
    if req.kind == "anthropic":
        message = mock_anthropic_message(
            model, text, input_tokens=call.prompt_tokens, output_tokens=output,
            stop_reason="max_tokens" if cut else "end_turn",
        )  # fmt: skip
        yield from meter.plan_close(message["usage"], finished=True)
        return anthropic_events(message) if req.stream else message
    shape: dict[str, Any] = {
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": output,
        "finish_reason": "length" if cut else "stop",
    }
    data = mock_completion(model, text, **shape)
    yield from meter.plan_close(data["usage"], finished=True)
    if req.stream:
        chunks = mock_chunks(model, text, **shape)
        return chunks if req.wants_usage else chunks[:-1]
    return data


def _mocked(
    req: _Request, metering: MeteredCall, raw: Any, stream_cls: type[_StreamBase] | None = None
) -> Any:
    if req.stream:
        return (stream_cls or CompletionStream)(raw, req, metering)
    if req.kind == "anthropic":
        return _finish(raw, req, metering)
    return _finish(build_completion(raw), req, metering)


# --------------------------------------------------------------------------- streams


class _StreamBase:
    """A completion stream: the SDK's stream, in OpenAI chunks. Charging is the meter's
    (done when the SDK stream's body ends, is closed, or is dropped)."""

    def __init__(self, raw: Any, req: _Request, metering: MeteredCall) -> None:
        self._raw = raw
        self._req = req
        self._meter = metering.meters[-1] if metering.meters else None
        self._anthropic = (
            AnthropicChunks(req.route.model, req.wants_usage) if req.kind == "anthropic" else None
        )

    def _chunks(self, event: Any) -> list[Any]:
        if self._anthropic is None:
            return [build_chunk(event) if isinstance(event, Mapping) else event]
        return [build_chunk(shape) for shape in self._anthropic.chunks(event)]

    @property
    def cost(self) -> Decimal | None:
        """Dollars charged, once the stream has ended (``None`` before)."""
        meter = self._meter
        return meter.cost if meter is not None and meter.done else None

    @property
    def usage(self) -> Any:
        """The final usage block the provider reported (``None`` until it ends)."""
        meter = self._meter
        usage = meter.usage if meter is not None and meter.done else None
        return AttrDict(usage) if isinstance(usage, Mapping) else usage

    @property
    def _hidden_params(self) -> dict[str, Any]:
        if self._meter is None or not self._meter.done:
            return {}
        return _hidden(self._req, self._meter)

    def _mapped(self, exc: BaseException) -> BaseException:
        return _mapped(exc, self._req)


class CompletionStream(_StreamBase):
    """The chunks of a ``completion(..., stream=True)``; charged when it ends.

    A stream that ends normally is charged its real usage; one closed early is charged by
    the text received if the model had finished, else its whole reservation (the
    provider may have produced, and billed, more).
    """

    def __init__(self, raw: Any, req: _Request, metering: MeteredCall) -> None:
        super().__init__(raw, req, metering)
        self._iterator = self._run()

    def _run(self) -> Generator[Any, None, None]:
        try:
            for event in self._raw:
                yield from self._chunks(event)
        except LLMBudgetError:
            raise
        except Exception as exc:
            mapped = self._mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        finally:
            self._close_raw()

    def _close_raw(self) -> None:
        close = getattr(self._raw, "close", None)
        if callable(close):
            close()

    def __iter__(self) -> CompletionStream:
        return self

    def __next__(self) -> Any:
        return next(self._iterator)

    def close(self) -> None:
        """Stop reading; the call is charged (see the class doc)."""
        self._iterator.close()
        self._close_raw()

    def __enter__(self) -> CompletionStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncCompletionStream(_StreamBase):
    """:class:`CompletionStream` for :func:`acompletion` (``async for`` / ``async with``)."""

    def __init__(self, raw: Any, req: _Request, metering: MeteredCall) -> None:
        super().__init__(raw, req, metering)
        self._iterator = self._run()

    async def _run(self) -> AsyncGenerator[Any, None]:
        try:
            if isinstance(self._raw, list):  # a mocked stream
                for event in self._raw:
                    for chunk in self._chunks(event):
                        yield chunk
                return
            async for event in self._raw:
                for chunk in self._chunks(event):
                    yield chunk
        except LLMBudgetError:
            raise
        except Exception as exc:
            mapped = self._mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        finally:
            await self._close_raw()

    async def _close_raw(self) -> None:
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
        """Stop reading; the call is charged."""
        await self._iterator.aclose()
        await self._close_raw()

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
    metering = _metering(req)
    if req.mock is not None:
        return _mocked(req, metering, run_sync(_plan_mock(req, metering)))
    client = _sync_client(req)
    with metered_call(metering):
        try:
            raw = _create(client, req, metering)
        except LLMBudgetError:
            raise
        except Exception as exc:
            _reraise(exc, req)
    if req.stream:
        return CompletionStream(raw, req, metering)
    return _finish(raw, req, metering)


async def acompletion(model: str, messages: Sequence[Any], **kwargs: Any) -> Any:
    """:func:`completion` for asyncio (the same metering, awaited).

    >>> import asyncio
    >>> r = asyncio.run(acompletion("gpt-4o-mini", [{"role": "user", "content": "Hi"}],
    ...                             mock_response="Hey"))
    >>> r.choices[0].message.content
    'Hey'
    """
    req = _prepare(model, messages, kwargs)
    metering = _metering(req)
    if req.mock is not None:
        return _mocked(
            req,
            metering,
            await run_async(_plan_mock(req, metering)),
            stream_cls=AsyncCompletionStream,
        )
    client = _async_client(req)
    with metered_call(metering):
        try:
            raw = await _create(client, req, metering)
        except LLMBudgetError:
            raise
        except Exception as exc:
            _reraise(exc, req)
    if req.stream:
        return AsyncCompletionStream(raw, req, metering)
    return _finish(raw, req, metering)
