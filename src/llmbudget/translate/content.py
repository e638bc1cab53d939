"""Content of either API as plain text: what both directions of translation share.

>>> text_of([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
'ab'
"""

from __future__ import annotations

from collections.abc import Sequence

from llmbudget.fields import get as _get

__all__ = ["text_of"]


def text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(str(_get(part, "text") or "") for part in content)
    return "" if content is None else str(content)
