"""Open the ESS store wherever it is: a SQLite path, or a ``postgresql://`` URL.

Everything that accepts a database (``--db``, ``QT_ESS_DB``, ``db = …`` in ess.toml, the runtime)
goes through :func:`open_store`; :func:`describe_db` is how a store's place may be shown (a URL
without its password). No PostgreSQL driver is imported until a URL is actually used.
"""

from __future__ import annotations

import os
from typing import Any

from ess_tui.store.postgres.url import URLError, is_postgres_url, redact

__all__ = ["URLError", "describe_db", "is_postgres_url", "open_outbox", "open_store"]


def describe_db(db: str | os.PathLike[str]) -> str:
    """The database as it may be shown: a path, or a URL with any password removed."""
    text = os.fspath(db)
    if is_postgres_url(text):
        from ess_tui.store.postgres.url import PGTarget

        try:
            return PGTarget(text).display
        except URLError:
            return redact(text.split("?")[0])
    return text


def open_store(db: str | os.PathLike[str], *, create: bool = True, **kwargs: Any) -> Any:
    """A ``PostgresStore`` for a ``postgresql://`` URL, else a ``SQLiteStore`` for the path.
    Raises :class:`~ess_tui.store.postgres.url.URLError` (a ValueError) for a bad URL."""
    text = os.fspath(db)
    if is_postgres_url(text):
        from ess_tui.store.postgres.store import PostgresStore

        return PostgresStore(text, create=create, **kwargs)
    from ess_tui.store.sqlite import SQLiteStore

    return SQLiteStore(text, create=create, **kwargs)


def open_outbox(db: str | os.PathLike[str], *, store: Any = None) -> Any:
    """The alert outbox of the store at ``db``: a ``SQLiteOutbox`` on the file, or a
    ``PostgresOutbox`` on ``store``'s pool when it is the runtime's ``PostgresStore`` (else on a
    store of its own that it closes)."""
    text = os.fspath(db)
    if is_postgres_url(text):
        from ess_tui.store.postgres.alert_outbox import PostgresOutbox
        from ess_tui.store.postgres.store import PostgresStore

        if isinstance(store, PostgresStore):
            return PostgresOutbox(store)
        return PostgresOutbox(PostgresStore(text, create=False), owns_store=True)
    from ess_tui.store.outbox import SQLiteOutbox

    return SQLiteOutbox(db)
