"""``SQLiteStore``: the ESS latch, policy keys, audit chain and runner lease in one SQLite file.

The engine talks to it through the ``StateStore`` protocol (async, aiosqlite). Seed-style code can
also call the synchronous ``get(key)`` / ``set(key, dict)`` the seed's policy store has; those use
a short-lived stdlib connection. Every write is one ``BEGIN IMMEDIATE`` transaction in WAL mode with
``synchronous=FULL``: when ``latch()`` returns, the latch, its policy key and its audit row are on
disk together, or none of them is.

Fail closed: when the file cannot be read, ``load_state()`` raises ``StoreUnavailable`` with the
reason in plain words, and ``get("emergency_stop")`` answers "active".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from ess_tui.engine.state import EmergencyState, ESSStatus, as_utc, clean_text, os_user, utcnow
from ess_tui.engine.store import (
    AuditRecord,
    AuditVerification,
    LatchResult,
    LeaseInfo,
    NotLatchedError,
    StaleResetError,
    entry_actor,
    entry_at,
    stale_reset_reason,
    StoreError,
    StoreUnavailable,
)
from ess_tui.engine import audit_chain
from ess_tui.engine.audit_chain import MODE_HMAC, MODE_SHA256, ChainRow
from ess_tui.store import outbox
from ess_tui.store.schema import (
    EMERGENCY_KEY,
    RUNNER_LEASE,
    SCHEMA_VERSION,
    STATE_SQL,
    SchemaError,
    SchemaTooNew,
    create_private_file,
    ensure_schema,
    explain_error,
    read_version,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_KEY_FROM_ENV: Any = object()

_LAST_AUDIT_SQL = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
_INSERT_AUDIT_SQL = (
    "INSERT INTO audit (seq, at, action, actor, reason, details, prev_hash, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_AUDIT_HEAD_SQL = "UPDATE meta SET value = ? WHERE key = 'audit_head_seq'"
_UPSERT_POLICY_SQL = (
    "INSERT INTO policy (key, value, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
_AUDIT_COLUMNS = "seq, at, action, actor, reason, details, prev_hash, hash"
_LEASE_SQL = "SELECT holder, acquired_at, heartbeat_at, expires_at FROM lease WHERE name = ?"

Op = Callable[[aiosqlite.Connection], Awaitable[T]]


def _iso(value: datetime) -> str:
    return as_utc(value).isoformat(timespec="microseconds")


def _parse_time(text: str | None) -> datetime | None:
    return as_utc(datetime.fromisoformat(text)) if text else None


def _with(details: Mapping[str, Any] | Any | None, **ours: Any) -> dict[str, Any]:
    """The caller's details with ours on top (ours win on a name clash)."""
    if details is None:
        base: dict[str, Any] = {}
    elif isinstance(details, Mapping):
        base = dict(details)
    else:
        base = {"details": details}
    base.update(ours)
    return base


def _policy_json(key: str, value: Any) -> str:
    """Validate a policy write from outside latch/reset and return its JSON text."""
    if not isinstance(key, str) or not key.strip() or len(key) > 200:
        raise ValueError("policy key must be a non-empty text of at most 200 characters")
    if key == EMERGENCY_KEY:
        raise ValueError(
            "the 'emergency_stop' policy key is written only by latch and reset: nothing may "
            "un-latch the ESS by writing it (use an audited reset)"
        )
    if not isinstance(value, Mapping):
        raise ValueError(f"policy value for {key!r} must be a dict, not {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"policy value for {key!r} is not plain JSON: {exc}") from exc


def fail_closed_policy(why: str) -> dict[str, Any]:
    """The ``emergency_stop`` value given when the real one cannot be read: latched."""
    return {
        "active": True,
        "status": ESSStatus.ACTIVE.value,
        "reason": clean_text(f"ESS state unavailable: {why}"),
        "timestamp": utcnow().isoformat(),
        "activation_count": 0,
        "auto_recover": False,
        "unavailable": True,
    }


def _record(row: ChainRow) -> AuditRecord:
    return AuditRecord(
        seq=row.seq, at=_parse_time(row.at) or datetime.fromtimestamp(0, timezone.utc),
        action=row.action, actor=row.actor, reason=row.reason, details=row.details,
        prev_hash=row.prev_hash, hash=row.hash,
    )


def _chain_row(raw: tuple[Any, ...]) -> ChainRow:
    seq, at, action, actor, reason, details, prev_hash, digest = raw
    try:
        parsed = json.loads(details)
        if not isinstance(parsed, dict):
            parsed = {"unreadable": str(details)[:200]}
    except (TypeError, ValueError):
        parsed = {"unreadable": str(details)[:200]}
    return ChainRow(int(seq), str(at), str(action), str(actor), reason, parsed,
                    str(prev_hash), str(digest))


class SQLiteStore:
    """The ESS's durable state in one SQLite file (created 0o600 on first use).

    Constructing it does no I/O; the file is opened on first use and the connection is kept.
    Operations run one at a time; a write started is finished even if its caller is cancelled.
    ``create=False`` is for tools that only look: a missing file is then ``StoreUnavailable``.
    ``audit_key`` defaults to ``QT_ESS_AUDIT_KEY`` from the environment.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        busy_timeout_ms: int = 5000,
        audit_key: bytes | str | None = _KEY_FROM_ENV,
    ) -> None:
        self._path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self._create = create
        self._busy_ms = int(busy_timeout_ms)
        key = audit_chain.audit_key_from_env() if audit_key is _KEY_FROM_ENV else audit_key
        if isinstance(key, str):
            key = key.encode("utf-8")
        self._key: bytes | None = key or None
        self._lock = asyncio.Lock()
        self._conn: aiosqlite.Connection | None = None
        self._prep_lock = threading.Lock()
        self._prepared = False
        self._audit_mode: str | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        #: Milliseconds the last write transaction took, BEGIN to COMMIT (None before any write).
        self.write_latency_ms: float | None = None
        #: Set when the audit key and the trail's mode disagree (shown to the operator).
        self.audit_warning: str | None = None

    # --- properties --------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return self._path

    @property
    def audit_mode(self) -> str | None:
        """``sha256`` or ``hmac-sha256`` once the file has been opened."""
        return self._audit_mode

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    # --- opening -----------------------------------------------------------------------------

    def _uri(self) -> str:
        # mode=rw: after the first preparation a vanished file is an error, never a fresh
        # (un-latched) database.
        return Path(self._path).as_uri() + "?mode=rw"

    def _prepare(self, *, recheck: bool = False) -> None:
        """Create the file (0o600) if this store never opened it, migrate it and check it.

        Runs once for the seed's sync calls, and on every (re)open of the async connection.
        Once opened, a vanished file is an error: it is never silently re-created. Blocking.
        """
        with self._prep_lock:
            if self._prepared and not recheck:
                return
            if not self._prepared and self._create:
                create_private_file(self._path)
            with contextlib.closing(
                sqlite3.connect(self._uri(), uri=True, timeout=self._busy_ms / 1000,
                                isolation_level=None)
            ) as conn:
                found = read_version(conn)
                if found > SCHEMA_VERSION:
                    raise SchemaTooNew(found)
                conn.execute("PRAGMA journal_mode = WAL").fetchone()
                conn.execute("PRAGMA synchronous = FULL")
                ensure_schema(conn, audit_mode=MODE_HMAC if self._key else MODE_SHA256)
                check = conn.execute("PRAGMA quick_check").fetchall()
                if [tuple(r) for r in check] != [("ok",)]:
                    first = check[0][0] if check else "no answer"
                    raise StoreUnavailable(f"database is corrupt: {self._path}: {first}")
                rows = conn.execute("SELECT value FROM meta WHERE key = 'audit_mode'").fetchall()
                self._audit_mode = rows[0][0] if rows else MODE_SHA256
            self._audit_warning()
            self._prepared = True

    def _audit_warning(self) -> None:
        env = audit_chain.AUDIT_KEY_ENV
        if self._audit_mode == MODE_HMAC and self._key is None:
            self.audit_warning = (
                f"the audit trail in {self._path} is keyed (HMAC) but {env} is not set: new "
                "audit rows are written unkeyed and will fail verification"
            )
        elif self._audit_mode == MODE_SHA256 and self._key is not None:
            self.audit_warning = (
                f"{env} is set but the audit trail in {self._path} was created without a key: "
                "the key is not used"
            )
        else:
            self.audit_warning = None
        if self.audit_warning:
            log.warning("%s", self.audit_warning)

    def _hash_key(self) -> bytes | None:
        return self._key if self._audit_mode == MODE_HMAC else None

    async def _ensure_open(self) -> aiosqlite.Connection:
        if self._conn is not None:
            return self._conn
        await asyncio.to_thread(self._prepare, recheck=True)
        conn = aiosqlite.connect(self._uri(), uri=True, isolation_level=None,
                                 timeout=self._busy_ms / 1000)
        # aiosqlite's worker thread is not a daemon: a store left open would keep the process
        # alive at exit. Committed data is safe either way (every commit is fsync'd).
        thread = getattr(conn, "_thread", None)
        if isinstance(thread, threading.Thread) and not thread.is_alive():
            thread.daemon = True
        await conn
        try:
            await conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            await conn.execute("PRAGMA synchronous = FULL")
            await conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    # --- running operations ------------------------------------------------------------------

    async def _run(self, op: Op[T], *, txn: str | None) -> T:
        """Run ``op`` alone on the connection, inside ``BEGIN <txn>`` when txn is given.

        The work runs in its own task: cancelling the caller does not cut a transaction in half.
        """
        task = asyncio.ensure_future(self._serialised(op, txn))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return await asyncio.shield(task)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that was cancelled no longer wants it

    async def _serialised(self, op: Op[T], txn: str | None) -> T:
        async with self._lock:
            try:
                conn = await self._ensure_open()
                if txn is None:
                    return await op(conn)
                started = time.perf_counter()
                await conn.execute(f"BEGIN {txn}")
                try:
                    result = await op(conn)
                    await conn.execute("COMMIT")
                except BaseException:
                    try:
                        await conn.execute("ROLLBACK")
                    except Exception:  # noqa: BLE001
                        await self._drop_connection()
                    raise
                if txn == "IMMEDIATE":
                    self.write_latency_ms = (time.perf_counter() - started) * 1000
                return result
            except StoreError:
                raise
            except (sqlite3.Error, OSError, SchemaError) as exc:
                if not isinstance(exc, sqlite3.IntegrityError):
                    await self._drop_connection()
                raise StoreUnavailable(explain_error(exc, self._path)) from exc
            except Exception as exc:
                await self._drop_connection()
                raise StoreError(
                    f"unexpected error using {self._path}: {type(exc).__name__}: {exc}"
                ) from exc

    # --- shared pieces of transactions -------------------------------------------------------

    def _state_from_row(self, row: Any) -> EmergencyState:
        version, active, reason, since, count, last_by, last_at, _change = row
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(explain_error(SchemaTooNew(version), self._path))
        if active not in (0, 1):
            raise StoreUnavailable(f"database is corrupt: {self._path}: state.active = {active!r}")
        try:
            return EmergencyState(
                status=ESSStatus.ACTIVE if active else ESSStatus.INACTIVE,
                reason=reason,
                timestamp=_parse_time(since),
                activation_count=int(count),
                last_reset_by=last_by,
                last_reset_at=_parse_time(last_at),
            )
        except (TypeError, ValueError) as exc:
            raise StoreUnavailable(f"database is corrupt: {self._path}: state row: {exc}") from exc

    def _missing_state(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"database is corrupt: {self._path}: the ESS state row is missing; restore the file "
            "from a backup"
        )

    async def _read_state(self, conn: aiosqlite.Connection) -> EmergencyState:
        rows = list(await conn.execute_fetchall(STATE_SQL))
        if not rows:
            raise self._missing_state()
        return self._state_from_row(rows[0])

    async def _append(
        self, conn: aiosqlite.Connection, *, at: datetime, action: str, actor: str,
        reason: str | None, details: Mapping[str, Any] | None,
    ) -> ChainRow:
        rows = list(await conn.execute_fetchall(_LAST_AUDIT_SQL))
        last = (int(rows[0][0]), str(rows[0][1])) if rows else None
        row = audit_chain.next_row(last, at=at, action=action, actor=actor, reason=reason,
                                   details=details, key=self._hash_key())
        await conn.execute(_INSERT_AUDIT_SQL, (
            row.seq, row.at, row.action, row.actor, row.reason,
            audit_chain.canonical_json(row.details), row.prev_hash, row.hash,
        ))
        await conn.execute(_AUDIT_HEAD_SQL, (str(row.seq),))
        return row

    def _append_sync(
        self, conn: sqlite3.Connection, *, at: datetime, action: str, actor: str,
        reason: str | None, details: Mapping[str, Any] | None,
    ) -> ChainRow:
        rows = conn.execute(_LAST_AUDIT_SQL).fetchall()
        last = (int(rows[0][0]), str(rows[0][1])) if rows else None
        row = audit_chain.next_row(last, at=at, action=action, actor=actor, reason=reason,
                                   details=details, key=self._hash_key())
        conn.execute(_INSERT_AUDIT_SQL, (
            row.seq, row.at, row.action, row.actor, row.reason,
            audit_chain.canonical_json(row.details), row.prev_hash, row.hash,
        ))
        conn.execute(_AUDIT_HEAD_SQL, (str(row.seq),))
        return row

    async def _write_emergency_policy(
        self, conn: aiosqlite.Connection, state: EmergencyState, at: datetime
    ) -> None:
        await conn.execute(_UPSERT_POLICY_SQL, (
            EMERGENCY_KEY, json.dumps(state.to_policy(), sort_keys=True), _iso(at),
        ))

    # --- the latch ---------------------------------------------------------------------------

    async def load_state(self) -> EmergencyState:
        """The latch as stored. Raises ``StoreUnavailable`` (never answers "inactive") if unsure."""
        return await self._run(self._read_state, txn=None)

    async def change_seq(self) -> int:
        """A number that goes up on every latch and reset, by any process: cheap to poll."""
        async def op(conn: aiosqlite.Connection) -> int:
            rows = list(await conn.execute_fetchall("SELECT change_seq FROM state WHERE id = 1"))
            if not rows:
                raise self._missing_state()
            return int(rows[0][0])
        return await self._run(op, txn=None)

    async def latch(
        self, reason: str, *, at: datetime | None = None, actor: str = "ess",
        details: dict[str, Any] | None = None,
    ) -> LatchResult:
        """Latch in one transaction with its policy key and audit row (see ``StateStore``)."""
        when = entry_at(at)
        why = clean_text(reason) or "(no reason given)"
        who = entry_actor(actor)

        def transaction(raw: sqlite3.Connection) -> LatchResult:
            # The whole transaction runs as one call on the database thread: one hand-off
            # instead of one per statement, which is what a busy process (the control room)
            # pays for most.
            started = time.perf_counter()
            raw.execute("BEGIN IMMEDIATE")
            try:
                rows = raw.execute(STATE_SQL).fetchall()
                if not rows:
                    raise self._missing_state()
                state = self._state_from_row(rows[0])
                if state.active:
                    self._append_sync(raw, at=when, action="extra_trigger", actor=who, reason=why,
                                      details=_with(details, latched_reason=state.reason,
                                                    activation_count=state.activation_count))
                    result = LatchResult(state, False)
                else:
                    new = EmergencyState(
                        status=ESSStatus.ACTIVE, reason=why, timestamp=when,
                        activation_count=state.activation_count + 1,
                        last_reset_by=state.last_reset_by, last_reset_at=state.last_reset_at,
                    )
                    raw.execute(
                        "UPDATE state SET active = 1, reason = ?, since = ?, activation_count = ?, "
                        "change_seq = change_seq + 1 WHERE id = 1",
                        (why, _iso(when), new.activation_count),
                    )
                    raw.execute(_UPSERT_POLICY_SQL, (
                        EMERGENCY_KEY, json.dumps(new.to_policy(), sort_keys=True), _iso(when),
                    ))
                    row = self._append_sync(raw, at=when, action="activate", actor=who, reason=why,
                                            details=_with(details, activation_count=new.activation_count))
                    # outbox: the latched alert commits with the latch (issue 12)
                    event = outbox.latched_event(new, actor=who, details=details)
                    event["payload"]["audit_head"] = f"{row.seq}:{row.hash}"
                    outbox.enqueue_sync(raw, event.pop("kind"), at=when, audit_seq=row.seq, **event)
                    result = LatchResult(new, True)
                raw.execute("COMMIT")
            except BaseException:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise
            self.write_latency_ms = (time.perf_counter() - started) * 1000
            return result

        async def op(conn: aiosqlite.Connection) -> LatchResult:
            return await conn._execute(transaction, conn._conn)  # aiosqlite's own thread

        return await self._run(op, txn=None)

    async def unlatch(
        self, reset_by: str, *, at: datetime | None = None, note: str | None = None,
        details: dict[str, Any] | None = None, expected_activation: int | None = None,
    ) -> EmergencyState:
        """Reset in one transaction with its audit row. ``NotLatchedError`` (audited) if armed;
        ``StaleResetError`` (audited) if ``expected_activation`` is not the latched one."""
        when = entry_at(at)
        who = entry_actor(reset_by)
        why = clean_text(note) if note else None

        async def op(conn: aiosqlite.Connection) -> EmergencyState | str | None:
            state = await self._read_state(conn)
            if not state.active:
                await self._append(conn, at=when, action="reset_refused", actor=who,
                                   reason="not latched", details=_with(details, note=why))
                return None
            if expected_activation is not None and expected_activation != state.activation_count:
                why_stale = stale_reset_reason(state.activation_count, expected_activation)
                await self._append(conn, at=when, action="reset_refused", actor=who,
                                   reason=why_stale, details=_with(details, note=why))
                return why_stale
            new = EmergencyState(
                status=ESSStatus.INACTIVE, reason=None, timestamp=when,
                activation_count=state.activation_count, last_reset_by=who, last_reset_at=when,
            )
            await conn.execute(
                "UPDATE state SET active = 0, reason = NULL, since = ?, last_reset_by = ?, "
                "last_reset_at = ?, change_seq = change_seq + 1 WHERE id = 1",
                (_iso(when), who, _iso(when)),
            )
            await self._write_emergency_policy(conn, new, when)
            row = await self._append(
                conn, at=when, action="reset", actor=who, reason=why,
                details=_with(details, previous_reason=state.reason,
                              latched_since=state.timestamp,
                              activation_count=state.activation_count),
            )
            # outbox: the reset alert commits with the reset (issue 12)
            event = outbox.reset_event(state, who=who, note=why, details=details)
            event["payload"]["audit_head"] = f"{row.seq}:{row.hash}"
            await conn.execute(outbox.ENQUEUE_SQL, outbox.enqueue_params(
                event.pop("kind"), at=when, audit_seq=row.seq, **event))
            return new

        result = await self._run(op, txn="IMMEDIATE")
        if result is None:
            raise NotLatchedError(
                "the ESS is not latched: there is nothing to reset (the attempt was audited)"
            )
        if isinstance(result, str):
            raise StaleResetError(result)
        return result

    # --- audit trail -------------------------------------------------------------------------

    async def audit(
        self, action: str, *, actor: str, reason: str | None = None,
        details: dict[str, Any] | None = None, at: datetime | None = None,
    ) -> AuditRecord:
        """Append one row to the audit trail."""
        when = entry_at(at)

        async def op(conn: aiosqlite.Connection) -> ChainRow:
            return await self._append(conn, at=when, action=action, actor=actor, reason=reason,
                                      details=details)

        return _record(await self._run(op, txn="IMMEDIATE"))

    async def read_audit(
        self, limit: int | None = None, *, newest_first: bool = True
    ) -> list[AuditRecord]:
        """The newest ``limit`` rows (all when None), newest first unless ``newest_first``
        is False."""
        count = -1 if limit is None else max(0, int(limit))

        async def op(conn: aiosqlite.Connection) -> list[AuditRecord]:
            rows = await conn.execute_fetchall(
                f"SELECT {_AUDIT_COLUMNS} FROM audit ORDER BY seq DESC LIMIT ?", (count,)
            )
            return [_record(_chain_row(tuple(r))) for r in rows]

        records = await self._run(op, txn=None)
        return records if newest_first else records[::-1]

    async def verify_audit(self) -> AuditVerification:
        """Walk the chain; name the first row that was altered, removed or inserted."""
        async def op(conn: aiosqlite.Connection) -> AuditVerification:
            meta: dict[str, str] = {
                str(k): str(v)
                for k, v in await conn.execute_fetchall("SELECT key, value FROM meta")
            }
            rows = await conn.execute_fetchall(f"SELECT {_AUDIT_COLUMNS} FROM audit ORDER BY seq")
            try:
                head = int(meta.get("audit_head_seq", ""))
            except ValueError:
                head = None
            return audit_chain.verify_chain(
                (_chain_row(tuple(r)) for r in rows),
                mode=meta.get("audit_mode", MODE_SHA256), key=self._key, head_seq=head,
            )

        return await self._run(op, txn="DEFERRED")

    # --- policy keys -------------------------------------------------------------------------

    async def get_policy(self, key: str) -> dict[str, Any] | None:
        """A policy value, or None. ``emergency_stop`` is read from the latch itself."""
        async def op(conn: aiosqlite.Connection) -> dict[str, Any] | None:
            if key == EMERGENCY_KEY:
                return (await self._read_state(conn)).to_policy()
            rows = list(await conn.execute_fetchall(
                "SELECT value FROM policy WHERE key = ?", (key,)))
            return self._decode_policy(key, rows[0][0]) if rows else None

        return await self._run(op, txn=None)

    def _decode_policy(self, key: str, text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise StoreError(f"policy key {key!r} in {self._path} holds unreadable JSON") from exc
        if not isinstance(value, dict):
            raise StoreError(f"policy key {key!r} in {self._path} does not hold an object")
        return value

    async def set_policy(
        self, key: str, value: dict[str, Any], *, audit: bool = False, actor: str | None = None
    ) -> None:
        """Write a policy key. Refuses ``emergency_stop``: only latch/reset write it.

        Not audited unless ``audit`` is true (some keys, e.g. the equity baseline, change often);
        the row's ``updated_at`` records every write."""
        text = _policy_json(key, value)
        when = utcnow()
        who = entry_actor(actor)

        async def op(conn: aiosqlite.Connection) -> None:
            await conn.execute(_UPSERT_POLICY_SQL, (key, text, _iso(when)))
            if audit:
                await self._append(conn, at=when, action="policy_set", actor=who, reason=None,
                                   details={"key": key, "value": value})

        await self._run(op, txn="IMMEDIATE")

    # --- runner lease ------------------------------------------------------------------------

    @staticmethod
    def _lease_from_row(row: Any) -> LeaseInfo | None:
        try:
            return LeaseInfo(
                holder=str(row[0]), acquired_at=_parse_time(row[1]),  # type: ignore[arg-type]
                heartbeat_at=_parse_time(row[2]),  # type: ignore[arg-type]
                expires_at=_parse_time(row[3]),  # type: ignore[arg-type]
            )
        except (TypeError, ValueError):
            return None  # unreadable lease: treated as expired

    async def acquire_lease(
        self, holder: str, *, ttl_sec: float, at: datetime | None = None
    ) -> LeaseInfo:
        """Take the runner lease if free or expired, renew it if ``holder`` has it."""
        if not ttl_sec or ttl_sec <= 0:
            raise ValueError("lease ttl_sec must be positive")
        when = entry_at(at)
        who = entry_actor(holder)
        expires = when + timedelta(seconds=float(ttl_sec))

        async def op(conn: aiosqlite.Connection) -> LeaseInfo:
            rows = list(await conn.execute_fetchall(_LEASE_SQL, (RUNNER_LEASE,)))
            current = self._lease_from_row(rows[0]) if rows else None
            if current is not None and current.holder == who:
                await conn.execute(
                    "UPDATE lease SET heartbeat_at = ?, expires_at = ? WHERE name = ?",
                    (_iso(when), _iso(expires), RUNNER_LEASE),
                )
                return LeaseInfo(who, current.acquired_at, when, expires)
            if current is not None and current.expires_at > when:
                return current
            await conn.execute(
                "INSERT OR REPLACE INTO lease (name, holder, acquired_at, heartbeat_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?)",
                (RUNNER_LEASE, who, _iso(when), _iso(when), _iso(expires)),
            )
            previous = current.holder if current else (str(rows[0][0]) if rows else None)
            reason = (f"lease of {current.holder} expired at {_iso(current.expires_at)}"
                      if current else ("unreadable lease replaced" if rows else None))
            await self._append(conn, at=when, action="lease_acquired", actor=who, reason=reason,
                               details={"previous_holder": previous, "ttl_sec": float(ttl_sec),
                                        "expires_at": _iso(expires)})
            return LeaseInfo(who, when, when, expires)

        return await self._run(op, txn="IMMEDIATE")

    async def read_lease(self) -> LeaseInfo | None:
        async def op(conn: aiosqlite.Connection) -> LeaseInfo | None:
            rows = list(await conn.execute_fetchall(_LEASE_SQL, (RUNNER_LEASE,)))
            return self._lease_from_row(rows[0]) if rows else None
        return await self._run(op, txn=None)

    async def release_lease(self, holder: str) -> None:
        """Give the lease up if ``holder`` has it (audited); otherwise do nothing."""
        who = clean_text(holder, limit=200)

        async def op(conn: aiosqlite.Connection) -> None:
            cur = await conn.execute(
                "DELETE FROM lease WHERE name = ? AND holder = ?", (RUNNER_LEASE, who))
            if cur.rowcount:
                await self._append(conn, at=utcnow(), action="lease_released", actor=who,
                                   reason=None, details=None)

        await self._run(op, txn="IMMEDIATE")

    # --- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Finish pending operations and close the connection (a later use reopens it)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        async with self._lock:
            await self._drop_connection()

    async def __aenter__(self) -> SQLiteStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the seed's synchronous policy store -------------------------------------------------

    def _sync_connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._uri(), uri=True, timeout=self._busy_ms / 1000,
                               isolation_level=None)
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def get(self, key: str) -> dict[str, Any]:
        """The seed's ``policy_store.get(key)``: a dict (``{}`` when unset). Blocking.

        ``get("emergency_stop")`` never raises: when the file cannot be read it answers latched,
        with the reason why.
        """
        try:
            self._prepare()
            with contextlib.closing(self._sync_connect()) as conn:
                if key == EMERGENCY_KEY:
                    rows = conn.execute(STATE_SQL).fetchall()
                    if not rows:
                        raise self._missing_state()
                    return self._state_from_row(rows[0]).to_policy()
                rows = conn.execute("SELECT value FROM policy WHERE key = ?", (key,)).fetchall()
                return self._decode_policy(key, rows[0][0]) if rows else {}
        except Exception as exc:  # noqa: BLE001 - fail closed on anything
            why = str(exc) if isinstance(exc, StoreError) else explain_error(exc, self._path)
            if key == EMERGENCY_KEY:
                return fail_closed_policy(why)
            if isinstance(exc, StoreError):
                raise
            raise StoreUnavailable(why) from exc

    def set(self, key: str, value: dict[str, Any], *, audit: bool = False) -> None:
        """The seed's ``policy_store.set(key, dict)``. Blocking. Audited only if ``audit``.

        Refuses ``emergency_stop`` with ``ValueError``: the latch changes only by latch/reset.
        """
        text = _policy_json(key, value)
        when = utcnow()
        try:
            self._prepare()
            with contextlib.closing(self._sync_connect()) as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(_UPSERT_POLICY_SQL, (key, text, _iso(when)))
                    if audit:
                        self._append_sync(conn, at=when, action="policy_set", actor=os_user(),
                                          reason=None, details={"key": key, "value": value})
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except StoreError:
            raise
        except (sqlite3.Error, OSError, SchemaError) as exc:
            raise StoreUnavailable(explain_error(exc, self._path)) from exc
