"""Help pages in the usual command-line style: ``llmbudget budgets create USER AMOUNT``.

Recent typer versions label every parameter with its Python type (``--rolling <bool>``,
``--store <str>``) and wrap required arguments in braces (``{user}``). Every command and
group of the CLI is built with :class:`ReadableCommand` / :class:`ReadableGroup`, which
show a placeholder instead (``--store URL``, ``USER``; nothing after a flag).

>>> import typer
>>> app = typer.Typer(cls=ReadableGroup)
>>> @app.command(cls=ReadableCommand)
... def hello(name: str = typer.Argument(..., metavar="NAME")) -> None: ...
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup

__all__ = ["STORE_HELP", "ReadableCommand", "ReadableGroup"]

STORE_HELP = "Store URL (default: $LLMBUDGET_STORE, else sqlite:///llmbudget.db)."


class _PlainArgument(TyperArgument):
    """An argument shown by its placeholder alone (``USER``), in help and usage lines."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.metavar or (self.name or "").upper()
        piece = name if self.required else f"[{name}]"
        return [piece + ("..." if self.nargs != 1 else "")]


def _tidy(params: list[Any]) -> list[Any]:
    for param in params:
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = (param.name or "").upper()
            if type(param) is TyperArgument:
                # typer builds its own parameter objects and has no hook to choose their
                # class; this subclass only changes how the argument is displayed.
                param.__class__ = _PlainArgument
        elif getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""  # a flag takes no value: show none
        elif getattr(param, "metavar", "") is None:
            param.metavar = (param.name or "").upper()
    return params


class ReadableCommand(TyperCommand):
    """A typer command whose help shows placeholders, not Python types."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _tidy(list(super().get_params(ctx)))


class ReadableGroup(TyperGroup):
    """A typer group whose help shows placeholders, not Python types."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _tidy(list(super().get_params(ctx)))
