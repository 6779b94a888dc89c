"""The ESS store on PostgreSQL, for a desk whose processes run on several hosts.

``PostgresStore`` (psycopg 3 and its pool) implements the same store protocol as the SQLite file;
:mod:`ess_tui.store.postgres.gate` is the trade gate that LISTENs for latch and reset. Importing this package
imports no driver: ``PostgresStore`` is loaded on first use.
"""

from __future__ import annotations

from typing import Any

from ess_tui.store.postgres.url import is_postgres_url, redact

__all__ = ["PostgresStore", "is_postgres_url", "redact"]


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":
        from ess_tui.store.postgres.store import PostgresStore

        return PostgresStore
    raise AttributeError(name)
