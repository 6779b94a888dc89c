"""The audit trail: appending, reading, and verifying it (chain, keyed head, replayed latch)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import datetime
from typing import Any

from ess_tui.engine import audit_chain
from ess_tui.engine.audit_chain import MODE_HMAC, MODE_SHA256
from ess_tui.engine.scopes import replay_latches
from ess_tui.engine.store import AuditRecord, AuditVerification, entry_at
from ess_tui.store.sqlite import _util as u
from ess_tui.store.sqlite.core import StoreCore

_ENV = audit_chain.AUDIT_KEY_ENV


class AuditMixin(StoreCore):
    async def audit(
        self, action: str, *, actor: str, reason: str | None = None,
        details: dict[str, Any] | None = None, at: datetime | None = None,
    ) -> AuditRecord:
        """Append one row to the audit trail."""
        when = entry_at(at)
        row = await self._run(lambda conn: self._write(conn, lambda c: self._append(
            c, at=when, action=action, actor=actor, reason=reason, details=details)))
        return u.record(row)

    async def read_audit(
        self, limit: int | None = None, *, newest_first: bool = True
    ) -> list[AuditRecord]:
        """The newest ``limit`` rows (all when None), newest first unless ``newest_first``
        is False."""
        count = -1 if limit is None else max(0, int(limit))

        def op(conn: sqlite3.Connection) -> list[AuditRecord]:
            rows = conn.execute(
                f"SELECT {u.AUDIT_COLUMNS} FROM audit ORDER BY seq DESC LIMIT ?", (count,))
            return [u.record(u.chain_row(tuple(r))) for r in rows]

        records = await self._run(op)
        return records if newest_first else records[::-1]

    async def verify_audit(self) -> AuditVerification:
        """Walk the chain; name the first row that was altered, removed or inserted.

        With the audit key: the keyed head must match the newest row (rows cut from the end are
        found) and the trail must be keyed (a trail flipped back to plain SHA-256 is found).
        Always: the trail is replayed and the latch it describes compared with the state row."""
        def op(conn: sqlite3.Connection) -> AuditVerification:
            conn.execute("BEGIN DEFERRED")  # one snapshot for meta, rows and state
            try:
                meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}
                rows = [u.chain_row(tuple(r)) for r in conn.execute(
                    f"SELECT {u.AUDIT_COLUMNS} FROM audit ORDER BY seq")]
                state = conn.execute(
                    "SELECT active, activation_count, reason FROM state WHERE id = 1").fetchall()
                latches = None
                if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                "AND name = 'latches'").fetchall():
                    latches = {int(r[0]): str(r[1]) for r in conn.execute(
                        "SELECT id, level FROM latches WHERE active = 1")}
            finally:
                conn.execute("COMMIT")
            result = self._judge(meta, rows, state[0] if state else None)
            if result.ok and latches is not None:
                problem = scoped_mismatch(latches, replay_latches(rows))
                if problem:
                    result = replace(result, ok=False, problem=problem)
            return result

        return await self._run(op)

    def _judge(self, meta: dict[str, str], rows: list[audit_chain.ChainRow],
               state: tuple[Any, ...] | None) -> AuditVerification:
        try:
            head = int(meta.get("audit_head_seq", ""))
        except ValueError:
            head = None
        mode = meta.get("audit_mode", MODE_SHA256)
        key = self._key
        replayed = audit_chain.replay(rows)
        matches, mismatch = self._compare(state, replayed)
        result = audit_chain.verify_chain(rows, mode=mode, key=key, head_seq=head)
        result = replace(result, replayed=replayed, state_matches=matches)
        if not result.ok:
            return result
        if key is not None:
            if mode != MODE_HMAC:
                return replace(result, ok=False, problem=(
                    f"{_ENV} is set but the trail is not keyed (mode {mode!r}): it was created "
                    "without the key, or downgraded to plain SHA-256 and rewritten; it cannot "
                    "be trusted"))
            newest = rows[-1] if rows else None
            mac = meta.get("audit_head_mac", "")
            if newest is None and mac:
                return replace(result, ok=False, first_bad_seq=1, problem=(
                    "the keyed head names rows but the trail is empty: rows were removed"))
            if newest is not None and mac != audit_chain.head_mac(key, newest.seq, newest.hash):
                return replace(result, ok=False, first_bad_seq=newest.seq + 1, problem=(
                    f"the keyed head does not match row {newest.seq}, the newest row: rows were "
                    "removed from the end of the trail (or the head rewritten)"))
            result = replace(result, keyed=True)
        if mismatch:
            return replace(result, ok=False, problem=mismatch)
        return result

    @staticmethod
    def _compare(state: tuple[Any, ...] | None,
                 replayed: tuple[bool, int, str | None]) -> tuple[bool | None, str | None]:
        return audit_chain.compare_state(state, replayed)


def scoped_mismatch(table: dict[int, str], replayed: dict[int, str]) -> str | None:
    """Why the latches table disagrees with the trail (a latch cleared, added or softened by
    hand), or None."""
    if table == replayed:
        return None
    gone = sorted(set(replayed) - set(table))
    extra = sorted(set(table) - set(replayed))
    changed = sorted(k for k in set(table) & set(replayed) if table[k] != replayed[k])
    parts = []
    if gone:
        parts.append(f"latch(es) {gone} are cleared in the table but never reset in the trail")
    if extra:
        parts.append(f"latch(es) {extra} are active in the table but never latched in the trail")
    if changed:
        parts.append(f"latch(es) {changed} have a level the trail does not give them")
    return "the latches table was edited by hand: " + "; ".join(parts)
