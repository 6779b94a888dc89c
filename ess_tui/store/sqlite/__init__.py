"""The SQLite store: one file holds the latch, policy keys, audit chain and runner lease.

Every write is one ``BEGIN IMMEDIATE`` transaction in WAL mode with ``synchronous=FULL``, run as
one call on the store's own database thread (stdlib ``sqlite3``): when ``latch()`` returns, the
latch, its policy key and its audit row are on disk together, or none of them is.

Fail closed: when the file cannot be read, ``load_state()`` raises ``StoreUnavailable`` with the
reason in plain words, and ``get("emergency_stop")`` answers "active".

Modules: ``thread`` (the database thread), ``create`` (``init_database``), ``core`` (opening,
validation, running), ``latch``, ``audit``, ``lease``, ``policy``; ``store`` puts them together.
"""

from __future__ import annotations

from ess_tui.store.sqlite._util import fail_closed_policy, policy_json
from ess_tui.store.sqlite.create import init_database
from ess_tui.store.sqlite.store import SQLiteStore

#: The old private name; ``engine/seed_store`` uses it for the same rules.
_policy_json = policy_json

__all__ = ["SQLiteStore", "fail_closed_policy", "init_database"]
