"""LiteLLM's BudgetManager data, carried into llmbudget: ``user_cost.json`` and ``/get_budget``.

LiteLLM's local ``BudgetManager`` keeps every user in ``./user_cost.json`` (whatever the
project); its hosted one keeps them on a server that answers ``POST /get_budget`` with
``{"status": "success", "data": {user: record}}``. Both hold the same records:
``total_budget``, ``duration`` (days), ``created_at``, ``last_updated_at``,
``current_cost`` and ``model_cost``.

Importing turns them into budgets and spend with the very code the budget server uses for
LiteLLM's hosted client (:class:`~llmbudget.server.seed_protocol.SeedProtocol`): budgets
are upserted (``duration`` in days becomes daily, weekly, monthly, yearly or ``"<n>d"``),
the spend of the current window is charged per model, and what was already imported from
the same records is never charged again, so importing twice changes nothing and importing
a newer copy of the file charges only what was spent since. A user whose LiteLLM window
started before llmbudget's current calendar window keeps that start as
``last_updated_at`` (:mod:`llmbudget.seed_resets`), so the seed's daily job resets them
when LiteLLM would have.

``BudgetManager(project)`` imports ``./user_cost.json`` by itself the first time it runs
for a project that has no budgets yet, and says so once on stderr; ``llmbudget import
user_cost.json --project P`` does it explicitly (also into a budget server).

>>> from llmbudget.ledger import Ledger
>>> ledger = Ledger("memory://")
>>> data = {"1234": {"total_budget": 10, "duration": 1, "current_cost": 0.25,
...                  "model_cost": {"gpt-4o": 0.25}}}
>>> import_users(ledger, "my-app", data).users
1
>>> import_users(ledger, "my-app", data).charged  # the second time: nothing new
Decimal('0')
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from llmbudget.budgets import scope_key
from llmbudget.errors import InvalidInputError, LLMBudgetError
from llmbudget.ledger import Ledger
from llmbudget.server.seed_protocol import SYNC_MARKER, SeedProtocol

__all__ = [
    "LITELLM_FILE",
    "ImportResult",
    "import_file",
    "import_on_first_use",
    "import_users",
    "read_litellm_data",
]

LITELLM_FILE = "user_cost.json"
#: The store document that marks a project as imported automatically (once, ever).
AUTO_IMPORT_KIND = "litellm-import"
# Users per protocol call, below the protocol's own per-post limit.
_CHUNK = 5_000


@dataclass
class ImportResult:
    """What an import did: users read, budgets created or changed, spend charged."""

    users: int = 0
    budgets_changed: int = 0
    charged: Decimal = Decimal(0)
    users_charged: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if not self.budgets_changed and not self.charged:
            return f"{self.users} users, all already imported: nothing changed"
        return (
            f"{self.users} users: {self.budgets_changed} budgets created or changed, "
            f"${self.charged} of spend carried over for {len(self.users_charged)} users"
        )


def read_litellm_data(path: str | Path) -> dict[str, Any]:
    """LiteLLM's user dict from ``path``: a ``user_cost.json``, a ``/get_budget`` answer
    (``{"status": ..., "data": {...}}``) or a ``/set_budget`` body (``{"user_dict": {...}}``).

    Raises :class:`~llmbudget.errors.InvalidInputError` naming the file when it cannot
    be read or is not one of these.
    """
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"{where}: is not UTF-8 text") from None
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise InvalidInputError(f"{where}: is not JSON ({exc})") from None
    return _user_dict(data, where)


def import_users(
    ledger: Ledger, project: str, user_dict: Mapping[str, Any], *, timezone: str = "UTC"
) -> ImportResult:
    """Import LiteLLM records (``{user: record}``) into ``project``; see the module doc.

    Everything is validated before anything is written: a bad record stores nothing.
    """
    records = {user: _plain(rec) for user, rec in _user_dict(user_dict, "user_dict").items()}
    protocol = SeedProtocol(ledger, ledger.store, ledger.clock, timezone, stale_window=0.0)
    if len(records) > _CHUNK:
        # More than one protocol call: check every record first, on a scratch store.
        scratch = Ledger("memory://", clock=ledger.clock)
        check = SeedProtocol(scratch, scratch.store, scratch.clock, timezone, stale_window=0.0)
        for chunk in _chunks(records):
            check.set_budget(project, chunk)
    scopes = {user: scope_key("user", project, user) for user in records}
    known = ledger.store.get_budgets(list(scopes.values())) if records else []
    new_users = {user for user, record in zip(scopes, known, strict=True) if record is None}
    result = ImportResult(users=len(records))
    for chunk in _chunks(records):
        done = protocol.set_budget(project, chunk)
        result.budgets_changed += done.upserts
        result.charged += done.charged
        touched = set(done.touched)
        result.users_charged += [u for u in chunk if scopes[u] in touched]
    _keep_window_starts(ledger, project, {u: records[u] for u in new_users})
    return result


def import_file(
    ledger: Ledger, project: str, path: str | Path, *, timezone: str = "UTC"
) -> ImportResult:
    """Import a ``user_cost.json`` (or ``/get_budget`` dump) into ``project``.

    Errors name the file: ``InvalidInputError("user_cost.json: user_dict['ann'] ...")``.
    """
    data = read_litellm_data(path)
    try:
        return import_users(ledger, project, data, timezone=timezone)
    except InvalidInputError as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def import_on_first_use(
    ledger: Ledger,
    project: str,
    *,
    timezone: str = "UTC",
    directory: str | Path = ".",
    store_name: str = "the llmbudget store",
    stream: TextIO | None = None,
) -> ImportResult | None:
    """Import ``directory/user_cost.json`` into ``project`` if the project has no budgets
    and was never imported before; print one line on ``stream`` (stderr) when it does.

    Returns the result, or ``None`` when there was nothing to do. Two processes starting
    at once import once: the first to create the project's import marker does it.
    """
    path = Path(directory) / LITELLM_FILE
    if not path.is_file():
        return None
    if ledger.budgets(scope_key("user", project) + ":"):
        return None
    if ledger.store.get_doc(AUTO_IMPORT_KIND, project) is not None:
        return None
    data = read_litellm_data(path)
    marker = {"source": str(path.resolve()), "at": ledger.clock(), "users": len(data)}
    if not ledger.store.create_doc(AUTO_IMPORT_KIND, project, marker):
        return None  # another process got there first
    try:
        result = import_users(ledger, project, data, timezone=timezone)
    except InvalidInputError as exc:
        ledger.store.delete_doc(AUTO_IMPORT_KIND, project)
        raise type(exc)(f"{path}: {exc}") from exc
    except LLMBudgetError:
        # Let the next start try again (an import is idempotent, a retry is safe).
        ledger.store.delete_doc(AUTO_IMPORT_KIND, project)
        raise
    print(
        f"llmbudget: imported {len(data)} users of LiteLLM's BudgetManager from {path} "
        f"into project {project!r} of {store_name} (${result.charged} of spend); "
        f"{LITELLM_FILE} is no longer read or written",
        file=stream or sys.stderr,
    )
    return result


def _user_dict(data: object, where: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidInputError(f"{where}: expected a JSON object of users")
    body = data.get("user_dict")
    if isinstance(body, Mapping) and "project_name" in data:
        return dict(body)  # a /set_budget body
    status = data.get("status")
    if isinstance(status, str) and set(data) <= {"status", "data", "message"}:
        if status == "error":
            return {}  # LiteLLM's hosted answer for a project with no users yet
        inner = data.get("data")
        if not isinstance(inner, Mapping):
            raise InvalidInputError(f"{where}: data of a /get_budget answer must be an object")
        return dict(inner)
    return dict(data)


def _plain(record: object) -> object:
    # A marker handed out by an llmbudget server refers to that server's counters; here
    # the records are counted from zero.
    if isinstance(record, Mapping) and SYNC_MARKER in record:
        return {k: v for k, v in record.items() if k != SYNC_MARKER}
    return record


def _chunks(records: dict[str, Any]) -> list[dict[str, Any]]:
    items = list(records.items())
    return [dict(items[i : i + _CHUNK]) for i in range(0, len(items), _CHUNK)]


def _keep_window_starts(ledger: Ledger, project: str, records: Mapping[str, Any]) -> None:
    """For users this import created, keep LiteLLM's window start when it lies before
    llmbudget's current window (see :mod:`llmbudget.seed_resets`)."""
    from llmbudget import seed_resets

    wanted = {
        user: rec["last_updated_at"]
        for user, rec in records.items()
        if isinstance(rec, Mapping)
        and rec.get("duration") is not None
        and isinstance(rec.get("last_updated_at"), int | float)
        and not isinstance(rec.get("last_updated_at"), bool)
    }
    if not wanted:
        return
    scopes = [scope_key("user", project, user) for user in wanted]
    now = ledger.clock()
    for budget, start in zip(ledger.get(scopes), wanted.values(), strict=True):
        if budget is not None and start < budget.window_at(now).start:
            seed_resets.move_back(ledger, budget, float(start))
