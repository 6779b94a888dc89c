"""The latch itself: reading it, latching, resetting. Each write is one call on the database
thread: the latch marker (second channel), one ``BEGIN IMMEDIATE`` transaction with the state row,
the ``emergency_stop`` policy key and the audit row, then a checkpoint into the main file."""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import datetime
from typing import Any

from ess_tui.engine.audit_chain import with_details
from ess_tui.engine.state import EmergencyState, ESSStatus, clean_text
from ess_tui.engine.store import (
    LatchResult,
    NotLatchedError,
    ResetGuard,
    StaleResetError,
    StoreError,
    StoreUnavailable,
    entry_actor,
    entry_at,
    stale_reset_reason,
)
from ess_tui.store import marker as markers
from ess_tui.store import outbox
from ess_tui.store.schema import EMERGENCY_KEY, STATE_SQL
from ess_tui.store.sqlite import _util as u
from ess_tui.store.sqlite.core import StoreCore
from ess_tui.store.validate import Invalid, check_state_row

log = logging.getLogger("ess_tui.store.sqlite")

_LAST_FLATTEN_SQL = (
    "SELECT action, details FROM audit WHERE action IN ('flattened', 'flatten_failed') "
    "AND seq > COALESCE((SELECT MAX(seq) FROM audit WHERE action = 'activate'), 0) "
    "ORDER BY seq DESC LIMIT 1"
)


class LatchMixin(StoreCore):
    # --- reading -----------------------------------------------------------------------------

    def _db_state(self, conn: sqlite3.Connection) -> EmergencyState:
        """The state row as the database holds it, judged by the shared validation."""
        rows = conn.execute(STATE_SQL).fetchall()
        try:
            check_state_row(tuple(rows[0]) if rows else None, self._path)
        except Invalid as exc:
            raise StoreUnavailable(str(exc)) from exc
        _v, active, reason, since, count, last_by, last_at, _c = rows[0]
        return EmergencyState(
            status=ESSStatus.ACTIVE if active else ESSStatus.INACTIVE, reason=reason,
            timestamp=u.parse_time(since), activation_count=int(count),
            last_reset_by=last_by, last_reset_at=u.parse_time(last_at),
        )

    def _state(self, conn: sqlite3.Connection) -> EmergencyState:
        """The latch, second channel included: a latch marker that the database has not reset
        makes the ESS latched. If the database could take it, the latch is made durable now."""
        state = self._db_state(conn)
        pending = markers.read_marker(self._path)
        if pending is None or pending.covered_by(state.active, state.activation_count):
            return state
        if pending.activation is None and not pending.unknown:
            raise StoreUnavailable(pending.reason)
        if pending.unknown:
            return self._latch_unknown(conn, state, pending)
        if state.active:
            return state
        at = u.parse_time(pending.at) if pending.at else None
        marked = EmergencyState(status=ESSStatus.ACTIVE, reason=pending.reason, timestamp=at,
                                activation_count=pending.activation,
                                last_reset_by=state.last_reset_by,
                                last_reset_at=state.last_reset_at)
        claim = markers.claim_marker(self._path)
        if claim is None:
            return marked  # its writer is still latching (or the marker just went): latched
        try:
            again = self._db_state(conn)  # the writer may have committed before letting go
            if markers.read_marker(self._path) != pending or again.active or \
                    pending.covered_by(again.active, again.activation_count):
                return again if again.active else self._state(conn)
            log.critical("latch marker %s names activation #%d, which the database does not "
                         "hold, and its writer is gone: latching it durably now",
                         markers.marker_path(self._path), pending.activation)
            return self._latch_now(
                conn, pending.reason, at=entry_at(at), actor="ess (latch marker)",
                details={"from_latch_marker": True}, at_least=pending.activation,
                marker=False, quiet_if_held=True).state
        except sqlite3.Error as exc:
            log.error("cannot make the marked latch durable yet: %s", exc)
            return marked
        finally:
            markers.release(claim)

    def _latch_unknown(self, conn: sqlite3.Connection, state: EmergencyState,
                       pending: markers.LatchMarker) -> EmergencyState:
        """A latch asked for while this database could not be read (0 bytes, corrupt, not ours)
        left a marker naming no activation. Now that the database reads, latch it durably (an
        extra trigger if it is latched already) and re-point the marker at that activation, so
        that only an audited reset of it clears the marker. A database restored from a backup
        therefore comes back latched, not armed."""
        claim = markers.claim_marker(self._path)
        if claim is None:
            raise StoreUnavailable(f"ESS latched while the database could not be read: "
                                   f"{pending.reason} (the latch is being made durable)")
        try:
            at = u.parse_time(pending.at) if pending.at else None
            log.critical("latch marker %s holds a latch asked for while the database could not "
                         "be read (%s): latching it durably now", markers.marker_path(self._path),
                         pending.reason)
            result = self._latch_txn(conn, pending.reason, at=entry_at(at),
                                     actor="ess (latch marker)",
                                     details={"from_latch_marker": True, "store_was_unreadable": True},
                                     at_least=0)
            now = result.state
            markers.release(markers.write_marker(self._path, now.activation_count,
                                                 now.reason or pending.reason,
                                                 now.timestamp or entry_at(at)))
            return now
        finally:
            markers.release(claim)

    async def load_state(self) -> EmergencyState:
        """The latch as stored. Raises ``StoreUnavailable`` (never answers "inactive") if unsure."""
        return await self._run(self._state)

    async def change_seq(self) -> int:
        """A number that goes up on every latch and reset, by any process: cheap to poll."""
        def op(conn: sqlite3.Connection) -> int:
            rows = conn.execute("SELECT change_seq FROM state WHERE id = 1").fetchall()
            if not rows:
                raise StoreUnavailable(f"database is corrupt: the ESS state row is missing "
                                       f"from {self._path}; restore it from a backup")
            return int(rows[0][0])
        return await self._run(op)

    # --- latching ----------------------------------------------------------------------------

    def _latch_now(
        self, conn: sqlite3.Connection, why: str, *, at: datetime, actor: str,
        details: dict[str, Any] | None, at_least: int = 0, marker: bool = True,
        quiet_if_held: bool = False,
    ) -> LatchResult:
        before = self._db_state(conn)
        held = None
        if marker and not before.active:
            # The second channel first: every gate on the host blocks from here on, even if
            # the transaction below cannot get the write lock.
            try:
                held = markers.write_marker(
                    self._path, max(before.activation_count + 1, at_least), why, at)
            except OSError as exc:
                log.error("cannot write the latch marker beside %s: %s", self._path, exc)
        try:
            return self._latch_txn(conn, why, at=at, actor=actor, details=details,
                                   at_least=at_least, quiet_if_held=quiet_if_held)
        finally:
            markers.release(held)

    def _latch_txn(
        self, conn: sqlite3.Connection, why: str, *, at: datetime, actor: str,
        details: dict[str, Any] | None, at_least: int, quiet_if_held: bool = False,
    ) -> LatchResult:

        def body(c: sqlite3.Connection) -> LatchResult:
            state = self._db_state(c)
            if state.active and quiet_if_held and state.activation_count >= at_least:
                # Completing a marker whose own latch committed meanwhile: it is held already.
                return LatchResult(state, False)
            if state.active:
                self._append(c, at=at, action="extra_trigger", actor=actor, reason=why,
                             details=with_details(details, latched_reason=state.reason,
                                                    activation_count=state.activation_count))
                return LatchResult(state, False)
            new = EmergencyState(
                status=ESSStatus.ACTIVE, reason=why, timestamp=at,
                activation_count=max(state.activation_count + 1, at_least),
                last_reset_by=state.last_reset_by, last_reset_at=state.last_reset_at,
            )
            c.execute(
                "UPDATE state SET active = 1, reason = ?, since = ?, activation_count = ?, "
                "change_seq = change_seq + 1 WHERE id = 1",
                (why, u.iso(at), new.activation_count),
            )
            c.execute(u.UPSERT_POLICY_SQL, (
                EMERGENCY_KEY, json.dumps(new.to_policy(), sort_keys=True), u.iso(at)))
            row = self._append(c, at=at, action="activate", actor=actor, reason=why,
                               details=with_details(details, activation_count=new.activation_count))
            # The latched alert commits with the latch (the transactional outbox).
            event = outbox.latched_event(new, actor=actor, details=details)
            event["payload"]["audit_head"] = f"{row.seq}:{row.hash}"
            outbox.enqueue_sync(c, event.pop("kind"), at=at, audit_seq=row.seq, **event)
            return LatchResult(new, True)

        result = self._write(conn, body)
        if result.new:
            self._checkpoint_next()
        return result

    async def latch(
        self, reason: str, *, at: datetime | None = None, actor: str = "ess",
        details: dict[str, Any] | None = None,
    ) -> LatchResult:
        """Latch in one transaction with its policy key and audit row (see ``StateStore``)."""
        when = entry_at(at)
        why = clean_text(reason) or "(no reason given)"
        who = entry_actor(actor)
        try:
            return await self._run(
                lambda conn: self._latch_now(conn, why, at=when, actor=who, details=details))
        except StoreError:
            # The database cannot be read or written: the latch must still block every gate.
            # A marker naming no activation does, until a readable database holds the latch.
            self._mark_unknown(why, when)
            raise

    def _mark_unknown(self, why: str, when: datetime) -> None:
        existing = markers.read_marker(self._path)
        if existing is not None and (existing.unknown or existing.activation is not None):
            return  # a latch is already marked: it blocks, and keeps its reason
        try:
            markers.release(markers.write_marker(self._path, None, why, when))
            log.critical("the ESS database %s cannot be read or written: latched through the "
                         "latch marker alone (every gate blocks)", self._path)
        except OSError as exc:
            log.error("cannot write the latch marker beside %s: %s", self._path, exc)

    # --- resetting ---------------------------------------------------------------------------

    @staticmethod
    def _last_flatten(conn: sqlite3.Connection) -> dict[str, Any] | None:
        rows = conn.execute(_LAST_FLATTEN_SQL).fetchall()
        if not rows:
            return None
        try:
            details = json.loads(rows[0][1])
        except ValueError:
            details = {}
        return {"action": rows[0][0], **(details if isinstance(details, dict) else {})}

    async def unlatch(
        self, reset_by: str, *, at: datetime | None = None, note: str | None = None,
        details: dict[str, Any] | None = None, expected_activation: int | None = None,
        guard: ResetGuard | None = None,
    ) -> EmergencyState:
        """Reset in one transaction with its audit row. ``NotLatchedError`` (audited) if armed;
        ``StaleResetError`` (audited) if ``expected_activation`` is not the latched one;
        ``ResetRefused`` (audited) when ``guard`` returns a reason inside the transaction."""
        when = entry_at(at)
        who = entry_actor(reset_by)
        why = clean_text(note) if note else None

        def body(conn: sqlite3.Connection) -> tuple[str, Any]:
            state = self._db_state(conn)
            if not state.active:
                self._append(conn, at=when, action="reset_refused", actor=who,
                             reason="not latched", details=with_details(details, note=why))
                return "armed", None
            if expected_activation is not None and expected_activation != state.activation_count:
                stale = stale_reset_reason(state.activation_count, expected_activation)
                self._append(conn, at=when, action="reset_refused", actor=who, reason=stale,
                             details=with_details(details, note=why))
                return "stale", stale
            if guard is not None:
                refusal = guard(state, self._last_flatten(conn))
                if refusal:
                    refusal = clean_text(refusal)
                    self._append(conn, at=when, action="reset_refused", actor=who,
                                 reason=refusal, details=with_details(
                                     details, note=why, activation_count=state.activation_count))
                    return "refused", refusal
            new = EmergencyState(
                status=ESSStatus.INACTIVE, reason=None, timestamp=when,
                activation_count=state.activation_count, last_reset_by=who, last_reset_at=when,
            )
            conn.execute(
                "UPDATE state SET active = 0, reason = NULL, since = ?, last_reset_by = ?, "
                "last_reset_at = ?, change_seq = change_seq + 1 WHERE id = 1",
                (u.iso(when), who, u.iso(when)),
            )
            conn.execute(u.UPSERT_POLICY_SQL, (
                EMERGENCY_KEY, json.dumps(new.to_policy(), sort_keys=True), u.iso(when)))
            row = self._append(conn, at=when, action="reset", actor=who, reason=why,
                               details=with_details(details, previous_reason=state.reason,
                                                      latched_since=state.timestamp,
                                                      activation_count=state.activation_count))
            # The reset alert commits with the reset (the transactional outbox).
            event = outbox.reset_event(state, who=who, note=why, details=details)
            event["payload"]["audit_head"] = f"{row.seq}:{row.hash}"
            outbox.enqueue_sync(conn, event.pop("kind"), at=when, audit_seq=row.seq, **event)
            return "reset", new

        def op(conn: sqlite3.Connection) -> tuple[str, Any]:
            self._state(conn)  # a pending latch marker is made durable before it can be reset
            outcome = self._write(conn, body)
            if outcome[0] == "reset":
                self._checkpoint_next()
                try:
                    markers.remove_marker(self._path, outcome[1].activation_count)
                except OSError as exc:
                    log.error("cannot remove the latch marker beside %s: %s", self._path, exc)
            return outcome

        kind, value = await self._run(op)
        if kind == "armed":
            raise NotLatchedError(
                "the ESS is not latched: there is nothing to reset (the attempt was audited)")
        if kind == "stale":
            raise StaleResetError(value)
        if kind == "refused":
            from ess_tui.engine.reset_policy import ResetRefused

            raise ResetRefused(value)
        return value
