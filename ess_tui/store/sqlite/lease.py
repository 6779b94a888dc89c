"""The runner lease: who acts on the venue, fenced by an epoch, renewed by a beat.

Expiry never compares two processes' wall clocks: a standby takes the lease over only after *its
own* ``time.monotonic`` has seen the holder's ``(holder, epoch, beat)`` unchanged for the
holder's ttl. The holder renews by bumping ``beat``. Every change of holder bumps ``epoch`` (kept
in ``meta`` too, so a released lease does not reset it); ``check_fence`` reads it before every
venue call. Wall-clock times are still stored, for people to read.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from typing import Any

from ess_tui.engine.state import clean_text, utcnow
from ess_tui.engine.store import FencedOut, LeaseInfo, entry_actor, entry_at
from ess_tui.store.schema import RUNNER_LEASE
from ess_tui.store.sqlite import _util as u
from ess_tui.store.sqlite.core import StoreCore

_LEASE_SQL = ("SELECT holder, acquired_at, heartbeat_at, expires_at, epoch, beat, ttl_sec "
              "FROM lease WHERE name = ?")
_FENCE_SQL = ("SELECT l.holder, l.epoch, s.active, s.activation_count FROM state s "
              "LEFT JOIN lease l ON l.name = ? WHERE s.id = 1")


def _lease(row: Any) -> LeaseInfo | None:
    try:
        return LeaseInfo(
            holder=str(row[0]), acquired_at=u.parse_time(row[1]),  # type: ignore[arg-type]
            heartbeat_at=u.parse_time(row[2]),  # type: ignore[arg-type]
            expires_at=u.parse_time(row[3]),  # type: ignore[arg-type]
            epoch=int(row[4]), beat=int(row[5]),
        )
    except (TypeError, ValueError):
        return None  # unreadable lease: replaced


class LeaseMixin(StoreCore):
    #: (holder, epoch, beat) of another's lease, and when this process first saw it (monotonic).
    _seen_beat: tuple[tuple[str, int, int], float] | None = None
    #: holder -> (epoch, ttl, monotonic time just before its last successful renewal).
    _renewed: dict[str, tuple[int, float, float]]

    def _renewals(self) -> dict[str, tuple[int, float, float]]:
        if not hasattr(self, "_renewed"):
            self._renewed = {}
        return self._renewed

    async def acquire_lease(
        self, holder: str, *, ttl_sec: float, at: datetime | None = None
    ) -> LeaseInfo:
        """Take the runner lease if free or silent for its ttl, renew it if ``holder`` has it."""
        if not ttl_sec or ttl_sec <= 0:
            raise ValueError("lease ttl_sec must be positive")
        when = entry_at(at)
        who = entry_actor(holder)
        ttl = float(ttl_sec)
        expires = when + timedelta(seconds=ttl)

        def body(conn: sqlite3.Connection, started: float) -> LeaseInfo:
            rows = conn.execute(_LEASE_SQL, (RUNNER_LEASE,)).fetchall()
            current = _lease(rows[0]) if rows else None
            if current is not None and current.holder == who:
                conn.execute(
                    "UPDATE lease SET heartbeat_at = ?, expires_at = ?, beat = beat + 1, "
                    "ttl_sec = ? WHERE name = ?", (u.iso(when), u.iso(expires), ttl, RUNNER_LEASE))
                self._renewals()[who] = (current.epoch, ttl, started)
                return LeaseInfo(who, current.acquired_at, when, expires, current.epoch,
                                 current.beat + 1)
            reason = None
            if current is not None:
                key = (current.holder, current.epoch, current.beat)
                seen = self._seen_beat
                if seen is None or seen[0] != key:
                    self._seen_beat = (key, started)
                    return current
                silent = started - seen[1]
                their_ttl = rows[0][6] if isinstance(rows[0][6], (int, float)) else ttl
                if silent < float(their_ttl):
                    return current
                reason = (f"lease of {current.holder} (epoch {current.epoch}) saw no renewal for "
                          f"{silent:.1f}s on this runner's clock (ttl {float(their_ttl):g}s)")
            elif rows:
                reason = "unreadable lease replaced"
            meta = conn.execute("SELECT value FROM meta WHERE key = 'lease_epoch'").fetchall()
            try:
                last_epoch = int(meta[0][0]) if meta else 0
            except ValueError:
                last_epoch = 0
            epoch = max(last_epoch, current.epoch if current else 0) + 1
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('lease_epoch', ?)",
                         (str(epoch),))
            conn.execute(
                "INSERT OR REPLACE INTO lease (name, holder, acquired_at, heartbeat_at, "
                "expires_at, epoch, beat, ttl_sec) VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                (RUNNER_LEASE, who, u.iso(when), u.iso(when), u.iso(expires), epoch, ttl))
            previous = current.holder if current else (str(rows[0][0]) if rows else None)
            self._append(conn, at=when, action="lease_acquired", actor=who, reason=reason,
                         details={"previous_holder": previous, "ttl_sec": ttl, "epoch": epoch,
                                  "expires_at": u.iso(expires)})
            self._seen_beat = None
            self._renewals()[who] = (epoch, ttl, started)
            return LeaseInfo(who, when, when, expires, epoch, 0)

        def op(conn: sqlite3.Connection) -> LeaseInfo:
            started = self._monotonic()
            return self._write(conn, lambda c: body(c, started))

        return await self._run(op)

    async def read_lease(self) -> LeaseInfo | None:
        def op(conn: sqlite3.Connection) -> LeaseInfo | None:
            rows = conn.execute(_LEASE_SQL, (RUNNER_LEASE,)).fetchall()
            return _lease(rows[0]) if rows else None
        return await self._run(op)

    async def release_lease(self, holder: str) -> None:
        """Give the lease up if ``holder`` has it (audited); otherwise do nothing."""
        who = clean_text(holder, limit=200)

        def body(conn: sqlite3.Connection) -> None:
            cur = conn.execute("DELETE FROM lease WHERE name = ? AND holder = ?",
                               (RUNNER_LEASE, who))
            if cur.rowcount:
                self._append(conn, at=utcnow(), action="lease_released", actor=who,
                             reason=None, details=None)
            self._renewals().pop(who, None)

        await self._run(lambda conn: self._write(conn, body))

    async def check_fence(self, holder: str, epoch: int, activation: int | None) -> None:
        """Raise ``FencedOut`` unless ``holder`` holds the lease at ``epoch`` (and has renewed
        it within its ttl by this process's clock) and ``activation`` is still latched."""
        who = clean_text(holder, limit=200)

        def op(conn: sqlite3.Connection) -> None:
            now = self._monotonic()
            row = conn.execute(_FENCE_SQL, (RUNNER_LEASE,)).fetchone()
            if row is None:
                raise FencedOut(f"the ESS state row is missing from {self._path}")
            owner, their_epoch, active, count = row
            if owner != who or their_epoch != epoch:
                raise FencedOut(
                    f"{who} no longer holds the runner lease at epoch {epoch} (held by "
                    f"{owner or 'nobody'} at epoch {their_epoch}): nothing is sent")
            renewed = self._renewals().get(who)
            if renewed is not None and renewed[0] == epoch and now - renewed[2] >= renewed[1]:
                raise FencedOut(
                    f"{who} has not renewed its lease for {now - renewed[2]:.1f}s (ttl "
                    f"{renewed[1]:g}s): a standby may have taken over; nothing is sent")
            if activation is not None and not (active == 1 and count == activation):
                raise FencedOut(
                    f"activation #{activation} is no longer the latched one (now "
                    f"{'latched #' + str(count) if active == 1 else 'armed'}): nothing is sent")

        await self._run(op)
