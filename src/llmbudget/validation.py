"""Checks for every value that crosses a boundary, written once.

The ledger, the stores' shared checks (:mod:`llmbudget.stores.base`), the server and the
gateway configuration all refuse bad input through these functions, so every door refuses
the same values with the same typed error (an :class:`~llmbudget.errors.InvalidInputError`)
before anything is stored. Money lives in :mod:`llmbudget.money`; periods whose windows
cannot be computed are refused by :class:`~llmbudget.periods.Period` itself, against the
range of timestamps defined here.

Limits, the same on every store:

* names and ids are strings of valid Unicode (no lone surrogates), without NUL, at most
  :data:`MAX_NAME_BYTES` (scopes, models, kinds, keys) or :data:`MAX_ID_BYTES` (hold and
  charge ids) bytes of UTF-8. PostgreSQL's index entries are the tightest bound: a hold's
  row indexes its scope and its id together.
* timestamps are finite numbers of epoch seconds in ``[MIN_TIMESTAMP, MAX_TIMESTAMP]``
  (1900 to 3000): every window of every accepted period can be computed from there until
  100 years later (:data:`HORIZON`).
* a ttl is a finite number of seconds from :data:`MIN_TTL` (1 ms) to :data:`MAX_TTL`
  (366 days).
* counters and amounts are integers of nano-dollars within int64.

>>> check_ttl(30)
30.0
>>> check_name("gpt-4o", "model")
'gpt-4o'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from llmbudget.errors import (
    InvalidAmountError,
    InvalidInputError,
    InvalidNameError,
    InvalidTimeError,
)

__all__ = [
    "HORIZON",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_ID_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_NAME_BYTES",
    "MAX_TIMESTAMP",
    "MAX_TTL",
    "MIN_TIMESTAMP",
    "MIN_TTL",
    "check_id",
    "check_int",
    "check_int64",
    "check_json_object",
    "check_name",
    "check_seconds",
    "check_text",
    "check_timestamp",
    "check_ttl",
    "check_units",
    "text_problem",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_NAME_BYTES = 1024
# A server hold id is "api:<scope>:<client id>": room for a full scope and 128 more bytes.
MAX_ID_BYTES = MAX_NAME_BYTES + 256
MIN_TIMESTAMP = -2_208_988_800.0  # 1900-01-01T00:00:00Z
MAX_TIMESTAMP = 32_503_680_000.0  # 3000-01-01T00:00:00Z
HORIZON = 35_659_353_600.0  # 3100-01-01T00:00:00Z: MAX_TIMESTAMP + 100 years
MAX_TTL = 366 * 86_400.0
# Below a millisecond, now + ttl may round back to now: a hold expired as it is made.
MIN_TTL = 0.001
MAX_JSON_DEPTH = 32


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text on every store (``None``: it can)."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (no lone surrogates)"
    return None


def check_text(value: object, what: str, *, max_bytes: int, allow_empty: bool = False) -> str:
    """A string every store keeps as it is: valid Unicode, no NUL, at most ``max_bytes``
    bytes of UTF-8 (and non-empty unless ``allow_empty``)."""
    if not isinstance(value, str):
        raise InvalidNameError(f"{what} must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise InvalidNameError(f"{what} must not be empty")
    problem = text_problem(value)
    if problem is not None:
        raise InvalidNameError(f"{what} {problem}")
    size = len(value.encode("utf-8"))
    if size > max_bytes:
        raise InvalidNameError(f"{what} is {size} bytes of UTF-8; the limit is {max_bytes}")
    return value


def check_name(value: object, what: str, *, allow_empty: bool = False) -> str:
    """A scope, model, document kind or key, or a listing prefix (``allow_empty``)."""
    return check_text(value, what, max_bytes=MAX_NAME_BYTES, allow_empty=allow_empty)


def check_id(value: object, what: str = "hold id") -> str:
    """A hold or charge id."""
    return check_text(value, what, max_bytes=MAX_ID_BYTES)


def _real(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidTimeError(
            f"{what} must be a number of seconds, got {type(value).__name__} {value!r}"
        )
    try:
        number = float(value)
    except OverflowError:  # an int beyond a float
        raise InvalidTimeError(f"{what} is out of range: {value!r}") from None
    if not math.isfinite(number):
        raise InvalidTimeError(f"{what} must be finite, got {value!r}")
    return number


def check_timestamp(value: object, what: str = "timestamp") -> float:
    """Epoch seconds between 1900 and 3000, as a float.

    >>> check_timestamp(1_700_000_000)
    1700000000.0
    """
    number = _real(value, what)
    if not MIN_TIMESTAMP <= number <= MAX_TIMESTAMP:
        raise InvalidTimeError(
            f"{what} {value!r} is outside the usable range (epoch seconds from "
            f"{MIN_TIMESTAMP:.0f}, the year 1900, to {MAX_TIMESTAMP:.0f}, the year 3000)"
        )
    return number


def check_ttl(value: object, what: str = "ttl") -> float:
    """A hold lifetime: finite seconds from :data:`MIN_TTL` to :data:`MAX_TTL`."""
    number = _real(value, what)
    if not MIN_TTL <= number <= MAX_TTL:
        raise InvalidTimeError(
            f"{what} must be from {MIN_TTL} to {MAX_TTL:.0f} seconds, got {value!r}"
        )
    return number


def check_seconds(value: object, what: str) -> float:
    """A non-negative finite duration in seconds (a retention, a bound of a time range)."""
    number = _real(value, what)
    if number < 0:
        raise InvalidTimeError(f"{what} must not be negative, got {value!r}")
    return number


def check_int(value: object, what: str, low: int, high: int) -> int:
    """An integer (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{what} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidInputError(f"{what} must be between {low} and {high}, got {value}")
    return value


def check_int64(value: object, what: str) -> int:
    """A window key or other signed 64-bit integer."""
    return check_int(value, what, INT64_MIN, INT64_MAX)


def check_units(value: object, what: str = "amount") -> int:
    """Nano-dollars as a store keeps them: an integer in ``[0, INT64_MAX]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmountError(
            f"{what} must be an integer number of nano-dollars, got {type(value).__name__}"
        )
    if not 0 <= value <= INT64_MAX:
        raise InvalidAmountError(f"{what} must be between 0 and {INT64_MAX} nano-dollars")
    return value


def check_json_object(value: object, what: str = "document") -> dict[str, Any]:
    """A JSON object every store returns unchanged: string keys, finite numbers (Python's
    ``json`` lets NaN through, which no JSON reply could carry back), text without NUL or
    lone surrogates, nesting at most :data:`MAX_JSON_DEPTH` deep."""
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{what} must be a JSON object, got {type(value).__name__}")

    def walk(node: object, depth: int, where: str) -> None:
        if depth > MAX_JSON_DEPTH:
            raise InvalidInputError(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
        if node is None or isinstance(node, bool | int):
            return
        if isinstance(node, float):
            if not math.isfinite(node):
                raise InvalidInputError(f"{what}{where}: numbers must be finite")
        elif isinstance(node, str):
            problem = text_problem(node)
            if problem is not None:
                raise InvalidInputError(f"{what}{where}: text {problem}")
        elif isinstance(node, Mapping):
            for key, item in node.items():
                if not isinstance(key, str):
                    raise InvalidInputError(f"{what}{where}: object keys must be strings")
                problem = text_problem(key)
                if problem is not None:
                    raise InvalidInputError(f"{what}{where}: a key {problem}")
                walk(item, depth + 1, f"{where}.{key}")
        elif isinstance(node, list | tuple):
            for index, item in enumerate(node):
                walk(item, depth + 1, f"{where}[{index}]")
        else:
            raise InvalidInputError(f"{what}{where}: {type(node).__name__} is not JSON")

    walk(value, 0, "")
    return dict(value)
