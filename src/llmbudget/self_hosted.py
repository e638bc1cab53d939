"""Self-hosted models cost $0, decided by who serves them, never by a missing price.

A call to a server on your own hardware bills nothing, so :class:`~llmbudget.BudgetManager`
charges it $0 *because of its provider*: the prefix of the model name (``ollama/llama3``)
or, for a LiteLLM response, the provider LiteLLM names in its ``_hidden_params``. An
unknown model of a paid provider still raises
:class:`~llmbudget.errors.UnknownModelError`: a typo in a paid model's name must not
make its calls free.

Self-hosted are the providers whose :class:`~llmbudget.providers.Provider` has
``local=True``: ``ollama`` (and LiteLLM's ``ollama_chat``), ``lm_studio``, ``vllm`` (and
``hosted_vllm``), ``llamafile`` and ``llama_cpp``. Mark your own deployments either way:

* a provider prefix: ``register_provider(Provider("gpu-box", "http://gpu:8000/v1",
  local=True, key_required=False))`` makes every ``gpu-box/...`` model self-hosted;
* one model name, whatever serves it: :func:`mark_self_hosted`.

>>> self_hosted_provider("ollama/llama3")
'ollama'
>>> self_hosted_provider("gpt-4o") is None
True
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from llmbudget.errors import InvalidInputError
from llmbudget.providers import Provider, providers

__all__ = ["mark_self_hosted", "self_hosted_provider"]

_lock = threading.Lock()
_marked: set[str] = set()


def mark_self_hosted(*models: str) -> None:
    """Treat these exact model names (case-insensitive) as self-hosted: $0 a call.

    >>> mark_self_hosted("openai/my-local-qwen")
    >>> self_hosted_provider("openai/my-local-qwen")
    'openai/my-local-qwen'
    """
    for model in models:
        if not isinstance(model, str) or not model.strip():
            raise InvalidInputError(f"model must be a non-empty string, got {model!r}")
    with _lock:
        _marked.update(m.strip().lower() for m in models)


def self_hosted_provider(model: str | None, response: object = None) -> str | None:
    """Who serves ``model`` (or produced ``response``) if it is self-hosted, else ``None``.

    Returns the provider's name, or the model name itself when it was marked with
    :func:`mark_self_hosted`.
    """
    if isinstance(model, str) and model.strip():
        key = model.strip().lower()
        with _lock:
            if key in _marked:
                return model.strip()
        prefix, _, rest = key.partition("/")
        if rest:
            found = _provider(prefix)
            if found is not None and found.local:
                return found.name
    named = _litellm_provider(response)
    if named is not None:
        found = _provider(named)
        if found is not None and found.local:
            return found.name
    return None


def _provider(name: str) -> Provider | None:
    key = name.strip().lower()
    for provider in providers().values():
        if key == provider.name or key in provider.aliases:
            return provider
    return None


def _litellm_provider(response: object) -> str | None:
    # LiteLLM's ModelResponse keeps the provider it routed to in ``_hidden_params``
    # (a vLLM or Ollama response's ``model`` is often the bare model id).
    if response is None:
        return None
    hidden = (
        response.get("_hidden_params")
        if isinstance(response, Mapping)
        else getattr(response, "_hidden_params", None)
    )
    if not isinstance(hidden, Mapping):
        return None
    name = hidden.get("custom_llm_provider")
    return name if isinstance(name, str) and name else None
