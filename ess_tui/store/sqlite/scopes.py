"""Scoped and reduce-only latches in the SQLite store (issue 15).

Each latch or reset is one ``BEGIN IMMEDIATE`` transaction holding the ``latches`` row and its
audit row (``scope_latch`` / ``scope_escalate`` / ``scope_reset``), then a checkpoint into the main
file -- durable before any venue call, like the desk latch. A latch only escalates: latching a
scope that already holds a latch of the same or a higher level adds ``extra_trigger``-style audit
(``scope_extra``) and changes nothing. The whole-desk *halt* is not here: it is the seed's latch,
the ``state`` row (``LatchMixin.latch``).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from ess_tui.engine.audit_chain import with_details
from ess_tui.engine.scopes import (
    ACTIVE_SQL,
    HALT,
    REDUCE_ONLY,
    Scope,
    ScopedLatch,
    rank,
)
from ess_tui.engine.scopes import latches_from_rows as rows_to_latches
from ess_tui.engine.state import clean_text
from ess_tui.engine.store import NotLatchedError, entry_actor, entry_at
from ess_tui.store.sqlite import _util as u
from ess_tui.store.sqlite.core import StoreCore


class ScopesMixin(StoreCore):
    async def active_latches(self) -> list[ScopedLatch]:
        """Every active scoped or reduce-only latch, oldest first."""
        return await self._run(lambda conn: rows_to_latches(conn.execute(ACTIVE_SQL).fetchall()))

    async def latch_scope(self, scope: Scope, level: str, reason: str, *, actor: str | None = None,
                          details: dict[str, Any] | None = None,
                          at: datetime | None = None) -> tuple[ScopedLatch, bool]:
        """Latch ``scope`` at ``level`` (or escalate its latch). Returns (the latch, changed)."""
        if level not in (REDUCE_ONLY, HALT):
            raise ValueError(f"level {level!r}: reduce_only or halt")
        if scope.is_desk and level == HALT:
            raise ValueError("the whole-desk halt is the ESS latch: use latch()/activate(reason)")
        why = clean_text(reason) or "(no reason given)"
        who = entry_actor(actor)
        when = entry_at(at)

        def body(c: sqlite3.Connection) -> tuple[ScopedLatch, bool]:
            found = rows_to_latches(c.execute(
                ACTIVE_SQL.replace("ORDER BY", "AND scope_kind = ? AND scope_value = ? ORDER BY"),
                (scope.kind, scope.value)).fetchall())
            facts = {"scope": str(scope), "scope_kind": scope.kind, "scope_value": scope.value,
                     "level": level}
            if found:
                old = found[0]
                if rank(level) <= rank(old.level):
                    self._append(c, at=when, action="scope_extra", actor=who, reason=why,
                                 details=with_details(details, latch_id=old.id,
                                                        latched_level=old.level, **facts))
                    return old, False
                c.execute("UPDATE latches SET level = ? WHERE id = ? AND active = 1",
                          (level, old.id))
                self._append(c, at=when, action="scope_escalate", actor=who, reason=why,
                             details=with_details(details, latch_id=old.id,
                                                    escalated_from=old.level, **facts))
                return ScopedLatch(old.id, scope, level, old.reason, old.since,
                                   old.latched_by), True
            cur = c.execute(
                "INSERT INTO latches (scope_kind, scope_value, level, reason, since, latched_by, "
                "active) VALUES (?, ?, ?, ?, ?, ?, 1)",
                (scope.kind, scope.value, level, why, u.iso(when), who))
            latch_id = int(cur.lastrowid or 0)
            self._append(c, at=when, action="scope_latch", actor=who, reason=why,
                         details=with_details(details, latch_id=latch_id, **facts))
            return ScopedLatch(latch_id, scope, level, why, when, who), True

        def op(conn: sqlite3.Connection) -> tuple[ScopedLatch, bool]:
            result = self._write(conn, body)
            if result[1]:
                self._checkpoint(conn)
            return result

        return await self._run(op)

    async def reset_scope(self, scope: Scope, by: str, note: str | None = None, *,
                          expected_id: int | None = None,
                          details: dict[str, Any] | None = None) -> ScopedLatch:
        """The audited reset of ``scope``'s latch. NotLatchedError when it holds none (or
        not the latch ``expected_id`` the operator reviewed)."""
        who = entry_actor(by)
        when = entry_at(None)

        def body(c: sqlite3.Connection) -> ScopedLatch:
            found = rows_to_latches(c.execute(
                ACTIVE_SQL.replace("ORDER BY", "AND scope_kind = ? AND scope_value = ? ORDER BY"),
                (scope.kind, scope.value)).fetchall())
            if not found or (expected_id is not None and found[0].id != expected_id):
                raise NotLatchedError(f"no active latch on {scope}"
                                      + (f" with id {expected_id}" if expected_id else ""))
            old = found[0]
            c.execute("UPDATE latches SET active = 0, reset_by = ?, reset_at = ? WHERE id = ?",
                      (who, u.iso(when), old.id))
            self._append(c, at=when, action="scope_reset", actor=who, reason=clean_text(note),
                         details=with_details(details, latch_id=old.id, scope=str(scope),
                                                scope_kind=scope.kind, scope_value=scope.value,
                                                level=old.level, latched_reason=old.reason))
            return old

        def op(conn: sqlite3.Connection) -> ScopedLatch:
            result = self._write(conn, body)
            self._checkpoint(conn)
            return result

        return await self._run(op)
