"""What is forwarded: the request body rewritten so the upstream cannot exceed the hold.

* Every output-limit field of the API is removed and the reserved cap is sent in **one**
  field, the one the upstream reads (``max_completion_tokens`` for OpenAI's own servers,
  ``max_tokens`` for other chat servers, ``max_output_tokens`` for Responses): a second,
  larger limit in another field could let a server generate past the reservation.
* A chat or legacy-completions stream asks for its usage chunk
  (``stream_options.include_usage``), so the real usage is known when it ends; the door
  hides that chunk again from a caller who did not ask for it.

>>> forward({"model": "m", "max_tokens": 9, "max_completion_tokens": 9, "stream": True},
...         "chat", cap=9, cap_field="max_tokens", stream=True)
{'model': 'm', 'stream': True, 'max_tokens': 9, 'stream_options': {'include_usage': True}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmbudget.metering.calls import API_CAP_FIELDS

__all__ = ["forward", "needs_usage_request"]


def needs_usage_request(api: str, stream: bool) -> bool:
    """Whether a stream of ``api`` reports usage only when asked for it."""
    return stream and api in ("chat", "completions")


def forward(
    body: Mapping[str, Any],
    api: str,
    *,
    cap: int | None,
    cap_field: str | None = None,
    stream: bool = False,
) -> dict[str, Any]:
    """A copy of ``body`` to send: ``cap`` (when not ``None``) in ``cap_field`` (default:
    the API's classic field) and nothing in the other limit fields; the usage chunk asked
    for on a chat or completions stream."""
    out = dict(body)
    fields = API_CAP_FIELDS.get(api, ())
    if cap is not None and fields:
        for name in fields:
            out.pop(name, None)
        out[cap_field or fields[-1]] = cap
    if needs_usage_request(api, stream):
        options = dict(out.get("stream_options") or {})
        options["include_usage"] = True
        out["stream_options"] = options
    return out
