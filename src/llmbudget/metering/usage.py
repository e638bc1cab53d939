"""What a finished call is charged: from its usage, else counted, else its reservation.

1. **Usage** the provider reported (any shape :func:`~llmbudget.pricing.normalize_usage`
   reads), priced exactly.
2. Without usage, for a call **known to have finished** (a finish reason arrived, or a
   complete JSON body): the prompt tokens counted before sending plus the tokens of the
   generated text seen (content, reasoning, refusals, tool-call names and arguments),
   counted offline. Not for models that reason without showing it (``BillableCall.
   hidden_reasoning``): their hidden tokens are billed and cannot be counted, so rule 3
   applies — a documented over-estimate.
3. Otherwise (a stream cut short, a body never read, unreadable usage): the **whole
   reservation**, since the provider may have produced, and billed, output never seen.

>>> from decimal import Decimal
>>> from llmbudget.metering.calls import BillableCall
>>> from llmbudget.pricing import ModelPrice
>>> price = ModelPrice("m", "x", Decimal(1), Decimal(2))
>>> call = BillableCall("chat", "m", prompt_tokens=10)
>>> charge(price, call, usage={"prompt_tokens": 10, "completion_tokens": 5},
...        text=None, finished=True, reserved=Decimal("0.01")).source
'upstream'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from llmbudget.errors import InvalidInputError, PricingError
from llmbudget.metering.calls import BillableCall
from llmbudget.pricing import ModelPrice, TokenUsage, normalize_usage

__all__ = ["Charged", "charge"]

log = logging.getLogger(__name__)

Source = Literal["upstream", "counted", "reserved"]


@dataclass(frozen=True, slots=True)
class Charged:
    """The cost to settle, the tokens it stands for (``None`` when only the reservation is
    known) and where it came from."""

    cost: Decimal
    tokens: TokenUsage | None
    source: Source

    @property
    def estimated(self) -> bool:
        return self.source != "upstream"

    def token_count(self, reserved: int) -> int:
        """The tokens to settle on a budget in tokens, by the same three rules: input plus
        output of the usage or of the counted text, else ``reserved`` (the worst case).

        >>> Charged(Decimal(0), TokenUsage(input_tokens=10, output_tokens=5), "counted").token_count(99)
        15
        """
        if self.tokens is None:
            return reserved
        return self.tokens.input_tokens + self.tokens.output_tokens


def charge(
    price: ModelPrice | None,
    call: BillableCall,
    *,
    usage: object,
    text: str | None,
    finished: bool,
    reserved: Decimal,
) -> Charged:
    """What to settle for ``call`` (the three rules of the module doc). ``price`` is
    ``None`` for a model that costs nothing (a local server's)."""
    if usage is not None:
        try:
            tokens = normalize_usage(usage)
            return Charged(price.cost(tokens) if price else Decimal(0), tokens, "upstream")
        except (PricingError, InvalidInputError, TypeError, ValueError):
            log.warning("llmbudget: unreadable usage %r; charging the reservation", usage)
            return Charged(reserved, None, "reserved")
    if finished and text is not None and not call.hidden_reasoning:
        from llmbudget.tokens import count_tokens

        output = count_tokens(text, call.counter) if text and call.has_output else 0
        tokens = TokenUsage(input_tokens=call.prompt_tokens, output_tokens=output)
        return Charged(price.cost(tokens) if price else Decimal(0), tokens, "counted")
    return Charged(reserved, None, "reserved")
