"""The SQLite file's layout, its migrations, and plain-words explanations of SQLite failures.

Stdlib only (``sqlite3``): the trade gate imports this module and must stay cheap to import.
The schema version lives in ``PRAGMA user_version``; a file written by a newer ess-tui is refused,
an older one is migrated forward in one transaction.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import datetime, timezone

#: The schema this code writes and understands. Bump it and add a step to MIGRATIONS to change it.
SCHEMA_VERSION = 4

#: Name of the single lease row the runner holds.
RUNNER_LEASE = "runner"

#: Policy key the seed's components read before they trade.
EMERGENCY_KEY = "emergency_stop"

#: The gate's and the store's read of the latch: schema version and the state row in one SELECT.
STATE_SQL = (
    "SELECT (SELECT user_version FROM pragma_user_version), active, reason, since, "
    "activation_count, last_reset_by, last_reset_at, change_seq FROM state WHERE id = 1"
)


class SchemaError(Exception):
    """The file is not a database this ess-tui can use (too new, or someone else's)."""


class SchemaTooNew(SchemaError):
    def __init__(self, found: int, known: int = SCHEMA_VERSION) -> None:
        self.found = found
        self.known = known
        super().__init__(
            f"schema version {found} is newer than this ess-tui ({known}): "
            "upgrade ess-tui to use this database"
        )


class NotAnESSDatabase(SchemaError):
    pass


_V1 = [
    """CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE state (
        id               INTEGER PRIMARY KEY CHECK (id = 1),
        active           INTEGER NOT NULL CHECK (active IN (0, 1)),
        reason           TEXT,
        since            TEXT,
        activation_count INTEGER NOT NULL DEFAULT 0,
        last_reset_by    TEXT,
        last_reset_at    TEXT,
        change_seq       INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TRIGGER state_no_delete BEFORE DELETE ON state
       BEGIN SELECT RAISE(ABORT, 'the ESS state row cannot be deleted'); END""",
    """CREATE TABLE policy (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE audit (
        seq       INTEGER PRIMARY KEY,
        at        TEXT NOT NULL,
        action    TEXT NOT NULL,
        actor     TEXT NOT NULL,
        reason    TEXT,
        details   TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash      TEXT NOT NULL
    )""",
    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
       BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
       BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: DELETE refused'); END""",
    """CREATE TABLE lease (
        name         TEXT PRIMARY KEY,
        holder       TEXT NOT NULL,
        acquired_at  TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL,
        expires_at   TEXT NOT NULL
    )""",
]


def _migrate_to_1(conn: sqlite3.Connection, *, audit_mode: str, now: str) -> None:
    import json  # here, not at the top: the trade gate imports this module and never migrates

    for sql in _V1:
        conn.execute(sql)
    conn.execute(
        "INSERT INTO state (id, active, since, activation_count, change_seq) "
        "VALUES (1, 0, NULL, 0, 0)"
    )
    inactive = {
        "active": False, "status": "inactive", "reason": None, "timestamp": None,
        "activation_count": 0, "auto_recover": False,
    }
    conn.execute(
        "INSERT INTO policy (key, value, updated_at) VALUES (?, ?, ?)",
        (EMERGENCY_KEY, json.dumps(inactive, sort_keys=True), now),
    )
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [("audit_mode", audit_mode), ("audit_head_seq", "0"), ("created_at", now)],
    )


def _migrate_to_2(conn: sqlite3.Connection, *, audit_mode: str, now: str) -> None:
    """The lease gains its fencing ``epoch``, its renewal counter ``beat`` and the holder's
    ``ttl_sec``; meta gains the lease epoch counter (it survives a released lease) and the keyed
    head of the audit trail."""
    del audit_mode, now
    conn.execute("ALTER TABLE lease ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE lease ADD COLUMN beat INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE lease ADD COLUMN ttl_sec REAL")
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('lease_epoch', "
                 "(SELECT CAST(COALESCE(MAX(epoch), 0) AS TEXT) FROM lease))")
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('audit_head_mac', '')")


#: Scoped and reduce-only latches (issue 15). The whole-desk halt stays the ``state`` row (the
#: seed's meaning); this table holds every narrower or softer latch: one active row per scope,
#: its level only ever escalating (reduce_only -> halt) until an audited reset sets active = 0.
_LATCHES = [
    """CREATE TABLE latches (
        id          INTEGER PRIMARY KEY,
        scope_kind  TEXT NOT NULL CHECK (scope_kind IN ('desk', 'venue', 'strategy')),
        scope_value TEXT NOT NULL DEFAULT '',
        level       TEXT NOT NULL CHECK (level IN ('reduce_only', 'halt')),
        reason      TEXT NOT NULL,
        since       TEXT NOT NULL,
        latched_by  TEXT NOT NULL,
        active      INTEGER NOT NULL CHECK (active IN (0, 1)),
        reset_by    TEXT,
        reset_at    TEXT
    )""",
    "CREATE UNIQUE INDEX latches_one_active ON latches (scope_kind, scope_value) WHERE active = 1",
    """CREATE TRIGGER latches_no_delete BEFORE DELETE ON latches
       BEGIN SELECT RAISE(ABORT, 'a latch row cannot be deleted; reset it'); END""",
    """CREATE TRIGGER latches_no_deescalate BEFORE UPDATE ON latches
       WHEN OLD.active = 1 AND NEW.active = 1 AND OLD.level = 'halt' AND NEW.level <> 'halt'
       BEGIN SELECT RAISE(ABORT, 'a latch only escalates until it is reset'); END""",
]


def _migrate_to_4(conn: sqlite3.Connection, *, audit_mode: str, now: str) -> None:
    """Scoped and reduce-only latches: the ``latches`` table."""
    del audit_mode, now
    for sql in _LATCHES:
        conn.execute(sql)


#: The columns each table must have, by schema version (a look-alike table is not ours).
_COLUMNS_V1: dict[str, frozenset[str]] = {
    "meta": frozenset({"key", "value"}),
    "state": frozenset({"id", "active", "reason", "since", "activation_count", "last_reset_by",
                        "last_reset_at", "change_seq"}),
    "policy": frozenset({"key", "value", "updated_at"}),
    "audit": frozenset({"seq", "at", "action", "actor", "reason", "details", "prev_hash", "hash"}),
    "lease": frozenset({"name", "holder", "acquired_at", "heartbeat_at", "expires_at"}),
}
EXPECTED_COLUMNS: dict[int, dict[str, frozenset[str]]] = {
    1: _COLUMNS_V1,
    2: {**_COLUMNS_V1, "lease": _COLUMNS_V1["lease"] | {"epoch", "beat", "ttl_sec"}},
}
EXPECTED_COLUMNS[3] = {
    **EXPECTED_COLUMNS[2],
    "outbox": frozenset({"id", "kind", "level", "key", "created_at", "activation", "audit_seq",
                         "payload"}),
    "outbox_delivery": frozenset({"event_id", "sink", "attempts", "delivered_at", "last_error",
                                  "next_attempt_at"}),
}
EXPECTED_COLUMNS[4] = {**EXPECTED_COLUMNS[3], "latches": frozenset({
    "id", "scope_kind", "scope_value", "level", "reason", "since", "latched_by", "active",
    "reset_by", "reset_at"})}
#: Triggers that keep the audit trail append-only and the state row in place.
EXPECTED_TRIGGERS = frozenset({"state_no_delete", "audit_no_update", "audit_no_delete"})


def _migrate_to_3(conn: sqlite3.Connection, **_: object) -> None:
    """The alert outbox (issue 12): events written in the latch/reset transactions, and their
    delivery state per sink."""
    from ess_tui.store.outbox import migrate_outbox

    migrate_outbox(conn)


#: MIGRATIONS[n] brings a database from version n-1 to version n.
MIGRATIONS: dict[int, Callable[..., None]] = {1: _migrate_to_1, 2: _migrate_to_2, 3: _migrate_to_3,
                                              4: _migrate_to_4}

_OUR_TABLES = {"meta", "state", "policy", "audit", "lease", "outbox", "outbox_delivery",
               "latches"}


def read_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def ensure_schema(conn: sqlite3.Connection, *, audit_mode: str, fresh: bool = False) -> int:
    """Create (``fresh``: a file this process just made) or migrate the schema on ``conn``
    (autocommit mode). Returns the version found.

    Raises :class:`SchemaTooNew` for a newer file and :class:`NotAnESSDatabase` for a file that
    holds no ess-tui schema: an existing file is never initialised, whatever it holds.
    """
    found = read_version(conn)
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(found)
    if found == SCHEMA_VERSION:
        return found
    if found == 0 and not fresh:
        raise NotAnESSDatabase(
            "it holds no ess-tui schema, and an existing file is never initialised: "
            "restore it from a backup, or run `ess-tui init` on a new path"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = read_version(conn)  # another process may have migrated while we waited
        if found > SCHEMA_VERSION:
            raise SchemaTooNew(found)
        if found == 0:
            tables = {
                r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master "
                    "WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                )
            }
            if tables:
                names = ", ".join(sorted(tables)[:5])
                raise NotAnESSDatabase(
                    f"it already holds other tables ({names}) and no ess-tui schema: "
                    "point ess-tui at its own database file"
                )
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        for version in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version](conn, audit_mode=audit_mode, now=now)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def create_private_file(path: str | os.PathLike[str]) -> bool:
    """Create the parent directory and an empty file readable by its owner only (0o600), unless
    the file exists. Returns True when it created the file."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


_LOCKED = {"SQLITE_BUSY", "SQLITE_LOCKED"}
_CORRUPT = {"SQLITE_NOTADB", "SQLITE_CORRUPT"}


def explain_error(exc: BaseException, path: str | os.PathLike[str]) -> str:
    """One line a person can act on, for an error met reading or writing the ESS database."""
    where = os.fspath(path)
    if isinstance(exc, SchemaTooNew):
        return f"{exc} ({where})"
    if isinstance(exc, NotAnESSDatabase):
        return f"{where} is not an ess-tui database: {exc}"
    if isinstance(exc, PermissionError):
        return f"permission denied reading {where}: give this user read and write access to it"
    if isinstance(exc, FileNotFoundError) or (
        isinstance(exc, sqlite3.Error) and not os.path.exists(where)
    ):
        return f"database not found: {where} (start the ESS runner to create it, or fix the path)"
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        text = str(exc)
        if name.startswith(tuple(_LOCKED)) or "locked" in text:
            return (f"database is locked: another process holds a lock on {where}; "
                    "it stays blocked until that process lets go")
        if name.startswith(tuple(_CORRUPT)) or "malformed" in text or "not a database" in text:
            return f"database is corrupt: {where}: {text}; restore it from a backup"
        if name.startswith(("SQLITE_PERM", "SQLITE_READONLY", "SQLITE_AUTH")) or (
            name.startswith("SQLITE_CANTOPEN") and not os.access(where, os.R_OK)
        ):
            return (f"permission denied reading {where} ({text}): give this user read and "
                    "write access to the file and its directory")
        if name.startswith("SQLITE_CANTOPEN"):
            return (f"cannot open {where} ({text}): check the file and that its directory "
                    "is writable (SQLite needs its -wal and -shm files)")
        if name.startswith("SQLITE_IOERR"):
            return f"I/O error on {where} ({text}): the file may be truncated or the disk failing"
        if name.startswith("SQLITE_FULL"):
            return f"disk full writing {where}: free some space"
        if "no such table" in text or "no such column" in text:
            return f"{where} is not an initialised ess-tui database ({text})"
        return f"SQLite error on {where}: {text}"
    if isinstance(exc, OSError):
        return f"cannot access {where}: {exc.strerror or exc}"
    return f"unexpected error on {where}: {type(exc).__name__}: {exc}"
