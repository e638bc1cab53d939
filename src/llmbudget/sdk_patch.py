"""Metering every billable request of the ``openai`` and ``anthropic`` SDKs.

While a :func:`llmbudget.budget` block is open (or :func:`llmbudget.completion` runs), two
methods of the SDKs' client classes are wrapped:

``request``
    Reads the request (:func:`llmbudget.metering.describe`), reserves its worst case on
    every budget that applies, sends it with the reserved output cap (the SDK's own
    retries off: each attempt is reserved and settled on its own, with the SDK's retry
    rules), and releases or charges it when sending fails.
``_process_response``
    Hands the HTTP response to the meter before the SDK parses it. A body already read
    (a plain call) is charged at once; a streamed body is watched as its bytes go by,
    whoever reads them — the SDK's ``Stream``, ``with_raw_response``,
    ``with_streaming_response``, the ``.stream()`` helpers, ``iter_lines()`` — and charged
    when it ends, is closed, or is dropped.

So ``.create``, ``.parse``, ``with_raw_response``, ``with_streaming_response``,
``responses.create`` / ``responses.stream``, ``messages.stream``, legacy completions and
embeddings are all metered, sync and async. A POST the meter does not understand
(images, audio, batches, assistants runs, fine-tuning...) is **refused** inside a block
with :class:`~llmbudget.errors.InvalidRequestError`: never passed unmetered. Free
endpoints (moderations, token counting, files, cancellations) and every GET pass.

The classes are restored when the last block closes; calls outside any block pass
straight through.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import sys
import threading
import weakref
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from llmbudget.blocks import active_blocks, bypassed
from llmbudget.errors import InvalidRequestError, LLMBudgetError, UnknownModelError
from llmbudget.metering import (
    API_CAP_FIELDS,
    Api,
    BillableCall,
    BodyWatcher,
    Meter,
    describe,
    forward,
    needs_usage_request,
)
from llmbudget.plans import Plan, run_async, run_sync
from llmbudget.pricing import ModelPrice, PriceBook
from llmbudget.reservations import ScopeGroup
from llmbudget.retrying import plan_attempts, retry_delay

__all__ = ["MeteredCall", "meter_for", "metered_call", "patches"]

logger = logging.getLogger(__name__)

_SENTINELS = frozenset({"NotGiven", "Omit"})
# POSTs that cost nothing (or nothing a budget counts): passed through inside a block.
_FREE = ("/moderations", "/count_tokens", "/input_tokens", "/files", "/uploads", "/cancel")


@dataclass
class MeteredCall:
    """What :func:`llmbudget.completion` adds to the next SDK request of its context:
    more budgets (the global one, a user's), how to price it, and where to put the meter."""

    groups: Sequence[ScopeGroup] = ()
    prices: PriceBook | None = None
    pricing_model: str | None = None
    tokenizer: str | None = None
    label: str | None = None
    #: Served on the caller's own hardware (see :mod:`llmbudget.self_hosted`): $0 a call.
    self_hosted: bool = False
    #: The request's output limit was put there by the door to satisfy the SDK (Anthropic
    #: requires one), not by its caller: the meter picks the cap instead.
    placeholder_cap: bool = False
    meters: list[Meter] = field(default_factory=list)


_context: contextvars.ContextVar[MeteredCall | None] = contextvars.ContextVar(
    "llmbudget_metered_call", default=None
)


@contextlib.contextmanager
def metered_call(call: MeteredCall) -> Iterator[MeteredCall]:
    """Meter SDK requests made inside the block with ``call``'s budgets too."""
    token = _context.set(call)
    patches.acquire()
    try:
        yield call
    finally:
        patches.release()
        _context.reset(token)


# --------------------------------------------------------------------------- requests


def _path(options: Any) -> str:
    return urlsplit(str(getattr(options, "url", "") or "")).path.rstrip("/")


def _body(options: Any) -> dict[str, Any] | None:
    """The JSON the SDK will send: its ``json_data`` with ``extra_json`` merged, and
    without the SDKs' "not given" sentinels (which they drop when serialising)."""
    data = getattr(options, "json_data", None)
    if not isinstance(data, Mapping):
        return None
    extra = getattr(options, "extra_json", None)
    merged = {**data, **(extra if isinstance(extra, Mapping) else {})}
    return {k: v for k, v in merged.items() if type(v).__name__ not in _SENTINELS}


def _api(sdk: str, path: str) -> Api | None:
    if sdk == "anthropic":
        return "messages" if path.endswith("/messages") else None
    for suffix, api in (
        ("/chat/completions", "chat"),
        ("/responses", "responses"),
        ("/completions", "completions"),
        ("/embeddings", "embeddings"),
    ):
        if path.endswith(suffix):
            return api  # type: ignore[return-value]
    return None


def _is_openai_host(client: Any) -> bool:
    if type(client).__name__ in ("AzureOpenAI", "AsyncAzureOpenAI"):
        return True
    host = urlsplit(str(getattr(client, "base_url", ""))).hostname or ""
    return host == "api.openai.com" or host.endswith(".openai.azure.com")


def _cap_field(api: Api, client: Any) -> str | None:
    if api == "chat":
        # OpenAI's own servers read max_completion_tokens (and refuse max_tokens for
        # reasoning models); other OpenAI-compatible servers may know only max_tokens.
        return "max_completion_tokens" if _is_openai_host(client) else "max_tokens"
    return None  # the API's one field


@dataclass(eq=False)
class _Request:
    """One attempt: its meter, the request to send, and how to watch the answer."""

    meter: Meter
    api: Api
    body: dict[str, Any]
    cap_field: str | None
    hide_usage_chunk: bool
    watcher: BodyWatcher | None = None
    attached: bool = False
    complete: bool = False
    opaque: bool = False

    def options(self, original: Any) -> Any:
        """The SDK's request options with the metered body, sent once, uncompressed."""
        call = self.meter.call
        body = forward(
            self.body, self.api, cap=self.meter.cap, cap_field=self.cap_field, stream=call.stream
        )
        headers = getattr(original, "headers", None)
        headers = dict(headers) if isinstance(headers, Mapping) else {}
        # A compressed stream could be relayed but not read: ask for plain bytes.
        headers["Accept-Encoding"] = "identity"
        return original.model_copy(
            update={"json_data": body, "extra_json": None, "max_retries": 0, "headers": headers}
        )

    # -- the response --------------------------------------------------------------------

    def attach(self, response: Any) -> None:
        """Watch ``response``'s body (called before the SDK parses it)."""
        self.attached = True
        content_type = str(response.headers.get("content-type", ""))
        sse = "text/event-stream" in content_type or self.meter.call.stream
        encoding = str(response.headers.get("content-encoding", "identity")).lower()
        self.watcher = BodyWatcher(sse=sse, hide_usage_chunk=self.hide_usage_chunk)
        if hasattr(response, "_content"):  # read already (httpx decoded it)
            self.watcher.feed(response.content)
            self.watcher.close()
            self.complete = True
            return
        self.opaque = encoding not in ("identity", "", "gzip", "deflate")
        inflate = (
            zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
            if encoding in ("gzip", "deflate")
            else None
        )
        response.stream = _metered_stream(response.stream, self, inflate)
        # Dropped unread and unclosed: charged when the response is collected.
        weakref.finalize(response, self.finish_sync)

    def _closing(self) -> Plan[Any]:
        watcher = self.watcher
        assert watcher is not None
        watcher.close()
        tracker = watcher.tracker
        if self.opaque:
            return self.meter.plan_close(None, status="unreadable")
        return self.meter.plan_close(
            tracker.usage, text=tracker.text, finished=tracker.finished and not tracker.error
        )

    def finish_sync(self) -> None:
        if self.meter.done:
            return
        try:
            run_sync(self._closing())
        except Exception:
            logger.exception("llmbudget: could not charge a stream of %s", self.meter.label)

    async def finish_async(self) -> None:
        if self.meter.done:
            return
        try:
            await run_async(self._closing())
        except Exception:
            logger.exception("llmbudget: could not charge a stream of %s", self.meter.label)

    def relay(self, chunk: bytes, inflate: Any) -> bytes:
        """Bytes to pass on for ``chunk``, after the watcher has seen them."""
        watcher = self.watcher
        assert watcher is not None
        if self.opaque:
            return chunk
        if inflate is not None:
            watcher.feed(inflate.decompress(chunk))  # watched, not filtered: still compressed
            return chunk
        return watcher.feed(chunk)

    def flush(self, inflate: Any) -> bytes:
        watcher = self.watcher
        assert watcher is not None
        if self.opaque or inflate is not None:
            return b""
        return watcher.close()


def _metered_stream(inner: Any, request: _Request, inflate: Any) -> Any:
    """``inner`` (an httpx or httpx2 byte stream) wrapped so every byte is watched."""
    module = __import__(type(inner).__module__.split(".")[0])
    if isinstance(inner, module.SyncByteStream):
        return _sync_stream_class(module.SyncByteStream)(inner, request, inflate)
    return _async_stream_class(module.AsyncByteStream)(inner, request, inflate)


@functools.cache
def _sync_stream_class(base: type) -> type:
    class MeteredStream(base):  # type: ignore[misc]
        def __init__(self, inner: Any, request: _Request, inflate: Any) -> None:
            self.inner, self.request, self.inflate = inner, request, inflate

        def __iter__(self) -> Iterator[bytes]:
            for chunk in self.inner:
                out = self.request.relay(chunk, self.inflate)
                if out:
                    yield out
            rest = self.request.flush(self.inflate)
            if rest:
                yield rest

        def close(self) -> None:
            try:
                self.inner.close()
            finally:
                self.request.finish_sync()

    return MeteredStream


@functools.cache
def _async_stream_class(base: type) -> type:
    class MeteredStream(base):  # type: ignore[misc]
        def __init__(self, inner: Any, request: _Request, inflate: Any) -> None:
            self.inner, self.request, self.inflate = inner, request, inflate

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self.inner:
                out = self.request.relay(chunk, self.inflate)
                if out:
                    yield out
            rest = self.request.flush(self.inflate)
            if rest:
                yield rest

        async def aclose(self) -> None:
            try:
                await self.inner.aclose()
            finally:
                await self.request.finish_async()

    return MeteredStream


_pending: contextvars.ContextVar[_Request | None] = contextvars.ContextVar(
    "llmbudget_pending_request", default=None
)


def _price(model: str, book: PriceBook) -> tuple[ModelPrice | None, UnknownModelError | None]:
    try:
        return book.lookup(model), None
    except UnknownModelError as exc:
        return None, exc


def _prepare(sdk: str, client: Any, options: Any, stream: bool) -> _Request | None:
    """The attempt for an SDK request, or ``None`` for one that passes unmetered (a GET,
    a free endpoint). Raises for a billable request that cannot be metered."""
    if str(getattr(options, "method", "")).lower() != "post":
        return None
    path = _path(options)
    api = _api(sdk, path)
    if api is None:
        if path.endswith(_FREE):
            return None
        raise InvalidRequestError(
            f"llmbudget cannot budget {sdk} requests to {path or 'this endpoint'}: inside "
            "llmbudget.budget() they are refused (wrap code that must make them in "
            "llmbudget.bypass())",
            "url",
        )
    body = _body(options)
    if body is None:
        raise InvalidRequestError(f"{path}: a request without a JSON body cannot be budgeted")
    context = _context.get() or MeteredCall()
    if context.placeholder_cap:
        for name in API_CAP_FIELDS[api]:
            body.pop(name, None)
    call = describe(api, {**body, "stream": stream or bool(body.get("stream"))}, context.tokenizer)
    meter = meter_for(call, context)
    hide = needs_usage_request(api, call.stream) and not call.wants_usage
    return _Request(meter, api, body, _cap_field(api, client), hide)


def meter_for(call: BillableCall, context: MeteredCall | None = None) -> Meter:
    """The meter of ``call`` within the enclosing ``budget()`` blocks and ``context``'s
    budgets, priced by ``context``'s prices or the innermost block's (else the default)."""
    context = context or MeteredCall()
    blocks = active_blocks()
    book = (
        context.prices
        or next((b.prices for b in reversed(blocks) if b.prices), None)
        or PriceBook.default()
    )
    if context.self_hosted:
        price, unknown = None, None
    else:
        price, unknown = _price(context.pricing_model or call.model, book)
    meter = Meter(
        call,
        price,
        [*context.groups, *(block.group for block in blocks)],
        label=context.label or call.model,
        free=context.self_hosted,
        unknown=unknown,
        on_settled=[block.record for block in blocks],
    )
    context.meters.append(meter)
    return meter


def _keyed(client: Any, options: Any) -> Any:
    # Every attempt of one call carries the same idempotency key, as the SDK's retries do.
    make = getattr(client, "_idempotency_key", None)
    if getattr(options, "idempotency_key", "") is None and callable(make):
        return options.model_copy(update={"idempotency_key": make()})
    return options


def _max_retries(client: Any, options: Any) -> int:
    given = getattr(options, "max_retries", None)
    if not isinstance(given, int) or isinstance(given, bool):
        given = getattr(client, "max_retries", 0)
    return given if isinstance(given, int) and not isinstance(given, bool) and given > 0 else 0


@dataclass(frozen=True, slots=True)
class _Send:
    options: Any


def _request_plan(sdk: str, client: Any, options: Any, stream: bool) -> Plan[Any] | None:
    """The whole metered request, retries included, or ``None`` to pass it through."""
    if (not active_blocks() and _context.get() is None) or bypassed():
        return None
    first = _prepare(sdk, client, options, stream)
    if first is None:
        return None
    options = _keyed(client, options)

    def attempt(number: int) -> Plan[Any]:
        request = first if number == 0 else _prepare(sdk, client, options, stream)
        assert request is not None
        meter = request.meter
        yield from meter.plan_open()
        token = _pending.set(request)
        try:
            result = yield _Send(request.options(options))
        except BaseException as exc:
            # An HTTP error answer or a connection never made: released. A timeout, a
            # connection lost after sending, cancellation: charged in full.
            yield from meter.plan_fail(exc)
            raise
        finally:
            _pending.reset(token)
        if request.complete or not request.attached:
            # Read already (or never shown to us): charged now, from what was seen.
            tracker = request.watcher.tracker if request.watcher else None
            if tracker is None:
                yield from meter.plan_close(None, status="unwatched")
            else:
                yield from meter.plan_close(
                    tracker.usage, text=tracker.text, finished=tracker.finished
                )
        return result

    def delay_for(error: BaseException, number: int, left: int) -> float | None:
        return retry_delay(error, number, left, client, options)

    return plan_attempts(_max_retries(client, options) + 1, attempt, delay_for)


@functools.cache
def _sync_request(original: Callable[..., Any], sdk: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def request(self: Any, cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        plan = _request_plan(sdk, self, options, bool(kwargs.get("stream", False)))
        if plan is None:
            return original(self, cast_to, options, *args, **kwargs)
        return run_sync(plan, lambda send: original(self, cast_to, send.options, *args, **kwargs))

    request.__llmbudget_original__ = original  # type: ignore[attr-defined]
    return request


@functools.cache
def _async_request(original: Callable[..., Any], sdk: str) -> Callable[..., Any]:
    @functools.wraps(original)
    async def request(self: Any, cast_to: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        plan = _request_plan(sdk, self, options, bool(kwargs.get("stream", False)))
        if plan is None:
            return await original(self, cast_to, options, *args, **kwargs)

        async def send(effect: _Send) -> Any:
            return await original(self, cast_to, effect.options, *args, **kwargs)

        return await run_async(plan, send)

    request.__llmbudget_original__ = original  # type: ignore[attr-defined]
    return request


@functools.cache
def _process(original: Callable[..., Any]) -> Callable[..., Any]:
    # One wrapper for both clients: the async original's coroutine is returned as is.
    @functools.wraps(original)
    def process_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        request = _pending.get()
        response = kwargs.get("response")
        if request is not None and not request.attached and response is not None:
            request.attach(response)
        return original(self, *args, **kwargs)

    process_response.__llmbudget_original__ = original  # type: ignore[attr-defined]
    return process_response


# --------------------------------------------------------------------------- patching


def _budget_error_in(error: BaseException | None) -> LLMBudgetError | None:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, LLMBudgetError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@functools.cache
def _passing_budget_errors(map_exception: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(map_exception)
    def exception_type(*args: Any, **kwargs: Any) -> Any:
        original = kwargs.get("original_exception", args[1] if len(args) > 1 else None)
        ours = _budget_error_in(original) if isinstance(original, BaseException) else None
        return ours if ours is not None else map_exception(*args, **kwargs)

    exception_type.__llmbudget_original__ = map_exception  # type: ignore[attr-defined]
    return exception_type


def _litellm_targets() -> list[tuple[Any, str]]:
    """Where LiteLLM keeps its exception mapper: every loaded ``litellm`` module that
    imported ``exception_type`` by name (it wraps errors from the SDKs it calls in its
    own, so a refusal would reach its caller as ``litellm.InternalServerError``)."""

    def unwrapped(value: Any) -> Any:
        return getattr(value, "__llmbudget_original__", value)

    mapping = sys.modules.get("litellm.litellm_core_utils.exception_mapping_utils")
    original = unwrapped(getattr(mapping, "exception_type", None))
    if original is None:
        return []
    return [
        (module, "exception_type")
        for name, module in list(sys.modules.items())
        if name.startswith("litellm")
        and unwrapped(getattr(module, "exception_type", None)) is original
    ]


class _Patches:
    """Reference-counted patching of the SDK clients' ``request`` and
    ``_process_response`` methods."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._saved: list[tuple[Any, str, Callable[..., Any]]] = []
        self._missing: set[str] = set()

    def _targets(self) -> list[tuple[type, str, bool]]:
        # Imported here, not only patched if already imported: code inside the block may
        # import the SDK after entering it.
        found: list[tuple[type, str, bool]] = []
        for sdk in ("openai", "anthropic"):
            if sdk in self._missing:
                continue
            try:
                module = __import__(f"{sdk}._base_client", fromlist=["SyncAPIClient"])
            except ImportError:
                self._missing.add(sdk)  # an SDK that is not installed needs no patch
                continue
            found.append((module.SyncAPIClient, sdk, False))
            found.append((module.AsyncAPIClient, sdk, True))
        return found

    def acquire(self) -> None:
        with self._lock:
            self._count += 1
            if self._count > 1:
                return
            for cls, sdk, is_async in self._targets():
                request = cls.__dict__["request"]
                wrapped = _async_request(request, sdk) if is_async else _sync_request(request, sdk)
                process = cls.__dict__["_process_response"]
                for name, original, wrapper in (
                    ("request", request, wrapped),
                    ("_process_response", process, _process(process)),
                ):
                    setattr(cls, name, wrapper)
                    self._saved.append((cls, name, original))
            for module, name in _litellm_targets():
                original = getattr(module, name)
                setattr(module, name, _passing_budget_errors(original))
                self._saved.append((module, name, original))

    def release(self) -> None:
        with self._lock:
            self._count -= 1
            if self._count > 0:
                return
            for cls, name, original in self._saved:
                current = vars(cls).get(name)
                if getattr(current, "__llmbudget_original__", None) is original:
                    setattr(cls, name, original)
                else:  # someone patched over us since: leave their patch in place
                    logger.warning("llmbudget: %s.%s was re-patched; not restoring", cls, name)
            self._saved.clear()

    @property
    def active(self) -> bool:
        return self._count > 0


patches = _Patches()
