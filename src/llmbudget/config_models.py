"""Strict configuration models: a typo in a config file is an error naming its path.

The gateway's and the server's config files are described by pydantic models built on
:class:`StrictModel`: every mapping refuses keys it does not know, with the path of the
bad key and the closest known key ("did you mean ..."), a field given under two of its
aliases (``budget`` and ``max_budget``) is refused, and scalars are strict (``"yes"`` is
not ``true``). :func:`parse` turns pydantic's errors into one
:class:`~llmbudget.errors.InvalidInputError`.

>>> class Settings(StrictModel):
...     master_key: str | None = None
>>> try:
...     parse(Settings, {"master_kye": "x"}, "general_settings")
... except InvalidInputError as exc:
...     print(exc)
general_settings.master_kye: unknown key; did you mean 'master_key'?
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from llmbudget.errors import InvalidInputError

__all__ = ["StrictModel", "format_errors", "parse"]

M = TypeVar("M", bound=BaseModel)
_MAX_SHOWN = 5


class StrictModel(BaseModel):
    """A config mapping: unknown keys, and one field given under two names, are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @classmethod
    def key_names(cls) -> dict[str, tuple[str, ...]]:
        """Each field's accepted keys: its name, then its aliases."""
        names: dict[str, tuple[str, ...]] = {}
        for name, info in cls.model_fields.items():
            alias = info.validation_alias
            choices = [name]
            if isinstance(alias, AliasChoices):
                choices += [c for c in alias.choices if isinstance(c, str)]
            elif isinstance(alias, str):
                choices.append(alias)
            names[name] = tuple(dict.fromkeys(choices))
        return names

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        fields = cls.key_names()
        known = {key for keys in fields.values() for key in keys}
        for key in data:
            if not isinstance(key, str):
                raise PydanticCustomError(
                    "key_type", "keys must be strings, got {key}", {"key": repr(key)}
                )
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PydanticCustomError(
                    "unknown_key", "unknown key{hint}", {"key": key, "hint": hint}
                )
        for keys in fields.values():
            given = [key for key in keys if key in data]
            if len(given) > 1:
                raise PydanticCustomError(
                    "duplicate_key",
                    "{keys} name the same setting: give one of them",
                    {"keys": " and ".join(repr(k) for k in given)},
                )
        return data


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def format_errors(exc: ValidationError, root: str = "") -> str:
    """``path: problem`` for each error (the first few), ``; ``-separated."""
    lines = []
    for error in exc.errors(include_url=False):
        # Union members and "function-after" wrappers add locations that are types, not keys.
        loc = tuple(
            p for p in error["loc"] if isinstance(p, int) or not str(p).startswith("function-")
        )
        context = error.get("ctx") or {}
        if error["type"] == "unknown_key":
            loc = (*loc, str(context.get("key")))
        path = _path(((root,) if root else ()) + loc) or "config"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    shown = list(dict.fromkeys(lines))
    more = len(shown) - _MAX_SHOWN
    text = "; ".join(shown[:_MAX_SHOWN])
    return text + (f"; and {more} more" if more > 0 else "")


def parse(model: type[M], data: object, root: str = "") -> M:
    """Validate ``data`` as ``model``; any problem is one :class:`InvalidInputError`
    whose message names every bad path (relative to ``root``)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(format_errors(exc, root)) from None
