"""Reading fields of provider payloads that may be mappings or SDK objects.

Responses, usage blocks and stream events reach llmbudget as parsed JSON (the gateway),
as pydantic objects (the ``openai`` / ``anthropic`` SDKs) or as LiteLLM's objects. These
three helpers read all of them the same way.

>>> get({"usage": {"prompt_tokens": 3}}, "usage")
{'prompt_tokens': 3}
>>> first(None, "a", "b") is None
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["as_dict", "first", "get"]


def get(obj: object, key: str) -> Any:
    """``obj[key]`` for a mapping, ``obj.key`` otherwise; ``None`` when absent."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def first(obj: object, *keys: str) -> Any:
    """The first of ``keys`` that ``obj`` has a non-``None`` value for."""
    for key in keys:
        value = get(obj, key)
        if value is not None:
            return value
    return None


def as_dict(obj: object) -> dict[str, Any]:
    """A plain ``dict`` copy of a mapping, a pydantic model or a simple object."""
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return dict(obj)
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        dumped = dump()
        if isinstance(dumped, Mapping):
            return dict(dumped)
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
