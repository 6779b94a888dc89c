"""``PostgresStore``: the ESS latch, policy keys, audit chain, runner lease and outbox on a
PostgreSQL server, for a desk whose processes run on several hosts.

The same :class:`~ess_tui.engine.store.StateStore` protocol as the SQLite file. A latch is one
transaction: lock the state row (``SELECT ... FOR UPDATE``), update it, write the
``emergency_stop`` policy key, append the audit row, enqueue the ``latched`` outbox event and
``pg_notify`` the channel; when ``latch()`` returns the commit is durable
(``synchronous_commit=on``) and every LISTENing gate is told. A reset runs the reset policy inside
its own transaction, on the row it holds locked.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg

from ess_tui.engine.audit_chain import with_details
from ess_tui.engine.policy_keys import policy_json
from ess_tui.engine.state import EmergencyState, ESSStatus, clean_text, utcnow
from ess_tui.engine.store import (
    LatchResult,
    NotLatchedError,
    ResetGuard,
    StaleResetError,
    StoreUnavailable,
    entry_actor,
    entry_at,
    stale_reset_reason,
)
from ess_tui.store import outbox as outbox_events
from ess_tui.store.postgres.outbox import OutboxMixin
from ess_tui.store.postgres.schema import EMERGENCY_KEY, STATE_COLUMNS

Conn = psycopg.AsyncConnection[Any]

_LAST_FLATTEN_SQL = (
    "SELECT action, details FROM audit WHERE action IN ('flattened', 'flatten_failed') "
    "AND seq > COALESCE((SELECT max(seq) FROM audit WHERE action = 'activate'), 0) "
    "ORDER BY seq DESC LIMIT 1"
)
_UPSERT_POLICY_SQL = (
    "INSERT INTO policy (key, value, updated_at) VALUES (%s, %s::jsonb, %s) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)


def notify_payload(state: EmergencyState, change_seq: int) -> str:
    """What a NOTIFY carries: enough for a gate to decide without asking (under 8000 bytes)."""
    return json.dumps({
        "active": state.active, "reason": state.reason,
        "since": state.timestamp.isoformat() if state.timestamp else None,
        "activation_count": state.activation_count, "change_seq": change_seq,
    })


class PostgresStore(OutboxMixin):
    """The ESS's durable state on a PostgreSQL server (``postgresql://user@host/db``).

    Constructing it does no I/O. The password comes from ``PGPASSWORD`` or the variable
    ``?password_env=NAME`` names, never from the database, logs or audit trail.
    ``create=False`` is for tools that only look: a database without the schema is then
    ``StoreUnavailable``. ``audit_key`` defaults to ``QT_ESS_AUDIT_KEY``.
    """

    # --- the state row ---------------------------------------------------------------------

    def _state(self, row: Any) -> tuple[EmergencyState, int]:
        if row is None:
            raise StoreUnavailable(f"database is damaged: {self.url}: the ESS state row is "
                                   "missing; restore it from a backup")
        active, reason, since, count, last_by, last_at, change_seq = row
        if not isinstance(active, bool):
            raise StoreUnavailable(f"database is damaged: {self.url}: state.active = {active!r}")
        return EmergencyState(
            status=ESSStatus.ACTIVE if active else ESSStatus.INACTIVE, reason=reason,
            timestamp=since, activation_count=int(count), last_reset_by=last_by,
            last_reset_at=last_at,
        ), int(change_seq)

    async def _read_state(self, conn: Conn, *, lock: bool = False) -> tuple[EmergencyState, int]:
        sql = f"SELECT {STATE_COLUMNS} FROM state WHERE id = 1" + (" FOR UPDATE" if lock else "")
        cur = await conn.execute(sql)
        return self._state(await cur.fetchone())

    async def _lock_state_and_head(
        self, conn: Conn
    ) -> tuple[EmergencyState, int, tuple[int, str] | None]:
        """Lock the state row and the audit chain's head in one statement (one round trip)."""
        cur = await conn.execute(
            f"SELECT {STATE_COLUMNS}, h.seq, h.hash FROM state s CROSS JOIN audit_head h "
            "WHERE s.id = 1 AND h.id = 1 FOR UPDATE")
        row = await cur.fetchone()
        state, seq = self._state(row[:7] if row else None)
        last = (int(row[7]), str(row[8])) if int(row[7]) > 0 else None
        return state, seq, last

    async def _publish(self, conn: Conn, state: EmergencyState, change_seq: int,
                       at: datetime) -> None:
        await conn.execute(_UPSERT_POLICY_SQL, (
            EMERGENCY_KEY, json.dumps(state.to_policy(), sort_keys=True), at))
        await conn.execute("SELECT pg_notify(%s, %s)",
                           (self.channel, notify_payload(state, change_seq)))

    async def load_state(self) -> EmergencyState:
        """The latch as stored. Raises ``StoreUnavailable`` (never answers "inactive") if unsure."""
        async def op(conn: Conn) -> EmergencyState:
            return (await self._read_state(conn))[0]

        return await self._run(op, write=False, txn=False)

    async def change_seq(self) -> int:
        """A number that goes up on every latch and reset, by any process on any host."""
        async def op(conn: Conn) -> int:
            return (await self._read_state(conn))[1]

        return await self._run(op, write=False, txn=False)

    # --- latch and reset -------------------------------------------------------------------

    async def latch(
        self, reason: str, *, at: datetime | None = None, actor: str = "ess",
        details: dict[str, Any] | None = None,
    ) -> LatchResult:
        """Latch in one transaction with its policy key, audit row, outbox event and NOTIFY."""
        when = entry_at(at)
        why = clean_text(reason) or "(no reason given)"
        who = entry_actor(actor)

        async def op(conn: Conn) -> LatchResult:
            state, seq, last = await self._lock_state_and_head(conn)
            if state.active:
                row = self._chain(last, at=when, action="extra_trigger", actor=who, reason=why,
                                  details=with_details(details, latched_reason=state.reason,
                                                       activation_count=state.activation_count))
                await self._write_row(conn, row)
                return LatchResult(state, False)
            new = EmergencyState(
                status=ESSStatus.ACTIVE, reason=why, timestamp=when,
                activation_count=state.activation_count + 1,
                last_reset_by=state.last_reset_by, last_reset_at=state.last_reset_at)
            row = self._chain(last, at=when, action="activate", actor=who, reason=why,
                              details=with_details(details, activation_count=new.activation_count))
            # Queued (pipeline mode): they travel to the server together with COMMIT.
            await conn.execute(
                "UPDATE state SET active = true, reason = %s, since = %s, activation_count = %s, "
                "change_seq = change_seq + 1 WHERE id = 1", (why, when, new.activation_count))
            await self._write_row(conn, row)
            # The same event as the SQLite store's (what the alert messages read).
            event = outbox_events.latched_event(new, actor=who, details=details)
            event["payload"]["audit_head"] = f"{row.seq}:{row.hash}"
            await self._enqueue(conn, event.pop("kind"), at=when, audit_seq=row.seq,
                                queued=True, **event)
            await self._publish(conn, new, seq + 1, when)
            return LatchResult(new, True)

        return await self._run(op, pipeline=True)

    async def unlatch(
        self, reset_by: str, *, at: datetime | None = None, note: str | None = None,
        details: dict[str, Any] | None = None, expected_activation: int | None = None,
        guard: ResetGuard | None = None,
    ) -> EmergencyState:
        """Reset in one transaction with its audit row, outbox event and NOTIFY. The reset policy
        ``guard`` runs inside it, on the state row held locked. Refusals are audited, then
        raised: ``NotLatchedError``, ``StaleResetError`` or ``ResetRefused``."""
        when = entry_at(at)
        who = entry_actor(reset_by)
        why = clean_text(note) if note else None

        last: tuple[int, str] | None = None

        async def refuse(conn: Conn, kind: str, reason: str) -> tuple[str, str]:
            row = self._chain(last, at=when, action="reset_refused", actor=who, reason=reason,
                              details=with_details(details, note=why))
            await self._write_row(conn, row)
            return (kind, reason)

        async def op(conn: Conn) -> EmergencyState | tuple[str, str]:
            nonlocal last
            state, seq, last = await self._lock_state_and_head(conn)
            if not state.active:
                return await refuse(conn, "not_latched", "not latched")
            if expected_activation is not None and expected_activation != state.activation_count:
                return await refuse(conn, "stale",
                                    stale_reset_reason(state.activation_count, expected_activation))
            if guard is not None:
                cur = await conn.execute(_LAST_FLATTEN_SQL)
                flat = await cur.fetchone()
                outcome = None
                if flat is not None:
                    parsed = json.loads(flat[1]) if flat[1] else {}
                    outcome = {"action": flat[0], **(parsed if isinstance(parsed, dict) else {})}
                try:
                    refusal = guard(state, outcome)
                except Exception as exc:  # noqa: BLE001 - a broken policy never un-latches
                    refusal = f"the reset policy failed ({type(exc).__name__}: {exc})"
                if refusal:
                    return await refuse(conn, "guard", clean_text(refusal))
            new = EmergencyState(
                status=ESSStatus.INACTIVE, reason=None, timestamp=when,
                activation_count=state.activation_count, last_reset_by=who, last_reset_at=when)
            row = self._chain(
                last, at=when, action="reset", actor=who, reason=why,
                details=with_details(details, previous_reason=state.reason,
                                     latched_since=state.timestamp,
                                     activation_count=state.activation_count))
            await conn.execute(
                "UPDATE state SET active = false, reason = NULL, since = %s, last_reset_by = %s, "
                "last_reset_at = %s, change_seq = change_seq + 1 WHERE id = 1", (when, who, when))
            await self._write_row(conn, row)
            event = outbox_events.reset_event(state, who=who, note=why, details=details)
            event["payload"]["audit_head"] = f"{row.seq}:{row.hash}"
            await self._enqueue(conn, event.pop("kind"), at=when, audit_seq=row.seq,
                                queued=True, **event)
            await self._publish(conn, new, seq + 1, when)
            return new

        result = await self._run(op, pipeline=True)
        if isinstance(result, tuple):
            kind, reason = result
            if kind == "not_latched":
                raise NotLatchedError(
                    "the ESS is not latched: there is nothing to reset (the attempt was audited)")
            if kind == "stale":
                raise StaleResetError(reason)
            from ess_tui.engine.reset_policy import ResetRefused

            raise ResetRefused(reason)
        return result

    # --- policy keys -----------------------------------------------------------------------

    async def get_policy(self, key: str) -> dict[str, Any] | None:
        """A policy value, or None. ``emergency_stop`` is read from the latch itself."""
        async def op(conn: Conn) -> dict[str, Any] | None:
            if key == EMERGENCY_KEY:
                return (await self._read_state(conn))[0].to_policy()
            cur = await conn.execute("SELECT value FROM policy WHERE key = %s", (key,))
            row = await cur.fetchone()
            if row is None:
                return None
            if not isinstance(row[0], dict):
                raise StoreUnavailable(f"policy key {key!r} on {self.url} does not hold an object")
            return row[0]

        return await self._run(op, write=False, txn=False)

    async def set_policy(
        self, key: str, value: dict[str, Any], *, audit: bool = False, actor: str | None = None
    ) -> None:
        """Write a policy key. Refuses ``emergency_stop``: only latch and reset write it."""
        text = policy_json(key, value)
        when = utcnow()
        who = entry_actor(actor)

        async def op(conn: Conn) -> None:
            await conn.execute(_UPSERT_POLICY_SQL, (key, text, when))
            if audit:
                await self._append(conn, at=when, action="policy_set", actor=who, reason=None,
                                   details={"key": key, "value": value})

        await self._run(op)
