"""The transactional outbox on PostgreSQL (the :class:`~ess_tui.engine.store.Outbox` protocol).

``latch`` and ``unlatch`` enqueue their events inside their own transaction through
:meth:`OutboxMixin._enqueue`; delivery is tracked per (event, sink), at-least-once.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg

from ess_tui.engine.audit_chain import safe_details
from ess_tui.engine.state import as_utc, clean_text
from ess_tui.engine.store import OutboxEvent, SinkDelivery, entry_at
from ess_tui.store.postgres.lease import LeaseMixin
from ess_tui.store.postgres.url import redact

Conn = psycopg.AsyncConnection[Any]

LEVELS = ("info", "warning", "critical")

_EVENT_COLUMNS = "o.id, o.kind, o.level, o.key, o.created_at, o.payload, o.activation, o.audit_seq"


def _event(row: Any) -> OutboxEvent:
    payload = row[5] if isinstance(row[5], dict) else {}
    return OutboxEvent(id=int(row[0]), kind=row[1], level=row[2], key=row[3], created_at=row[4],
                       payload=payload, activation=row[6], audit_seq=row[7])


class OutboxMixin(LeaseMixin):
    async def _enqueue(
        self, conn: Conn, kind: str, *, level: str, key: str, payload: dict[str, Any] | None,
        activation: int | None, at: datetime, audit_seq: int | None = None,
        queued: bool = False,
    ) -> int | None:
        """Insert the event; its id, or None when the key exists. ``queued``: in pipeline mode,
        do not wait for the id (None)."""
        if level not in LEVELS:
            raise ValueError(f"outbox level must be one of {', '.join(LEVELS)}, not {level!r}")
        cur = await conn.execute(
            "INSERT INTO outbox (kind, level, key, created_at, payload, activation, audit_seq) "
            "VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING id",
            (clean_text(kind, limit=100), level, clean_text(key, limit=300), as_utc(at),
             json.dumps(safe_details(payload)), activation, audit_seq))
        if queued:
            return None
        row = await cur.fetchone()
        return int(row[0]) if row else None

    async def enqueue(
        self, kind: str, *, level: str, key: str, payload: dict[str, Any],
        activation: int | None = None, at: datetime | None = None,
    ) -> int | None:
        """Append an event; None when ``key`` is already in the outbox."""
        when = entry_at(at)

        async def op(conn: Conn) -> int | None:
            return await self._enqueue(conn, kind, level=level, key=key, payload=payload,
                                       activation=activation, at=when)

        return await self._run(op)

    async def pending(self, sink: str, *, now: datetime, limit: int = 100) -> list[OutboxEvent]:
        """Events not yet delivered to ``sink`` whose next attempt is due, oldest first."""
        async def op(conn: Conn) -> list[OutboxEvent]:
            cur = await conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM outbox o LEFT JOIN delivery d "
                "ON d.event_id = o.id AND d.sink = %s WHERE d.event_id IS NULL OR "
                "(d.delivered_at IS NULL AND (d.next_attempt_at IS NULL OR "
                "d.next_attempt_at <= %s)) ORDER BY o.id LIMIT %s",
                (sink, as_utc(now), max(0, int(limit))))
            return [_event(r) for r in await cur.fetchall()]

        return await self._run(op, write=False, txn=False)

    async def mark_delivered(self, event_id: int, sink: str, *, at: datetime) -> None:
        async def op(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO delivery (event_id, sink, attempts, delivered_at) "
                "VALUES (%s, %s, 1, %s) ON CONFLICT (event_id, sink) DO UPDATE SET "
                "attempts = delivery.attempts + 1, delivered_at = excluded.delivered_at, "
                "next_attempt_at = NULL", (int(event_id), sink, as_utc(at)))

        await self._run(op)

    async def mark_failed(
        self, event_id: int, sink: str, *, at: datetime, error: str, next_attempt_at: datetime,
    ) -> None:
        why = redact(clean_text(error, limit=500))

        async def op(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO delivery (event_id, sink, attempts, last_error, next_attempt_at) "
                "VALUES (%s, %s, 1, %s, %s) ON CONFLICT (event_id, sink) DO UPDATE SET "
                "attempts = delivery.attempts + 1, last_error = excluded.last_error, "
                "next_attempt_at = excluded.next_attempt_at",
                (int(event_id), sink, why, as_utc(next_attempt_at)))

        await self._run(op)

    async def deliveries(self, sink: str | None = None) -> list[SinkDelivery]:
        """Delivery rows, newest first."""
        async def op(conn: Conn) -> list[SinkDelivery]:
            cur = await conn.execute(
                "SELECT event_id, sink, attempts, delivered_at, last_error, next_attempt_at "
                "FROM delivery WHERE %s::text IS NULL OR sink = %s "
                "ORDER BY event_id DESC, sink", (sink, sink))
            return [SinkDelivery(int(r[0]), r[1], int(r[2]), r[3], r[4], r[5])
                    for r in await cur.fetchall()]

        return await self._run(op, write=False, txn=False)
