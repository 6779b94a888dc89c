"""The trade gate: the one call any process of the desk makes before it trades.

    from ess_tui.gate import TradeGate

    gate = TradeGate("~/.local/state/ess-tui/ess.db")
    decision = gate.check()
    if not decision.allowed:
        reject(decision.reason)      # "ESS active: Daily PnL catastrophic: -12.00%"

It reads the ESS database read-only with the stdlib ``sqlite3`` (no ccxt, Textual, aiosqlite or
pydantic is imported), keeps its connection open between checks, and runs one SELECT per check.
It fails closed: a missing, corrupt, truncated, locked or unreadable file, a schema newer than this
code, or a missing state row all answer *blocked*, with a reason a person can act on.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ess_tui.store.schema import SCHEMA_VERSION, STATE_SQL, SchemaTooNew, explain_error

__all__ = ["GateDecision", "TradeGate"]


@dataclass(frozen=True)
class GateDecision:
    """The gate's answer. ``bool(decision)`` is ``decision.allowed``."""

    allowed: bool
    reason: str | None = None
    activation_count: int | None = None
    since: datetime | None = None

    def __bool__(self) -> bool:
        return self.allowed


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


class _Reader:
    """One thread's open read-only connection, and which file (inode) and process it belongs to."""

    __slots__ = ("conn", "ident", "pid")

    def __init__(self, conn: sqlite3.Connection, ident: tuple[int, int], pid: int) -> None:
        self.conn = conn
        self.ident = ident
        self.pid = pid


class TradeGate:
    """Answers "may this process trade now?" from the ESS database, failing closed.

    ``busy_timeout_sec`` is how long a check waits for a lock held by another process before it
    answers blocked. Safe to share between threads (each thread gets its own connection).
    """

    def __new__(cls, db_path: str | os.PathLike[str], **kwargs: object) -> TradeGate:
        if isinstance(db_path, str) and db_path.strip().lower().startswith(
                ("postgresql://", "postgres://")):
            # A desk on PostgreSQL: the LISTENing gate, loaded only now (no driver otherwise).
            from ess_tui.store.postgres.gate import PGTradeGate

            kwargs.pop("busy_timeout_sec", None)
            return PGTradeGate(db_path, decision_type=GateDecision,  # type: ignore[return-value]
                               **kwargs)  # type: ignore[arg-type]
        return super().__new__(cls)

    def __init__(self, db_path: str | os.PathLike[str], *, busy_timeout_sec: float = 0.1) -> None:
        self._path = os.path.abspath(os.path.expanduser(os.fspath(db_path)))
        self._uri = Path(self._path).as_uri() + "?mode=ro"
        self._timeout = float(busy_timeout_sec)
        self._local = threading.local()

    @property
    def path(self) -> str:
        return self._path

    def __repr__(self) -> str:
        return f"TradeGate({self._path!r})"

    def _blocked(self, why: str) -> GateDecision:
        return GateDecision(False, f"ESS state unavailable, trading blocked: {why}")

    def _drop(self) -> None:
        reader: _Reader | None = getattr(self._local, "reader", None)
        self._local.reader = None
        if reader is not None and reader.pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                reader.conn.close()

    def _open(self, ident: tuple[int, int], pid: int) -> sqlite3.Connection:
        self._drop()
        conn = sqlite3.connect(self._uri, uri=True, timeout=self._timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error:
            conn.close()
            raise
        self._local.reader = _Reader(conn, ident, pid)
        return conn

    def check(self) -> GateDecision:
        """Allowed, or blocked with the reason. Never raises for a database problem."""
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            self._drop()
            return self._blocked(
                f"database not found: {self._path} (start the ESS runner to create it, "
                "or fix the path)"
            )
        except OSError as exc:
            self._drop()
            return self._blocked(explain_error(exc, self._path))
        ident = (st.st_dev, st.st_ino)
        pid = os.getpid()
        reader: _Reader | None = getattr(self._local, "reader", None)
        try:
            if reader is None or reader.ident != ident or reader.pid != pid:
                # First check, a replaced file, or a forked child: (re)open.
                conn = self._open(ident, pid)
            else:
                conn = reader.conn
            rows = conn.execute(STATE_SQL).fetchall()
        except sqlite3.Error as exc:
            self._drop()
            return self._blocked(self._explain(exc))
        if not rows:
            return self._blocked(
                f"the ESS state row is missing from {self._path}: the file is damaged or not an "
                "ess-tui database; restore it from a backup"
            )
        return self._decide(rows[0])

    def _explain(self, exc: sqlite3.Error) -> str:
        """Name the cause; a missing table may really be a newer schema, so look."""
        if "no such" in str(exc):
            try:
                conn = sqlite3.connect(self._uri, uri=True, timeout=self._timeout)
                try:
                    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                finally:
                    conn.close()
                if version > SCHEMA_VERSION:
                    return explain_error(SchemaTooNew(version), self._path)
            except sqlite3.Error:
                pass
        return explain_error(exc, self._path)

    def _decide(self, row: tuple[object, ...]) -> GateDecision:
        version, active, reason, since, count = row[0], row[1], row[2], row[3], row[4]
        if not isinstance(version, int):
            return self._blocked(f"database is corrupt: {self._path}: unreadable schema version")
        if version > SCHEMA_VERSION:
            return self._blocked(explain_error(SchemaTooNew(version), self._path))
        count_value = count if isinstance(count, int) else None
        when = _parse_time(since)
        if active == 0:
            return GateDecision(True, None, count_value, when)
        if active == 1:
            text = reason if isinstance(reason, str) and reason else "(no reason recorded)"
            return GateDecision(False, f"ESS active: {text}", count_value, when)
        return self._blocked(
            f"database is corrupt: {self._path}: state.active = {active!r}; "
            "restore it from a backup"
        )

    def close(self) -> None:
        """Close this thread's connection (a later check reopens it)."""
        self._drop()

    def __enter__(self) -> TradeGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
