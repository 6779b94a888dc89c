"""The audit trail on PostgreSQL: the same hash chain as the SQLite file
(:mod:`ess_tui.engine.audit_chain`), appended under a lock on the chain's head row so that
appends from every host are serial, read back and verified row by row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import psycopg

from ess_tui.engine import audit_chain
from ess_tui.engine.audit_chain import MODE_SHA256, ChainRow, chain_row
from ess_tui.engine.state import as_utc
from ess_tui.engine.store import AuditRecord, AuditVerification, entry_at
from ess_tui.store.postgres.connection import PGBase
from ess_tui.store.postgres.url import redact

AUDIT_COLUMNS = "seq, at, action, actor, reason, details, prev_hash, hash"

Conn = psycopg.AsyncConnection[Any]


def record(row: ChainRow) -> AuditRecord:
    try:
        at = as_utc(datetime.fromisoformat(row.at))
    except ValueError:
        at = datetime.fromtimestamp(0, timezone.utc)
    return AuditRecord(seq=row.seq, at=at, action=row.action, actor=row.actor, reason=row.reason,
                       details=row.details, prev_hash=row.prev_hash, hash=row.hash)


def redacted(value: Any, depth: int = 0) -> Any:
    """``value`` with any password inside a database URL masked, in every string it holds."""
    if isinstance(value, str):
        return redact(value) if "://" in value else value
    if depth > 10:
        return value
    if isinstance(value, Mapping):
        return {k: redacted(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redacted(v, depth + 1) for v in value]
    return value


class AuditMixin(PGBase):
    def _chain(
        self, last: tuple[int, str] | None, *, at: datetime, action: str, actor: str,
        reason: str | None, details: Mapping[str, Any] | None,
    ) -> ChainRow:
        """The row that follows ``last`` ((seq, hash) of the head, None when empty)."""
        return audit_chain.next_row(
            last, at=at, action=action, actor=redact(actor),
            reason=redact(reason) if reason is not None else None,
            details=redacted(details) if details else details, key=self._hash_key())

    async def _write_row(self, conn: Conn, row: ChainRow) -> None:
        """Queue the row's INSERT and the head's UPDATE (inside the caller's transaction; the
        head row must already be locked by it)."""
        await conn.execute(
            f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (row.seq, row.at, row.action, row.actor, row.reason,
             audit_chain.canonical_json(row.details), row.prev_hash, row.hash))
        await conn.execute("UPDATE audit_head SET seq = %s, hash = %s WHERE id = 1",
                           (row.seq, row.hash))

    async def _append(
        self, conn: Conn, *, at: datetime, action: str, actor: str, reason: str | None,
        details: Mapping[str, Any] | None,
    ) -> ChainRow:
        """Append one chained row inside the caller's transaction."""
        cur = await conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
        head = await cur.fetchone()
        if head is None:
            raise psycopg.DataError("the audit head row is missing: the database is damaged")
        last = (int(head[0]), str(head[1])) if int(head[0]) > 0 else None
        row = self._chain(last, at=at, action=action, actor=actor, reason=reason,
                          details=details)
        await self._write_row(conn, row)
        return row

    async def audit(
        self, action: str, *, actor: str, reason: str | None = None,
        details: dict[str, Any] | None = None, at: datetime | None = None,
    ) -> AuditRecord:
        """Append one row to the audit trail."""
        when = entry_at(at)

        async def op(conn: Conn) -> ChainRow:
            return await self._append(conn, at=when, action=action, actor=actor, reason=reason,
                                      details=details)

        return record(await self._run(op))

    async def read_audit(
        self, limit: int | None = None, *, newest_first: bool = True
    ) -> list[AuditRecord]:
        """The newest ``limit`` rows (all when None), newest first unless told otherwise."""
        count = None if limit is None else max(0, int(limit))

        async def op(conn: Conn) -> list[AuditRecord]:
            cur = await conn.execute(
                f"SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq DESC LIMIT %s", (count,))
            return [record(chain_row(tuple(r))) for r in await cur.fetchall()]

        records = await self._run(op, write=False, txn=False)
        return records if newest_first else records[::-1]

    async def verify_audit(self) -> AuditVerification:
        """Walk the chain; name the first row that was altered, removed or inserted."""
        async def op(conn: Conn) -> AuditVerification:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur = await conn.execute("SELECT key, value FROM meta")
            meta = {str(k): str(v) for k, v in await cur.fetchall()}
            cur = await conn.execute("SELECT seq FROM audit_head WHERE id = 1")
            head_row = await cur.fetchone()
            cur = await conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq")
            rows = [chain_row(tuple(r)) for r in await cur.fetchall()]
            cur = await conn.execute(
                "SELECT active, activation_count, reason FROM state WHERE id = 1")
            state = await cur.fetchone()
            result = audit_chain.verify_chain(
                rows, mode=meta.get("audit_mode", MODE_SHA256), key=self._key,
                head_seq=int(head_row[0]) if head_row else None)
            # The latch the trail replays to must be the one the state row holds: a state row
            # edited by hand (no latch/reset row behind it) is named, as the SQLite store does.
            replayed = audit_chain.replay(rows)
            matches, mismatch = audit_chain.compare_state(
                tuple(state) if state is not None else None, replayed)
            result = replace(result, replayed=replayed, state_matches=matches)
            if result.ok and mismatch:
                result = replace(result, ok=False, problem=mismatch)
            return result

        return await self._run(op, write=False)
