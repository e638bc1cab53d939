"""The SQL schemas of the SQLite and PostgreSQL stores, one migration per file.

``<store>_<version>_<name>.sql``: applied in version order, each once; a shipped file is
never edited (a change is a new migration). The SQLite store runs a script statement by
statement inside its migration transaction (``executescript`` would commit), split at
``;``: a SQLite script has no ``;`` but between statements, comments included.

>>> len(migrations("sqlite")) >= 4
True
"""

from __future__ import annotations

from importlib import resources

__all__ = ["migrations"]


def migrations(store: str) -> tuple[str, ...]:
    """The migration scripts of ``store`` (``"sqlite"`` or ``"postgres"``), in order."""
    folder = resources.files(__name__)
    names = sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.name.startswith(f"{store}_") and entry.name.endswith(".sql")
    )
    return tuple((folder / name).read_text(encoding="utf-8") for name in names)
