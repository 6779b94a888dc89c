"""The runner lease on PostgreSQL: one acting runner per desk, with a fencing epoch.

Expiry is judged by the *server's* clock (``clock_timestamp()``), the one clock every host shares,
so two runners' wall clocks never have to agree. Every lease operation first locks the desk's
``lease_epoch`` row, so a takeover is serial across hosts; the epoch there survives a release,
so no two holders ever share an epoch. :meth:`check_fence` is one indexed read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from ess_tui.engine.state import clean_text
from ess_tui.engine.store import FencedOut, LeaseInfo, entry_actor, entry_at
from ess_tui.store.postgres.audit import AuditMixin
from ess_tui.store.postgres.schema import RUNNER_LEASE

Conn = psycopg.AsyncConnection[Any]

_LEASE_SQL = ("SELECT holder, acquired_at, heartbeat_at, expires_at, epoch, beat, "
              "expires_at > clock_timestamp() FROM lease WHERE name = %s")


def _info(row: Any) -> LeaseInfo:
    return LeaseInfo(holder=str(row[0]), acquired_at=row[1], heartbeat_at=row[2],
                     expires_at=row[3], epoch=int(row[4]), beat=int(row[5]))


class LeaseMixin(AuditMixin):
    async def _lock_epoch(self, conn: Conn) -> int:
        await conn.execute("INSERT INTO lease_epoch (name, epoch) VALUES (%s, 0) "
                           "ON CONFLICT (name) DO NOTHING", (RUNNER_LEASE,))
        cur = await conn.execute("SELECT epoch FROM lease_epoch WHERE name = %s FOR UPDATE",
                                 (RUNNER_LEASE,))
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def acquire_lease(
        self, holder: str, *, ttl_sec: float, at: datetime | None = None
    ) -> LeaseInfo:
        """Take the lease if free or expired (by the server's clock), renew it if ``holder``
        has it. A change of holder takes the next epoch and is audited."""
        if not ttl_sec or ttl_sec <= 0:
            raise ValueError("lease ttl_sec must be positive")
        when = entry_at(at)
        who = entry_actor(holder)
        ttl = float(ttl_sec)

        async def op(conn: Conn) -> LeaseInfo:
            last_epoch = await self._lock_epoch(conn)
            cur = await conn.execute(_LEASE_SQL, (RUNNER_LEASE,))
            current = await cur.fetchone()
            if current is not None and current[0] == who:
                cur = await conn.execute(
                    "UPDATE lease SET heartbeat_at = clock_timestamp(), "
                    "expires_at = clock_timestamp() + make_interval(secs => %s), beat = beat + 1 "
                    "WHERE name = %s RETURNING holder, acquired_at, heartbeat_at, expires_at, "
                    "epoch, beat", (ttl, RUNNER_LEASE))
                return _info(await cur.fetchone())
            if current is not None and current[6]:
                return _info(current)
            epoch = max(last_epoch, int(current[4]) if current else 0) + 1
            cur = await conn.execute(
                "INSERT INTO lease (name, holder, acquired_at, heartbeat_at, expires_at, epoch, "
                "beat) VALUES (%s, %s, clock_timestamp(), clock_timestamp(), "
                "clock_timestamp() + make_interval(secs => %s), %s, 0) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "acquired_at = excluded.acquired_at, heartbeat_at = excluded.heartbeat_at, "
                "expires_at = excluded.expires_at, epoch = excluded.epoch, beat = 0 "
                "RETURNING holder, acquired_at, heartbeat_at, expires_at, epoch, beat",
                (RUNNER_LEASE, who, ttl, epoch))
            info = _info(await cur.fetchone())
            await conn.execute("UPDATE lease_epoch SET epoch = %s WHERE name = %s",
                               (epoch, RUNNER_LEASE))
            previous = str(current[0]) if current else None
            reason = (f"lease of {previous} expired at {current[3].isoformat()}"
                      if current else None)
            await self._append(conn, at=when, action="lease_acquired", actor=who, reason=reason,
                               details={"previous_holder": previous, "ttl_sec": ttl,
                                        "epoch": epoch, "expires_at": info.expires_at})
            return info

        return await self._run(op)

    async def read_lease(self) -> LeaseInfo | None:
        async def op(conn: Conn) -> LeaseInfo | None:
            cur = await conn.execute(_LEASE_SQL, (RUNNER_LEASE,))
            row = await cur.fetchone()
            return _info(row) if row else None

        return await self._run(op, write=False, txn=False)

    async def release_lease(self, holder: str) -> None:
        """Give the lease up if ``holder`` has it (audited); otherwise do nothing."""
        who = clean_text(holder, limit=200)

        async def op(conn: Conn) -> None:
            await self._lock_epoch(conn)
            cur = await conn.execute("DELETE FROM lease WHERE name = %s AND holder = %s",
                                     (RUNNER_LEASE, who))
            if cur.rowcount:
                await self._append(conn, at=entry_at(None), action="lease_released", actor=who,
                                   reason=None, details=None)

        await self._run(op)

    async def check_fence(self, holder: str, epoch: int, activation: int | None) -> None:
        """Raise :class:`FencedOut` unless ``holder`` holds the live lease at ``epoch`` and
        (when given) ``activation`` is still the latched one. One read, no lock."""
        who = clean_text(holder, limit=200)

        async def op(conn: Conn) -> tuple[Any, ...] | None:
            cur = await conn.execute(
                "SELECT l.holder, l.epoch, l.expires_at > clock_timestamp(), s.active, "
                "s.activation_count FROM state s LEFT JOIN lease l ON l.name = %s "
                "WHERE s.id = 1", (RUNNER_LEASE,))
            return await cur.fetchone()

        row = await self._run(op, write=False, txn=False)
        if row is None:
            raise FencedOut("the ESS state row is missing: nothing may be sent")
        lease_holder, lease_epoch, live, active, count = row
        if lease_holder is None:
            raise FencedOut(f"{who} no longer holds the runner lease (nobody does): "
                            "nothing may be sent")
        if lease_holder != who or int(lease_epoch) != int(epoch):
            raise FencedOut(f"{who} lost the runner lease at epoch {epoch}: {lease_holder} "
                            f"holds it at epoch {lease_epoch}; nothing may be sent")
        if not live:
            raise FencedOut(f"the runner lease of {who} (epoch {epoch}) has expired: "
                            "nothing may be sent until it is renewed")
        if activation is not None and (not active or int(count) != int(activation)):
            now = f"#{count} is latched" if active else "the ESS is armed (reset)"
            raise FencedOut(f"activation #{activation} is no longer the latched one ({now}): "
                            "nothing may be sent for it")
