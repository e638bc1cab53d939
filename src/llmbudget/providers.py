"""Where a model name sends a call: the provider table, and provider errors.

``completion(model="groq/llama-3.1-8b-instant", ...)`` picks the provider from the prefix
before the first ``/``; the rest is the model id sent to that provider. Bare names go to
OpenAI, except ``claude-*`` which go to Anthropic. Every provider except Anthropic speaks
the OpenAI wire format and is called through the official ``openai`` SDK with the table's
base URL and API key (read from the environment variable the table names).

>>> route = resolve("groq/llama-3.1-8b-instant")
>>> route.provider.name, route.model, route.pricing_model
('groq', 'llama-3.1-8b-instant', 'groq/llama-3.1-8b-instant')
>>> resolve("claude-3-5-haiku-latest").provider.kind
'anthropic'

Any OpenAI-compatible server works without a table entry: pass ``api_base=`` (the model
name is then sent as given), or :func:`register_provider` a new :class:`Provider`.

The base URL of a table entry can be overridden per call (``api_base=``) or by the
environment variable ``<NAME>_API_BASE`` (e.g. ``OLLAMA_API_BASE``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from llmbudget.errors import InvalidInputError, ProviderError

__all__ = [
    "Provider",
    "ProviderAuthError",
    "ProviderBadRequestError",
    "ProviderConnectionError",
    "ProviderRateLimitError",
    "ProviderServerError",
    "ProviderTimeoutError",
    "Route",
    "map_sdk_error",
    "providers",
    "register_provider",
    "resolve",
]

Kind = Literal["openai", "azure", "anthropic"]


@dataclass(frozen=True, slots=True)
class Provider:
    """One provider: how to reach it and how its models are priced.

    ``kind`` is the wire format (``"openai"`` for every OpenAI-compatible server,
    ``"azure"`` for Azure OpenAI, ``"anthropic"`` for Anthropic's Messages API).
    ``api_key_env`` lists environment variables tried in order. ``local`` marks servers on
    your own hardware: a model they serve that has no known price costs $0.
    ``pricing_prefix`` is the provider name used to look prices up (``""``: the bare model
    name, as for OpenAI's own models). ``max_tokens_param`` is the request field that caps
    output tokens on the provider's own servers (OpenAI deprecated ``max_tokens`` for
    ``max_completion_tokens``; other servers, and OpenAI's when ``api_base`` points
    elsewhere, get the classic ``max_tokens``).
    """

    name: str
    base_url: str | None
    api_key_env: tuple[str, ...] = ()
    kind: Kind = "openai"
    local: bool = False
    pricing_prefix: str | None = None
    max_tokens_param: str = "max_tokens"
    aliases: tuple[str, ...] = ()
    key_required: bool = True
    extra_headers: Mapping[str, str] = field(default_factory=dict)

    def api_key(self, given: str | None = None) -> str | None:
        """The key to send: ``given``, else the first set environment variable."""
        if given:
            return given
        for name in self.api_key_env:
            value = os.environ.get(name)
            if value:
                return value
        return None

    def base(self, given: str | None = None) -> str | None:
        """The base URL: ``given``, else ``$<NAME>_API_BASE``, else the table's."""
        if given:
            return given
        env = os.environ.get(f"{self.name.upper()}_API_BASE")
        return env or self.base_url

    def price_name(self, model: str) -> str:
        prefix = self.name if self.pricing_prefix is None else self.pricing_prefix
        return f"{prefix}/{model}" if prefix else model


def _p(name: str, base_url: str | None, *keys: str, **options: object) -> Provider:
    return Provider(name, base_url, tuple(keys), **options)  # type: ignore[arg-type]


# Base URLs are the providers' documented OpenAI-compatible endpoints.
_TABLE: tuple[Provider, ...] = (
    _p(
        "openai",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        pricing_prefix="",
        max_tokens_param="max_completion_tokens",
    ),
    _p(
        "azure",
        None,
        "AZURE_API_KEY",
        "AZURE_OPENAI_API_KEY",
        kind="azure",
        pricing_prefix="",  # Azure bills OpenAI's list prices for the same models
        max_tokens_param="max_completion_tokens",
        aliases=("azure_openai",),
    ),
    _p(
        "anthropic",
        "https://api.anthropic.com",
        "ANTHROPIC_API_KEY",
        kind="anthropic",
        pricing_prefix="anthropic",
    ),
    _p("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    _p(
        "together_ai",
        "https://api.together.xyz/v1",
        "TOGETHER_API_KEY",
        "TOGETHERAI_API_KEY",
        aliases=("together",),
    ),
    _p(
        "fireworks_ai",
        "https://api.fireworks.ai/inference/v1",
        "FIREWORKS_API_KEY",
        "FIREWORKS_AI_API_KEY",
        aliases=("fireworks",),
    ),
    _p("deepseek", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    _p("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    _p("xai", "https://api.x.ai/v1", "XAI_API_KEY", aliases=("grok",)),
    _p("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    _p("perplexity", "https://api.perplexity.ai", "PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"),
    _p("cerebras", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
    _p(
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta/openai/",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        aliases=("google",),
    ),
    _p("deepinfra", "https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
    _p(
        "nvidia_nim",
        "https://integrate.api.nvidia.com/v1",
        "NVIDIA_NIM_API_KEY",
        "NVIDIA_API_KEY",
        aliases=("nvidia",),
    ),
    _p("sambanova", "https://api.sambanova.ai/v1", "SAMBANOVA_API_KEY"),
    _p("anyscale", "https://api.endpoints.anyscale.com/v1", "ANYSCALE_API_KEY"),
    _p("hyperbolic", "https://api.hyperbolic.xyz/v1", "HYPERBOLIC_API_KEY"),
    _p("moonshot", "https://api.moonshot.ai/v1", "MOONSHOT_API_KEY", aliases=("kimi",)),
    _p("novita", "https://api.novita.ai/v3/openai", "NOVITA_API_KEY"),
    _p("nebius", "https://api.studio.nebius.com/v1", "NEBIUS_API_KEY"),
    _p("dashscope", "https://dashscope-intl.aliyuncs.com/compatible-mode/v1", "DASHSCOPE_API_KEY"),
    _p("huggingface", "https://router.huggingface.co/v1", "HF_TOKEN", "HUGGINGFACE_API_KEY"),
    _p("github", "https://models.github.ai/inference", "GITHUB_TOKEN"),
    _p("featherless_ai", "https://api.featherless.ai/v1", "FEATHERLESS_API_KEY"),
    _p("lambda_ai", "https://api.lambda.ai/v1", "LAMBDA_API_KEY"),
    _p("cohere", "https://api.cohere.ai/compatibility/v1", "COHERE_API_KEY"),
    # Servers on your own machine: no key, and their models cost nothing unless priced.
    _p(
        "ollama",
        "http://localhost:11434/v1",
        "OLLAMA_API_KEY",
        local=True,
        key_required=False,
        aliases=("ollama_chat",),
    ),
    _p(
        "lm_studio",
        "http://localhost:1234/v1",
        "LM_STUDIO_API_KEY",
        local=True,
        key_required=False,
        aliases=("lmstudio",),
    ),
    _p(
        "vllm",
        "http://localhost:8000/v1",
        "VLLM_API_KEY",
        local=True,
        key_required=False,
        aliases=("hosted_vllm",),
    ),
    _p("llamafile", "http://localhost:8080/v1", local=True, key_required=False),
    _p(
        "llama_cpp",
        "http://localhost:8080/v1",  # llama.cpp's llama-server
        local=True,
        key_required=False,
        aliases=("llamacpp", "llama.cpp"),
    ),
    # Any OpenAI-compatible server: api_base is required, the model name is sent as given.
    _p(
        "openai_compatible",
        None,
        "OPENAI_COMPATIBLE_API_KEY",
        key_required=False,
        pricing_prefix="",
        aliases=("custom", "custom_openai"),
    ),
)

_lock = threading.Lock()
_providers: dict[str, Provider] = {}
_aliases: dict[str, str] = {}


def register_provider(provider: Provider) -> Provider:
    """Add (or replace) a provider, reachable as ``<name>/<model>`` and by its aliases.

    >>> _ = register_provider(Provider("acme", "https://llm.acme.test/v1", ("ACME_KEY",)))
    >>> resolve("acme/big-1").base_url
    'https://llm.acme.test/v1'
    """
    name = provider.name.strip().lower()
    if not name or "/" in name:
        raise InvalidInputError(f"provider name must be non-empty and contain no '/': {name!r}")
    with _lock:
        _providers[name] = provider
        for alias in provider.aliases:
            _aliases[alias.lower()] = name
    return provider


for _provider in _TABLE:
    register_provider(_provider)


def providers() -> dict[str, Provider]:
    """Every known provider by name."""
    with _lock:
        return dict(_providers)


def _lookup(name: str) -> Provider | None:
    key = name.strip().lower()
    with _lock:
        return _providers.get(_aliases.get(key, key))


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved call: the provider, the model id it is sent, the name it is priced by,
    and the connection details (base URL, key, Azure API version)."""

    provider: Provider
    model: str
    pricing_model: str
    base_url: str | None
    api_key: str | None
    api_version: str | None = None


def resolve(
    model: str,
    *,
    provider: str | None = None,
    api_base: str | None = None,
    api_key: str | None = None,
    api_version: str | None = None,
) -> Route:
    """Turn ``model`` (``"provider/model"`` or a bare name) into a :class:`Route`.

    ``provider=`` forces one (as LiteLLM's ``custom_llm_provider``). With ``api_base`` and
    an unknown prefix, the whole name is sent to that server as the model id.
    """
    if not isinstance(model, str) or not model.strip():
        raise InvalidInputError(f"model must be a non-empty string, got {model!r}")
    model = model.strip()
    chosen: Provider | None = None
    sent = model
    if provider is not None:
        chosen = _lookup(provider)
        if chosen is None:
            raise InvalidInputError(f"unknown provider {provider!r}; known: {_names()}")
        prefix, _, rest = model.partition("/")
        if rest and _lookup(prefix) is chosen:
            sent = rest
    elif "/" in model:
        prefix, _, rest = model.partition("/")
        chosen = _lookup(prefix)
        if chosen is not None:
            sent = rest
        elif api_base:
            chosen = _lookup("openai_compatible")
        else:
            raise InvalidInputError(
                f"unknown provider {prefix!r} in model {model!r}; known: {_names()} "
                "(or pass api_base= for any OpenAI-compatible server)"
            )
    elif model.lower().startswith("claude"):
        chosen = _lookup("anthropic")
    else:
        # A bare name is OpenAI's (api_base, if given, only changes where it is sent).
        chosen = _lookup("openai")
    assert chosen is not None
    if not sent:
        raise InvalidInputError(f"model {model!r} names a provider but no model")
    version = None
    base = chosen.base(api_base)
    if chosen.kind == "azure":
        base = base or os.environ.get("AZURE_API_BASE") or os.environ.get("AZURE_OPENAI_ENDPOINT")
        version = (
            api_version
            or os.environ.get("AZURE_API_VERSION")
            or os.environ.get("OPENAI_API_VERSION")
            or "2024-10-21"
        )
    if base is None:
        raise InvalidInputError(f"provider {chosen.name!r} needs api_base= (its server's URL)")
    key = chosen.api_key(api_key)
    if key is None and not chosen.key_required:
        # The openai SDK refuses an empty key; local servers ignore whatever is sent.
        key = "not-needed"
    return Route(chosen, sent, chosen.price_name(sent), base, key, version)


def _names() -> str:
    with _lock:
        return ", ".join(sorted(_providers))


# --------------------------------------------------------------------------- errors


class ProviderAuthError(ProviderError):
    """The provider refused the credentials (HTTP 401/403)."""


class ProviderRateLimitError(ProviderError):
    """The provider is rate limiting (HTTP 429). ``retry_after`` in seconds when sent."""

    retry_after: float | None = None


class ProviderBadRequestError(ProviderError):
    """The provider refused the request itself (HTTP 400/404/422...)."""


class ProviderServerError(ProviderError):
    """The provider failed (HTTP 5xx)."""


class ProviderConnectionError(ProviderError):
    """The provider could not be reached."""


class ProviderTimeoutError(ProviderConnectionError):
    """The provider did not answer in time. It may still have processed (and billed) the
    request, so :func:`llmbudget.completion` charges the call its whole reservation."""


def map_sdk_error(exc: BaseException, provider: str) -> ProviderError | None:
    """The typed :class:`ProviderError` for an ``openai``/``anthropic`` SDK exception,
    or ``None`` when ``exc`` is not one (the caller re-raises it unchanged)."""
    module = type(exc).__module__.split(".", 1)[0]
    if module not in ("openai", "anthropic"):
        return None
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    message = f"{provider}: {exc}"
    error: ProviderError
    if name == "APITimeoutError":
        error = ProviderTimeoutError(message, provider=provider, body=body)
    elif name == "APIConnectionError":
        error = ProviderConnectionError(message, provider=provider, body=body)
    elif isinstance(status, int):
        cls: type[ProviderError]
        if status in (401, 403):
            cls = ProviderAuthError
        elif status == 429:
            cls = ProviderRateLimitError
        elif status >= 500:
            cls = ProviderServerError
        else:
            cls = ProviderBadRequestError
        error = cls(message, provider=provider, status_code=status, body=body)
        if isinstance(error, ProviderRateLimitError):
            error.retry_after = _retry_after(exc)
    elif name.endswith(("Error", "Exception")) and hasattr(exc, "request"):
        error = ProviderError(message, provider=provider, body=body)
    else:
        return None
    return error


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
