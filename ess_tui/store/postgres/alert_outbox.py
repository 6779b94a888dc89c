"""The alert outbox on PostgreSQL with the surface the relay, the alerts wiring and the CLI use
(the same as :class:`ess_tui.store.outbox.SQLiteOutbox`).

It runs on a :class:`~ess_tui.store.postgres.store.PostgresStore`'s pool: the runtime passes its
own store (one pool, no second set of connections; :meth:`close` then leaves the store open for
the runtime to close), a CLI command lets it open one (``owns_store``).

Same semantics as SQLite: undelivered events oldest first (by id), nothing overtakes an event
that waits for its retry, one event per idempotency key, delivery state per (event, sink).

The ``*_sync`` methods are called by the metrics exporter on its own thread at scrape time, where
the async pool cannot be used. They answer from a small snapshot that :meth:`refresh_loop`
(started by the alerts wiring) keeps fresh; a snapshot that is missing or older than
``stale_after`` raises ``StoreUnavailable``, so the metric goes missing rather than stale.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from ess_tui.engine.state import as_utc, utcnow
from ess_tui.engine.store import OutboxEvent, SinkDelivery, StoreUnavailable, entry_at
from ess_tui.store.postgres.outbox import _EVENT_COLUMNS, LEVELS, _event

log = logging.getLogger(__name__)

_UNDELIVERED = (
    "FROM outbox o LEFT JOIN delivery d ON d.event_id = o.id AND d.sink = %s "
    "WHERE d.delivered_at IS NULL AND o.level = ANY(%s) "
    "AND (%s::timestamptz IS NULL OR o.created_at >= %s)"
)


def _levels(levels: Collection[str] | None) -> list[str]:
    return list(levels) if levels else list(LEVELS)


class PostgresOutbox:
    """The alert outbox on a ``PostgresStore`` (shared, or owned when ``owns_store``)."""

    def __init__(self, store: Any, *, owns_store: bool = False, refresh_sec: float = 2.0,
                 stale_after: float | None = None) -> None:
        self.store = store
        self._owns = owns_store
        self.refresh_sec = float(refresh_sec)
        self.stale_after = float(stale_after) if stale_after is not None else 3 * refresh_sec + 5
        self._lock = threading.Lock()
        self._watch: tuple[dict[str, tuple[str, ...]], timedelta] | None = None
        self._snap: tuple[float, dict[str, Any], int | None] | None = None

    @property
    def path(self) -> str:
        return str(self.store.path)

    async def _run(self, op: Any, *, write: bool = True) -> Any:
        return await self.store._run(op, write=write, txn=write)  # noqa: SLF001 - our own store

    # --- the Outbox protocol and the relay's extras ------------------------------------------

    async def enqueue(
        self, kind: str, *, level: str, key: str, payload: dict[str, Any],
        activation: int | None = None, at: datetime | None = None, audit_seq: int | None = None,
    ) -> int | None:
        """Append an event (its audit anchor: the trail's head, unless given); None when
        ``key`` is already in the outbox."""
        when = entry_at(at)

        async def op(conn: Any) -> int | None:
            seq = audit_seq
            if seq is None:
                cur = await conn.execute("SELECT max(seq) FROM audit")
                row = await cur.fetchone()
                seq = int(row[0]) if row and row[0] is not None else None
            return await self.store._enqueue(  # noqa: SLF001 - the store's own insert
                conn, kind, level=level, key=key, payload=payload, activation=activation,
                at=when, audit_seq=seq)

        return await self._run(op)

    async def pending(self, sink: str, *, now: datetime, limit: int = 100,
                      levels: Collection[str] | None = None,
                      not_before: datetime | None = None) -> list[OutboxEvent]:
        """Undelivered events for ``sink``, oldest first, up to the first one whose retry is not
        due yet (so delivery stays in order). ``levels`` and ``not_before`` narrow the choice."""
        since = as_utc(not_before) if not_before is not None else None

        async def op(conn: Any) -> list[OutboxEvent]:
            cur = await conn.execute(
                f"SELECT {_EVENT_COLUMNS}, d.next_attempt_at {_UNDELIVERED} ORDER BY o.id LIMIT %s",
                (sink, _levels(levels), since, since, max(1, int(limit))))
            return list(await cur.fetchall())

        due: list[OutboxEvent] = []
        for row in await self._run(op, write=False):
            next_at = row[-1]
            if next_at is not None and next_at > as_utc(now):
                break  # in order: nothing overtakes an event that is waiting for its retry
            due.append(_event(row[:-1]))
        return due

    async def next_attempt(self, sink: str, levels: Collection[str] | None = None) -> datetime | None:
        """When the oldest undelivered event for ``sink`` may be tried again (None: now)."""
        async def op(conn: Any) -> datetime | None:
            cur = await conn.execute(
                f"SELECT d.next_attempt_at {_UNDELIVERED} ORDER BY o.id LIMIT 1",
                (sink, _levels(levels), None, None))
            row = await cur.fetchone()
            return row[0] if row else None

        return await self._run(op, write=False)

    async def mark_delivered(self, event_id: int, sink: str, *, at: datetime) -> None:
        await self.store.mark_delivered(event_id, sink, at=at)

    async def mark_failed(self, event_id: int, sink: str, *, at: datetime, error: str,
                          next_attempt_at: datetime) -> None:
        await self.store.mark_failed(event_id, sink, at=at, error=error,
                                     next_attempt_at=next_attempt_at)

    async def deliveries(self, sink: str | None = None) -> list[SinkDelivery]:
        return list(await self.store.deliveries(sink))

    async def events(self, after_id: int = 0, limit: int = 1000) -> list[OutboxEvent]:
        async def op(conn: Any) -> list[OutboxEvent]:
            cur = await conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM outbox o WHERE o.id > %s ORDER BY o.id LIMIT %s",
                (int(after_id), int(limit)))
            return [_event(r) for r in await cur.fetchall()]

        return await self._run(op, write=False)

    # --- counts, async (the snapshot and the CLI) --------------------------------------------

    async def stats(self) -> dict[str, Any]:
        """Events in the outbox, and failed attempts per sink (attempts that did not deliver)."""
        async def op(conn: Any) -> dict[str, Any]:
            cur = await conn.execute(
                "SELECT sink, sum(attempts - (delivered_at IS NOT NULL)::int) FROM delivery "
                "GROUP BY sink")
            failures = {str(s): int(n or 0) for s, n in await cur.fetchall()}
            cur = await conn.execute("SELECT count(*) FROM outbox")
            row = await cur.fetchone()
            return {"events": int(row[0]), "failures": failures}

        return await self._run(op, write=False)

    async def pending_count(self, sinks: dict[str, Collection[str]], *,
                            not_before: datetime | None = None) -> int:
        """Undelivered (event, sink) pairs over ``sinks`` (name → the levels it takes)."""
        since = as_utc(not_before) if not_before is not None else None

        async def op(conn: Any) -> int:
            total = 0
            for sink, levels in sinks.items():
                cur = await conn.execute(f"SELECT count(*) {_UNDELIVERED}",
                                         (sink, _levels(levels), since, since))
                total += int((await cur.fetchone())[0])
            return total

        return await self._run(op, write=False)

    # --- the scrape-time snapshot ------------------------------------------------------------

    async def refresh(self) -> None:
        """Recount for the snapshot (the sinks the last scrape asked about)."""
        with self._lock:
            watch = self._watch
        stats = await self.stats()
        pending = None
        if watch is not None:
            sinks, age = watch
            pending = await self.pending_count(sinks, not_before=utcnow() - age)
        with self._lock:
            self._snap = (time.monotonic(), stats, pending)

    async def refresh_loop(self) -> None:
        """Keep the snapshot fresh every ``refresh_sec`` until cancelled (errors: it goes stale)."""
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the metrics go missing, said in the log
                log.debug("outbox snapshot not refreshed: %s", exc)
            await asyncio.sleep(self.refresh_sec)

    def _fresh(self) -> tuple[float, dict[str, Any], int | None]:
        snap = self._snap
        if snap is None:
            raise StoreUnavailable(f"no outbox snapshot of {self.path} yet")
        if time.monotonic() - snap[0] > self.stale_after:
            raise StoreUnavailable(f"the outbox snapshot of {self.path} is stale (store unreachable?)")
        return snap

    def stats_sync(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._fresh()[1])

    def pending_count_sync(self, sinks: dict[str, Collection[str]], *,
                           not_before: datetime | None = None) -> int:
        """From the snapshot; the first call (or a change of sinks) names what to count."""
        watch = ({k: tuple(v) for k, v in sinks.items()},
                 utcnow() - not_before if not_before is not None else timedelta(days=36500))
        with self._lock:
            if self._watch is None or self._watch[0] != watch[0]:
                self._watch = watch
                raise StoreUnavailable("outbox pending count: counting from the next refresh")
            self._watch = watch
            pending = self._fresh()[2]
        if pending is None:
            raise StoreUnavailable("outbox pending count: not counted yet")
        return pending

    def watch(self, sinks: dict[str, Collection[str]], max_age: timedelta) -> None:
        """Name what the snapshot counts before the first scrape (the relay's sinks and age)."""
        with self._lock:
            self._watch = ({k: tuple(v) for k, v in sinks.items()}, max_age)

    async def close(self) -> None:
        if self._owns:
            await self.store.close()

