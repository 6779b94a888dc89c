"""The one judgement of "is this a sound ESS database?", shared by the trade gate and the store.

Stdlib only (``sqlite3``, no aiosqlite or pydantic): the gate imports it. Two levels:

- :func:`precheck` looks at the file from outside before SQLite touches it: a regular file, not
  empty, with the SQLite header. Nothing is opened, so nothing is changed.
- :func:`check_database` looks inside, on an open connection: schema version, ``PRAGMA
  quick_check``, the expected tables *and* their columns (a foreign database with a look-alike
  ``state`` table is not ours), the append-only triggers, and the ``emergency_stop`` policy row
  agreeing with the state row. It costs a page walk, so callers run it when the file changed
  (see :class:`Validator`), not on every read.
- :func:`check_state_row` judges the state row itself; cheap, run on every read.

Every problem is one line naming the file and what to do; the caller answers *blocked*.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from datetime import datetime

from ess_tui.store.schema import (
    EMERGENCY_KEY,
    EXPECTED_COLUMNS,
    SCHEMA_VERSION,
    SchemaTooNew,
    explain_error,
)

__all__ = ["Invalid", "Validator", "precheck", "check_file", "check_database", "check_state_row", "file_stamps"]

_HEADER = b"SQLite format 3\x00"
_STATUSES = {"active", "inactive"}


class Invalid(Exception):
    """The file is not a sound ESS database. ``str(exc)`` is the one-line reason."""


def _restore(path: str) -> str:
    return f"restore {path} from a backup (nothing was written to it)"


def precheck(path: str) -> None:
    """Raise :class:`Invalid` (or ``OSError``) unless ``path`` looks like an SQLite file."""
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise Invalid(f"{path} is a directory, not an ess-tui database: fix the path")
    if not stat.S_ISREG(st.st_mode):
        raise Invalid(f"{path} is not a regular file, not an ess-tui database: fix the path")
    if st.st_size == 0:
        raise Invalid(f"database is corrupt: {path} is empty (0 bytes), not an ess-tui database; "
                      + _restore(path))
    with open(path, "rb") as f:
        head = f.read(100)
    if not head.startswith(_HEADER):
        raise Invalid(f"database is corrupt: {path} is not an SQLite database (bad header); "
                      + _restore(path))
    if len(head) < 100 or st.st_size < 512:
        raise Invalid(f"database is corrupt: {path} is truncated ({st.st_size} bytes); "
                      + _restore(path))


def check_file(path: str) -> int | None:
    """:func:`precheck`, then -- when no WAL file exists beside it, so the main file is the whole
    truth -- the full check through an ``immutable`` read-only connection, which creates no
    ``-wal`` or ``-shm`` file: a file found unsound is left exactly as it was. Returns the schema
    version, or None when a WAL exists (the caller checks on its live connection)."""
    precheck(path)
    if os.path.lexists(path + "-wal"):
        return None
    from pathlib import Path

    uri = Path(path).as_uri() + "?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise Invalid(explain_error(exc, path)) from exc
    try:
        version = check_database(conn, path, deep=True)
        try:
            rows = conn.execute(
                "SELECT (SELECT user_version FROM pragma_user_version), active, reason, since, "
                "activation_count, last_reset_by, last_reset_at, change_seq FROM state "
                "WHERE id = 1").fetchall()
        except sqlite3.Error as exc:
            raise Invalid(explain_error(exc, path)) from exc
        check_state_row(tuple(rows[0]) if rows else None, path)
        return version
    finally:
        conn.close()


def _parses(text: object) -> bool:
    if text is None:
        return True
    if not isinstance(text, str):
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def check_state_row(row: tuple[object, ...] | None, path: str) -> None:
    """Judge ``(version, active, reason, since, activation_count, last_reset_by, last_reset_at,
    change_seq, ...)`` as :data:`~ess_tui.store.schema.STATE_SQL` reads it."""
    if row is None:
        raise Invalid(f"database is corrupt: the ESS state row is missing from {path}; "
                      + _restore(path))
    version, active, reason, since, count, last_by, last_at, change = row[:8]
    if not isinstance(version, int):
        raise Invalid(f"database is corrupt: {path}: unreadable schema version")
    if version > SCHEMA_VERSION:
        raise Invalid(explain_error(SchemaTooNew(version), path))
    bad = None
    if type(active) is not int or active not in (0, 1):
        bad = f"state.active = {active!r}"
    elif type(count) is not int or count < 0:
        bad = f"state.activation_count = {count!r}"
    elif active == 1 and count < 1:
        bad = "state is latched with activation_count 0"
    elif reason is not None and not isinstance(reason, str):
        bad = f"state.reason is {type(reason).__name__}"
    elif last_by is not None and not isinstance(last_by, str):
        bad = f"state.last_reset_by is {type(last_by).__name__}"
    elif not _parses(since):
        bad = f"state.since = {str(since)[:60]!r} is not a time"
    elif not _parses(last_at):
        bad = f"state.last_reset_at = {str(last_at)[:60]!r} is not a time"
    elif type(change) is not int or change < 0:
        bad = f"state.change_seq = {change!r}"
    if bad:
        raise Invalid(f"database is corrupt: {path}: {bad}; " + _restore(path))


def check_database(conn: sqlite3.Connection, path: str, *, deep: bool = True) -> int:
    """The check on an open connection. Returns the schema version; raises :class:`Invalid`.

    ``deep`` adds ``PRAGMA quick_check`` (a walk of every page: run it when the main file changed,
    not on every WAL append). ``sqlite3.Error`` from a damaged file is turned into
    :class:`Invalid` too."""
    own = not conn.in_transaction
    try:
        if own:  # one snapshot: a commit between two reads must not look like a contradiction
            conn.execute("BEGIN")
        return _check_database(conn, path, deep=deep)
    except sqlite3.Error as exc:
        raise Invalid(explain_error(exc, path)) from exc
    finally:
        if own and conn.in_transaction:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error:
                pass


def _check_database(conn: sqlite3.Connection, path: str, *, deep: bool) -> int:
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise Invalid(explain_error(SchemaTooNew(version), path))
        if version == 0:
            raise Invalid(f"{path} is not an ess-tui database (it holds no ess-tui schema); "
                          "fix the path, or restore the file from a backup")
        check = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()] if deep else ["ok"]
        if check != ["ok"]:
            first = str(check[0])[:200] if check else "no answer"
            raise Invalid(f"database is corrupt: {path}: {first}; " + _restore(path))
        expected = EXPECTED_COLUMNS.get(version)
        if expected is None:
            raise Invalid(f"{path}: unknown schema version {version}; " + _restore(path))
        for table, columns in expected.items():
            found = {r[0] for r in conn.execute("SELECT name FROM pragma_table_info(?)", (table,))}
            if not found:
                raise Invalid(f"{path} is not an ess-tui database: table {table!r} is missing")
            if not columns <= found:
                missing = ", ".join(sorted(columns - found))
                raise Invalid(f"{path} is not an ess-tui database: table {table!r} lacks "
                              f"column(s) {missing}")
        rows = conn.execute(
            "SELECT active, activation_count FROM state WHERE id = 1").fetchall()
        policy = conn.execute("SELECT value FROM policy WHERE key = ?", (EMERGENCY_KEY,)).fetchall()
    except sqlite3.Error as exc:
        raise Invalid(explain_error(exc, path)) from exc
    if rows and policy:
        _check_policy(policy[0][0], rows[0], path)
    return version


def _check_policy(text: object, state: tuple[object, ...], path: str) -> None:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        value = None
    where = f"database is corrupt: {path}: the {EMERGENCY_KEY!r} policy row"
    if not isinstance(value, dict):
        raise Invalid(f"{where} is not a JSON object; " + _restore(path))
    status, active = value.get("status"), value.get("active")
    if status not in _STATUSES or not isinstance(active, bool):
        raise Invalid(f"{where} has status {str(status)[:40]!r}, active {active!r}; "
                      + _restore(path))
    if active != (status == "active") or active != bool(state[0] == 1):
        raise Invalid(f"{where} disagrees with the state row (active {active}, status {status}, "
                      f"state.active {state[0]!r}); " + _restore(path))


def file_stamps(path: str) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """(main, wal): (dev, inode, size, mtime) of the database file and of its WAL (() if none)."""
    st = os.stat(path)
    try:
        wal = os.stat(path + "-wal")
        w: tuple[object, ...] = (wal.st_ino, wal.st_size, wal.st_mtime_ns)
    except FileNotFoundError:
        w = ()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), w


class Validator:
    """Runs :func:`check_database` when the file changed, and remembers a good verdict.

    ``main`` is a stamp of the main file (a change there runs the deep check, quick_check
    included); ``light`` a stamp of what changes on every commit (the WAL, or the connection's
    ``data_version``): a change there re-checks schema, tables, columns and the policy row."""

    __slots__ = ("path", "_main", "_light", "version")

    def __init__(self, path: str) -> None:
        self.path = path
        self._main: object = None
        self._light: object = None
        self.version = 0

    def check(self, conn: sqlite3.Connection, main: object, light: object) -> int:
        if main == self._main and main is not None:
            if light == self._light:
                return self.version
            self._light = None
            self.version = check_database(conn, self.path, deep=False)
            self._light = light
            return self.version
        self._main = self._light = None
        self.version = check_database(conn, self.path, deep=True)
        self._main, self._light = main, light
        return self.version

    def accept(self, main: object, light: object) -> None:
        """Our own committed write changed the file: trust the new stamps."""
        if self._main is not None:
            self._main, self._light = main, light

    def forget(self) -> None:
        self._main = self._light = None
