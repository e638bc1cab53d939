"""The worst case of a call and the output cap it may be sent with: one rule for every door.

**Worst case.** The most a :class:`~llmbudget.metering.calls.BillableCall` can cost with
``cap`` output tokens per choice: its prompt at the dearest input rate it may be billed at
(the cache-write prices when the prompt is marked for caching), plus ``n × cap`` output
tokens at the dearest output rate (reasoning or audio output when those cost more than
text). A prompt the server extends with turns we cannot see (``previous_response_id``)
counts as the whole context window.

**The output cap.** What is forwarded, so the upstream cannot produce more than was
reserved:

1. the caller's own limit, if it gave one (never lowered: reserved as asked, or refused);
2. else, when any budget limits the call or the API demands a limit (Anthropic), the
   model's output limit — the deployment's ``max_output_tokens``, else the price data's,
   else :data:`DEFAULT_OUTPUT_CAP` — and never more than the context window leaves after
   the prompt;
3. else (nothing limited) no cap is added: spend is only tracked.

When the reserve for (2) is refused, the cap is lowered to what the refusing budget can
still pay (:func:`affordable_cap`) and the reserve tried again; below
:data:`MIN_OUTPUT_TOKENS` the call is refused. ``projected_cost`` and
``worst_case_cost`` use the same cap.

**In tokens.** A budget in tokens (a rate limit) holds the same worst case counted in
tokens (:func:`worst_case_tokens`: the prompt, or the whole context window for a prompt
the server extends, plus ``n × cap``), and a refusal by it lowers the cap the same way
(:func:`affordable_tokens_cap`).

>>> from decimal import Decimal
>>> from llmbudget.metering.calls import BillableCall
>>> from llmbudget.pricing import ModelPrice
>>> price = ModelPrice("m", "x", Decimal(1), Decimal(2))
>>> worst_case(price, BillableCall("chat", "m", prompt_tokens=1000), 500)
Decimal('0.002')
>>> affordable_cap(price, BillableCall("chat", "m", prompt_tokens=1000), Decimal("0.002"))
500
>>> worst_case_tokens(price, BillableCall("chat", "m", prompt_tokens=1000, n=2), 500)
2000
"""

from __future__ import annotations

from decimal import Decimal

from llmbudget.metering.calls import BillableCall
from llmbudget.pricing import ModelPrice, TokenUsage

__all__ = [
    "DEFAULT_OUTPUT_CAP",
    "MIN_OUTPUT_TOKENS",
    "affordable_cap",
    "affordable_tokens_cap",
    "default_cap",
    "worst_case",
    "worst_case_tokens",
]

#: Output cap sent when a budget applies, the caller set none, and the model's maximum
#: output is not known: small enough that every chat model accepts it (the context window
#: would not be: gpt-4o's 128,000 is past its 16,384-token output limit).
DEFAULT_OUTPUT_CAP = 4096
#: Fewest output tokens a lowered cap may leave; below it the call is refused. The library
#: refuses only when not even one token fits; the gateway sets its own floor
#: (``general_settings.min_completion_tokens``, 16 by default).
MIN_OUTPUT_TOKENS = 1


def _prompt(price: ModelPrice | None, call: BillableCall) -> int:
    if call.unbounded_prompt and price is not None and price.context_window:
        return max(call.prompt_tokens, price.context_window)
    return call.prompt_tokens


def worst_case_tokens(price: ModelPrice | None, call: BillableCall, cap: int) -> int:
    """Most tokens ``call`` can use with at most ``cap`` output tokens per choice: the
    prompt (the whole context window when the server may extend it) plus ``n × cap``.
    ``price`` only supplies the context window (``None``: unknown)."""
    return _prompt(price, call) + (cap * call.n if call.has_output else 0)


def affordable_tokens_cap(price: ModelPrice | None, call: BillableCall, room: int) -> int:
    """Largest per-choice output cap whose worst case fits in ``room`` tokens (0: none)."""
    if not call.has_output:
        return 0
    return max(0, (room - _prompt(price, call)) // call.n)


def worst_case(price: ModelPrice, call: BillableCall, cap: int) -> Decimal:
    """Most ``call`` can cost with at most ``cap`` output tokens per choice."""
    prompt = _prompt(price, call)
    output = cap * call.n if call.has_output else 0
    # Priced as whole usages (not input and output apart): tiers follow the prompt size.
    inputs: list[dict[str, int]] = [{}]
    if call.cache_writes and prompt:
        inputs += [
            {"cache_write_tokens": prompt},
            {"cache_write_tokens": prompt, "cache_write_1h_tokens": prompt},
        ]
    outputs: list[dict[str, int]] = [{}]
    if output:
        text = price.rate("output_per_mtok", prompt) or Decimal(0)
        reasoning = price.rate("output_reasoning_per_mtok", prompt)
        audio = price.rate("output_audio_per_mtok", prompt)
        if reasoning is not None and reasoning > text:
            outputs.append({"reasoning_tokens": output})
        if audio is not None and audio > text:
            outputs.append({"output_audio_tokens": output})
    return max(
        price.cost(TokenUsage(input_tokens=prompt, output_tokens=output, **i, **o))
        for i in inputs
        for o in outputs
    )


def default_cap(price: ModelPrice | None, call: BillableCall, configured: int | None = None) -> int:
    """The output cap to forward when the caller gave none (rule 2 of the module doc)."""
    cap = configured or (price.max_output_tokens if price else None) or DEFAULT_OUTPUT_CAP
    if call.requires_cap and not configured:
        # Anthropic's SDK refuses a large max_tokens without streaming, and the field is
        # compulsory there: keep its default at the conventional 4096.
        cap = min(cap, DEFAULT_OUTPUT_CAP)
    window = price.context_window if price else None
    if window:
        cap = min(cap, max(1, window - call.prompt_tokens))
    return cap


def affordable_cap(price: ModelPrice, call: BillableCall, room: Decimal) -> int:
    """Largest per-choice output cap whose worst case fits in ``room`` dollars (0: none)."""
    base = worst_case(price, call, 0)
    if base > room:
        return 0
    one = worst_case(price, call, 1)
    per_token = one - base
    if per_token <= 0:
        return 0  # output is free: lowering the cap cannot make the call fit
    cap = int((room - base) / per_token)
    # The linear estimate ignores rounding and tiers: step until the exact cost fits.
    while cap > 0 and worst_case(price, call, cap) > room:
        cap -= 1
    while worst_case(price, call, cap + 1) <= room and cap < 10**9:
        cap += 1
    return cap
