"""Failures in the command line's words: options and environment variables, not Python.

The library's messages speak to programmers (``create_budget() first``, ``None for
lifetime``); :func:`explain` rewrites the ones a shell user meets, and :func:`fail`
prints one ``error:`` line on stderr and ends the command.

>>> from llmbudget.errors import UnknownUserError
>>> explain(UnknownUserError("ann", "app"))
"no budget for user 'ann' in project 'app'; create one with: llmbudget budgets create ann AMOUNT --project app"
"""

from __future__ import annotations

import re
import shlex
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from llmbudget.errors import InvalidDurationError, StoreError, UnknownUserError

__all__ = ["create_command", "explain", "fail"]

_REFUSED_KEY = re.compile(r"budget server (\S+) refused the admin key \((\d+)\)")


def explain(exc: Exception, *, key_given: bool = False) -> str:
    """The message for ``exc`` as a command-line user should read it.

    ``key_given``: the admin key came from ``--key`` (else from ``$LLMBUDGET_ADMIN_KEY``).
    """
    text = str(exc)
    if isinstance(exc, UnknownUserError):
        where = f" in project {exc.project!r}" if exc.project else ""
        return f"no budget for user {exc.user!r}{where}; create one with: " + create_command(
            exc.user, exc.project
        )
    if isinstance(exc, InvalidDurationError):
        if "timezone" in text:
            return f"--timezone: {text}"
        return "--period: " + text.replace(
            ", or None for lifetime", "; leave --period out for a lifetime budget"
        )
    refused = _REFUSED_KEY.search(text) if isinstance(exc, StoreError) else None
    if refused is not None:
        server, status = refused.groups()
        if status == "401":
            return (
                f"the budget server {server} needs its admin key: pass --key KEY "
                "or set $LLMBUDGET_ADMIN_KEY"
            )
        source = "--key" if key_given else "$LLMBUDGET_ADMIN_KEY"
        return (
            f"the budget server {server} refused the admin key from {source}: it is not "
            "the key the server was started with"
        )
    return text


def create_command(user: str | None = None, project: str | None = None) -> str:
    """The command that creates a budget, with what is known filled in (shell-quoted).

    >>> create_command(project="my app")
    "llmbudget budgets create USER AMOUNT --project 'my app'"
    """
    who = shlex.quote(user) if user else "USER"
    where = shlex.quote(project) if project else "NAME"
    return f"llmbudget budgets create {who} AMOUNT --project {where}"


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/] {escape(message)}")
    raise typer.Exit(code)
