"""JSON responses whose :class:`~decimal.Decimal` values are numbers, written exactly.

LiteLLM's admin API answers money as JSON numbers; this writes them from the exact decimal
text (``0.000000001``, never ``1e-09``, never rounded through a float).

>>> ExactJSONResponse({"spend": Decimal("0.000000001")}).body
b'{"spend":0.000000001}'
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from starlette.responses import Response

from llmbudget.money import format_money

__all__ = ["ExactJSONResponse"]


class ExactJSONResponse(Response):
    """JSON in which :class:`~decimal.Decimal` values are numbers written exactly."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        marker = secrets.token_hex(8)
        numbers: list[str] = []

        def walk(value: Any) -> Any:
            if isinstance(value, Decimal):
                numbers.append(format_money(value))
                return f"\x00{marker}:{len(numbers) - 1}\x00"
            if isinstance(value, Mapping):
                return {k: walk(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [walk(v) for v in value]
            return value

        text = json.dumps(walk(content), ensure_ascii=False, separators=(",", ":"))
        # The marker is random per response: no string in the content can forge one.
        pattern = re.compile(rf'"\\u0000{marker}:(\d+)\\u0000"')
        return pattern.sub(lambda m: numbers[int(m.group(1))], text).encode("utf-8")
