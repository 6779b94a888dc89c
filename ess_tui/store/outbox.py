"""The store's transactional outbox for alerts, on SQLite.

Two tables: ``outbox`` (one row per alert-worthy event, unique by its idempotency ``key``) and
``outbox_delivery`` (per event and sink: attempts, when delivered, the last error, when to try
again). :func:`enqueue_sync` writes an event inside the *caller's* open transaction, so the latch
and its ``latched`` event commit together or not at all. :class:`SQLiteOutbox` is the
``ess_tui.engine.store.Outbox`` protocol over its own connection, for the relay and the CLI.

Stdlib only (``sqlite3``); it never creates a database: the file must exist and be an ESS one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any

from ess_tui.engine.state import as_utc, utcnow
from ess_tui.engine.store import OutboxEvent, SinkDelivery, StoreUnavailable
from ess_tui.store.sqlite.sidecars import Sidecars, close_stale

log = logging.getLogger("ess_tui.store.outbox")

#: Levels in order of urgency.
LEVELS = ("info", "warning", "critical")

OUTBOX_SQL = [
    """CREATE TABLE IF NOT EXISTS outbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        kind        TEXT NOT NULL,
        level       TEXT NOT NULL CHECK (level IN ('info', 'warning', 'critical')),
        key         TEXT NOT NULL UNIQUE,
        created_at  TEXT NOT NULL,
        activation  INTEGER,
        audit_seq   INTEGER,
        payload     TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS outbox_delivery (
        event_id        INTEGER NOT NULL REFERENCES outbox(id),
        sink            TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        delivered_at    TEXT,
        last_error      TEXT,
        next_attempt_at TEXT,
        PRIMARY KEY (event_id, sink)
    )""",
]


def migrate_outbox(conn: sqlite3.Connection, **_: Any) -> None:
    """Schema step: add the outbox tables (run inside the migration's transaction)."""
    for sql in OUTBOX_SQL:
        conn.execute(sql)


def _iso(value: datetime) -> str:
    return as_utc(value).isoformat(timespec="microseconds")


def _time(text: str | None) -> datetime | None:
    return as_utc(datetime.fromisoformat(text)) if text else None


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise ValueError(f"alert level {level!r} is not one of {', '.join(LEVELS)}")
    return level


ENQUEUE_SQL = (
    "INSERT OR IGNORE INTO outbox (kind, level, key, created_at, activation, audit_seq, payload) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def enqueue_params(
    kind: str, *, level: str, key: str, payload: dict[str, Any], activation: int | None = None,
    at: datetime, audit_seq: int | None = None,
) -> tuple[Any, ...]:
    """The parameters of :data:`ENQUEUE_SQL` (for a store whose transaction is async)."""
    return (kind, check_level(level), key, _iso(at), activation, audit_seq,
            json.dumps(payload, sort_keys=True, default=str, allow_nan=False))


def enqueue_sync(
    conn: sqlite3.Connection, kind: str, *, level: str, key: str, payload: dict[str, Any],
    activation: int | None = None, at: datetime, audit_seq: int | None = None,
) -> int | None:
    """Add an event inside the caller's open transaction (no commit). Returns its id, or None
    when ``key`` is already in the outbox (INSERT OR IGNORE: the same event twice is one)."""
    cur = conn.execute(ENQUEUE_SQL, enqueue_params(
        kind, level=level, key=key, payload=payload, activation=activation, at=at,
        audit_seq=audit_seq))
    return int(cur.lastrowid) if cur.rowcount else None


def latched_event(state: Any, *, actor: str, details: dict[str, Any] | None) -> dict[str, Any]:
    """The ``latched`` event of a new latch, as the latch transaction enqueues it."""
    info = details or {}
    return {"kind": "latched", "level": "critical", "key": f"latched:{state.activation_count}",
            "activation": state.activation_count, "payload": {
                "reason": state.reason, "activation": state.activation_count,
                "since": state.timestamp.isoformat() if state.timestamp else None,
                "actor": actor, "source": info.get("source"), "reading": info.get("reading")}}


def reset_event(state: Any, *, who: str, note: str | None,
                details: dict[str, Any] | None) -> dict[str, Any]:
    """The ``reset`` event of an un-latch (``state`` is the latched state it ends)."""
    info = details or {}
    overrides = {k: info[k] for k in ("override", "approver") if info.get(k)}
    return {"kind": "reset", "level": "critical", "key": f"reset:{state.activation_count}",
            "activation": state.activation_count, "payload": {
                "who": who, "note": note, "overrides": overrides, "reason": state.reason,
                "activation": state.activation_count,
                "since": state.timestamp.isoformat() if state.timestamp else None}}


def _event(row: Any) -> OutboxEvent:
    ident, kind, level, key, created, activation, seq, payload = row
    try:
        data = json.loads(payload)
    except ValueError:
        data = {"unreadable": str(payload)[:200]}
    return OutboxEvent(id=int(ident), kind=kind, level=level, key=key,
                       created_at=_time(created) or utcnow(), payload=data if isinstance(data, dict) else {},
                       activation=activation, audit_seq=seq)


_EVENT_COLUMNS = "o.id, o.kind, o.level, o.key, o.created_at, o.activation, o.audit_seq, o.payload"


class SQLiteOutbox:
    """The ``Outbox`` protocol on an existing ESS database file, over its own connection.

    Every call runs on a worker thread (the event loop never waits on the disk)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 5000) -> None:
        self._path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self._busy = busy_timeout_ms / 1000
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._sidecars = Sidecars(self._path, drop=self._drop_stale)

    @property
    def path(self) -> str:
        return self._path

    def _drop_stale(self) -> None:
        """Another connection found the -wal/-shm replaced: let go of ours (any thread)."""
        with self._lock:
            self._drop_stale_locked()

    def _drop_stale_locked(self) -> None:
        conn, self._conn = self._conn, None
        self._sidecars.closed()
        if conn is not None:
            close_stale(conn, self._path)

    def _open(self) -> sqlite3.Connection:
        if self._conn is not None:
            gone = self._sidecars.changed()
            if gone is None:
                return self._conn
            log.critical("store file replaced: %s deleted or replaced while the outbox had it open; "
                         "reopening on the file as it now is", gone)
            self._drop_stale_locked()
        if self._sidecars.stale_others():
            raise StoreUnavailable(f"store file replaced: {self._path} is being reopened; retrying")
        if not os.path.exists(self._path):
            raise StoreUnavailable(f"database not found: {self._path} (start the ESS runner to create it)")
        conn = sqlite3.connect(Path(self._path).as_uri() + "?mode=rw", uri=True,
                               timeout=self._busy, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA synchronous = FULL")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error as exc:
            conn.close()
            raise StoreUnavailable(f"cannot read the outbox in {self._path}: {exc}") from exc
        if not {"state", "audit", "outbox", "outbox_delivery"} <= tables:
            conn.close()
            raise StoreUnavailable(
                f"{self._path} has no alert outbox: it is not an ESS database, or one from an older "
                "ess-tui (start the runner once to migrate it)")
        self._conn = conn
        self._sidecars.opened()
        return conn

    def _call(self, fn: Any, *args: Any) -> Any:
        with self._lock:
            try:
                return fn(self._open(), *args)
            except StoreUnavailable:
                raise
            except sqlite3.Error as exc:
                self._close_locked()
                raise StoreUnavailable(f"outbox in {self._path}: {exc}") from exc

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(self._call, fn, *args)

    def _close_locked(self) -> None:
        conn, self._conn = self._conn, None
        self._sidecars.closed()
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    # --- the Outbox protocol -------------------------------------------------------------------

    async def enqueue(
        self, kind: str, *, level: str, key: str, payload: dict[str, Any],
        activation: int | None = None, at: datetime | None = None, audit_seq: int | None = None,
    ) -> int | None:
        when = at or utcnow()

        def op(conn: sqlite3.Connection) -> int | None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                seq = audit_seq
                if seq is None:
                    row = conn.execute("SELECT MAX(seq) FROM audit").fetchone()
                    seq = int(row[0]) if row and row[0] is not None else None
                ident = enqueue_sync(conn, kind, level=level, key=key, payload=payload,
                                     activation=activation, at=when, audit_seq=seq)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return ident

        return await self._run(op)

    def pending_sync(self, sink: str, *, now: datetime, limit: int = 100,
                     levels: Collection[str] | None = None,
                     not_before: datetime | None = None) -> list[OutboxEvent]:
        return self._call(self._pending, sink, now, limit, levels, not_before)

    @staticmethod
    def _pending(conn: sqlite3.Connection, sink: str, now: datetime, limit: int,
                 levels: Collection[str] | None, not_before: datetime | None) -> list[OutboxEvent]:
        wanted = tuple(levels) if levels is not None else LEVELS
        marks = ",".join("?" * len(wanted))
        rows = conn.execute(
            f"SELECT {_EVENT_COLUMNS}, d.next_attempt_at FROM outbox o LEFT JOIN outbox_delivery d "
            f"ON d.event_id = o.id AND d.sink = ? WHERE d.delivered_at IS NULL AND o.level IN ({marks}) "
            "AND o.created_at >= ? ORDER BY o.id LIMIT ?",
            (sink, *wanted, _iso(not_before) if not_before else "", max(1, int(limit))),
        ).fetchall()
        due: list[OutboxEvent] = []
        for row in rows:
            next_at = _time(row[-1])
            if next_at is not None and next_at > now:
                break  # in order: nothing overtakes an event that is waiting for its retry
            due.append(_event(row[:-1]))
        return due

    async def pending(self, sink: str, *, now: datetime, limit: int = 100,
                      levels: Collection[str] | None = None,
                      not_before: datetime | None = None) -> list[OutboxEvent]:
        """Undelivered events for ``sink``, oldest first, up to the first one whose retry is not
        due yet (so delivery stays in order). ``levels`` and ``not_before`` narrow the choice."""
        return await self._run(self._pending, sink, now, limit, levels, not_before)

    async def next_attempt(self, sink: str, levels: Collection[str] | None = None) -> datetime | None:
        """When the oldest undelivered event for ``sink`` may be tried again (None: now)."""
        def op(conn: sqlite3.Connection) -> datetime | None:
            wanted = tuple(levels) if levels is not None else LEVELS
            row = conn.execute(
                "SELECT d.next_attempt_at FROM outbox o LEFT JOIN outbox_delivery d ON d.event_id = "
                f"o.id AND d.sink = ? WHERE d.delivered_at IS NULL AND o.level IN "
                f"({','.join('?' * len(wanted))}) ORDER BY o.id LIMIT 1", (sink, *wanted)).fetchone()
            return _time(row[0]) if row else None
        return await self._run(op)

    async def mark_delivered(self, event_id: int, sink: str, *, at: datetime) -> None:
        await self._run(self._mark, event_id, sink, _iso(at), None, None)

    async def mark_failed(self, event_id: int, sink: str, *, at: datetime, error: str,
                          next_attempt_at: datetime) -> None:
        await self._run(self._mark, event_id, sink, None, error[:500], _iso(next_attempt_at))

    @staticmethod
    def _mark(conn: sqlite3.Connection, event_id: int, sink: str, delivered: str | None,
              error: str | None, next_at: str | None) -> None:
        conn.execute(
            "INSERT INTO outbox_delivery (event_id, sink, attempts, delivered_at, last_error, "
            "next_attempt_at) VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT(event_id, sink) DO UPDATE SET "
            "attempts = attempts + 1, delivered_at = excluded.delivered_at, "
            "last_error = COALESCE(excluded.last_error, last_error), "
            "next_attempt_at = excluded.next_attempt_at",
            (event_id, sink, delivered, error, next_at),
        )

    async def deliveries(self, sink: str | None = None) -> list[SinkDelivery]:
        def op(conn: sqlite3.Connection) -> list[SinkDelivery]:
            sql = ("SELECT event_id, sink, attempts, delivered_at, last_error, next_attempt_at "
                   "FROM outbox_delivery")
            args: tuple[Any, ...] = ()
            if sink is not None:
                sql += " WHERE sink = ?"
                args = (sink,)
            rows = conn.execute(sql + " ORDER BY event_id DESC", args).fetchall()
            return [SinkDelivery(int(r[0]), r[1], int(r[2]), _time(r[3]), r[4], _time(r[5]))
                    for r in rows]
        return await self._run(op)

    # --- for metrics, the CLI and tests --------------------------------------------------------

    def stats_sync(self) -> dict[str, Any]:
        """Pending events per sink is the relay's business; this gives the totals a scrape needs:
        events, and failed attempts per sink (attempts that did not deliver)."""
        def op(conn: sqlite3.Connection) -> dict[str, Any]:
            failures = {
                str(s): int(n) for s, n in conn.execute(
                    "SELECT sink, SUM(attempts - (delivered_at IS NOT NULL)) FROM outbox_delivery "
                    "GROUP BY sink")
            }
            events = int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            return {"events": events, "failures": failures}
        return self._call(op)

    def pending_count_sync(self, sinks: dict[str, Collection[str]], *,
                           not_before: datetime | None = None) -> int:
        """Undelivered (event, sink) pairs over ``sinks`` (name → the levels it takes)."""
        def op(conn: sqlite3.Connection) -> int:
            total = 0
            for sink, levels in sinks.items():
                wanted = tuple(levels) or LEVELS
                total += int(conn.execute(
                    "SELECT COUNT(*) FROM outbox o LEFT JOIN outbox_delivery d ON d.event_id = o.id "
                    f"AND d.sink = ? WHERE d.delivered_at IS NULL AND o.level IN "
                    f"({','.join('?' * len(wanted))}) AND o.created_at >= ?",
                    (sink, *wanted, _iso(not_before) if not_before else "")).fetchone()[0])
            return total
        return self._call(op)

    async def events(self, after_id: int = 0, limit: int = 1000) -> list[OutboxEvent]:
        def op(conn: sqlite3.Connection) -> list[OutboxEvent]:
            rows = conn.execute(f"SELECT {_EVENT_COLUMNS} FROM outbox o WHERE o.id > ? ORDER BY "
                                "o.id LIMIT ?", (after_id, limit)).fetchall()
            return [_event(r) for r in rows]
        return await self._run(op)

    async def close(self) -> None:
        with self._lock:
            self._close_locked()
