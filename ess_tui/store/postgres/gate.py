"""The trade gate for a desk on PostgreSQL: ``TradeGate("postgresql://gate@host/desk")``.

``ess_tui.gate`` loads this module only for a ``postgresql://`` URL, so a gate on a SQLite file
never imports a PostgreSQL driver. It hands in its ``GateDecision`` class (``decision_type``), so
the answers are the same type as a SQLite gate's and this module never imports the gate (the
arrows point down: gate -> store).

One background thread per gate keeps one autocommit connection that ``LISTEN``s on the ESS
channel (a connection of its own: notifications need it idle, psycopg issue #340). Latch and reset
arrive as NOTIFYs carrying the new state (a latch is taken from the payload at once; a reset, which
would allow trading, only prompts a re-read of the state row, so a forged NOTIFY can never allow
trading); between them a check answers from memory, with no round trip. Every
``max_silence / 5`` the thread re-reads the state row: that is both the keepalive and the repair
for anything missed. The gate FAILS CLOSED on silence: when the connection drops, or
nothing has been heard from the server (no notification, no answer to the keepalive) for
``max_silence`` seconds, it answers blocked ("ESS store unreachable for 1.2 s"); it recovers by
reconnecting and re-reading the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from ess_tui.store.postgres.schema import SCHEMA_VERSION, STATE_COLUMNS, too_new
from ess_tui.store.postgres.url import PGTarget, quote_ident, redact

__all__ = ["PGTradeGate"]


@dataclass(frozen=True)
class GateDecision:
    """The same fields as ``ess_tui.gate.GateDecision``, used when none is handed in."""

    allowed: bool
    reason: str | None = None
    activation_count: int | None = None
    since: datetime | None = None
    runner_live: bool | None = field(default=None, compare=False)
    holder: str | None = field(default=None, compare=False)

    def __bool__(self) -> bool:
        return self.allowed

#: The state row, and the holder of a live runner lease (judged on the server's clock, the one
#: clock every host shares), read together on every keepalive.
_STATE_SQL = (f"SELECT (SELECT value FROM meta WHERE key = 'schema_version'), {STATE_COLUMNS}, "
              "(SELECT holder FROM lease WHERE expires_at > clock_timestamp() "
              "ORDER BY epoch DESC LIMIT 1) "
              "FROM state WHERE id = 1")

#: What a gate that requires a runner answers while none holds a live lease.
NO_RUNNER = "no ESS runner is watching this desk (no live runner lease; start `ess-tui headless`)"


@dataclass(frozen=True)
class _Snapshot:
    """What the gate knows, replaced whole (one attribute write, safe across threads)."""

    decision: Any                   # a GateDecision; None: nothing read yet
    change_seq: int
    heard: float                    # monotonic time the server last answered
    down: str | None = None         # why the connection is down (None while it is up)
    runner: str | None = None       # holder of a live runner lease at the last read
    answer: Any = None              # what check() returns while the connection is heard


class PGTradeGate:
    """Answers "may this process trade now?" from memory, kept current by LISTEN/NOTIFY."""

    def __init__(self, url: str, *, max_silence: float = 1.0,
                 connect_timeout_sec: float | None = None,
                 decision_type: type[Any] = GateDecision, require_runner: bool = False) -> None:
        self._target = PGTarget(url)
        self._D = decision_type
        self._require_runner = bool(require_runner)
        if not max_silence or max_silence <= 0:
            raise ValueError("max_silence must be a positive number of seconds")
        self.max_silence = float(max_silence)
        self._interval = self.max_silence / 5
        self._connect_timeout = float(connect_timeout_sec or max(2.0, 2 * self.max_silence))
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._snap = _Snapshot(None, -1, time.monotonic(), "not connected yet")
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    @property
    def path(self) -> str:
        return self._target.display

    def __repr__(self) -> str:
        return f"TradeGate({self._target.display!r})"

    # --- the check (hot path: memory only) ------------------------------------------------

    def check(self, venue: str | None = None, strategy: str | None = None,
              reduce_only: bool = False) -> Any:
        """Allowed, or blocked with the reason. Never raises for a database problem.

        The latch on PostgreSQL is desk-wide: it covers every venue and strategy."""
        if self._pid != os.getpid():
            self._start()
        snap = self._snap
        now = time.monotonic()
        if snap.down is not None:
            return self._unreachable(now - snap.heard, snap.down)
        silent = now - snap.heard
        if silent > self.max_silence:
            return self._unreachable(silent, "no answer to the gate's keepalive")
        if snap.decision is None:
            return self._unreachable(silent, "the state has not been read yet")
        return snap.answer

    def _unreachable(self, silent: float, why: str) -> Any:
        return self._D(False, f"ESS store unreachable for {silent:.1f} s, trading blocked: "
                                   f"{why} ({self._target.display})")

    # --- the listening thread -------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()  # a forked child starts its own thread and connection
            self._stopping = False
            self._ready.clear()
            self._snap = _Snapshot(None, -1, time.monotonic(), "not connected yet")
            self._thread = threading.Thread(target=self._thread_main, name="ess-gate-listen",
                                            daemon=True)
            self._thread.start()
        self._ready.wait(self._connect_timeout)

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except Exception:  # noqa: BLE001 - the gate stays blocked; check() reports silence
            pass
        finally:
            with contextlib.suppress(Exception):
                loop.close()

    def _set(self, **changes: Any) -> None:
        old = self._snap
        decision = changes.get("decision", old.decision)
        runner = changes.get("runner", old.runner)
        new = _Snapshot(
            decision, changes.get("change_seq", old.change_seq),
            changes.get("heard", old.heard), changes.get("down", old.down), runner,
            self._answer(decision, runner))
        self._snap = new
        if new.decision != old.decision or new.down != old.down or new.runner != old.runner:
            with self._changed:
                self._changed.notify_all()

    def _answer(self, decision: Any, runner: str | None) -> Any:
        """The decision as check() gives it: with the runner's liveness, and blocked when a
        runner is required and none holds a live lease. Computed once per change, not per check."""
        if decision is None:
            return None
        live = runner is not None
        if self._require_runner and decision.allowed and not live:
            return self._D(False, NO_RUNNER, decision.activation_count, decision.since,
                           runner_live=False, holder=None)
        return dataclasses.replace(decision, runner_live=live, holder=runner)

    def wait_change(self, timeout: float) -> Any:
        """Wait up to ``timeout`` seconds for news (a latch, a reset, a lost connection), then
        answer as :meth:`check` does. For a process that reacts to a latch at once instead of
        polling; silence is judged at the moment of the answer, as always."""
        if self._pid != os.getpid():
            self._start()
        snap = self._snap
        with self._changed:
            if self._snap is snap:
                self._changed.wait(timeout)
        return self.check()

    async def _serve(self) -> None:
        while not self._stopping:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await asyncio.wait_for(self._connect(), self._connect_timeout)
                await asyncio.wait_for(conn.execute(f"LISTEN {quote_ident(self._target.channel)}"),
                                       self.max_silence)
                await self._read(conn)
                while not self._stopping:
                    # aclosing: leaving the generator early must release the connection's lock.
                    async with contextlib.aclosing(conn.notifies(timeout=self._interval)) as gen:
                        async for note in gen:
                            if not self._apply(note.payload):
                                break  # unreadable payload: re-read the row now
                    await self._read(conn)
            except Exception as exc:  # noqa: BLE001 - every failure means blocked, then retry
                if not self._stopping:
                    self._set(down=self._explain(exc))
                    self._ready.set()
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 0.5)
            if not self._stopping:
                await asyncio.sleep(min(0.2, self._interval))

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self._target.conninfo, **self._target.connect_kwargs(), autocommit=True,
            connect_timeout=max(1, int(self._connect_timeout)),
            options=f"-c search_path={self._target.schema} -c timezone=UTC",
            keepalives=1, keepalives_idle=5, keepalives_interval=1, keepalives_count=3,
            tcp_user_timeout=int(self.max_silence * 2000), application_name="ess-tui gate")

    def _explain(self, exc: BaseException) -> str:
        if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            return "the server did not answer in time"
        if isinstance(exc, psycopg.errors.UndefinedTable):
            return "the database holds no ess-tui schema (run `ess-tui init --db URL`)"
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            return ("this role may not read the ESS state (GRANT SELECT ON ALL TABLES IN SCHEMA "
                    f"{self._target.schema} TO it)")
        text = redact(" ".join(str(exc).split()))[:300] or type(exc).__name__
        return f"connection lost: {text}"

    async def _read(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await asyncio.wait_for(conn.execute(_STATE_SQL), self.max_silence)
        row = await cur.fetchone()
        now = time.monotonic()
        decision, seq = self._decide_row(row)
        runner = row[-1] if row is not None and isinstance(row[-1], str) else None
        self._set(decision=decision, change_seq=seq, heard=now, down=None, runner=runner)
        self._ready.set()

    def _decide_row(self, row: Any) -> tuple[Any, int]:
        if row is None:
            return self._D(False, "ESS state unavailable, trading blocked: the ESS state row "
                                "is missing; restore the database from a backup"), -1
        version, active, reason, since, count, _by, _at, seq, _runner = row
        try:
            found = int(version)
        except (TypeError, ValueError):
            found = -1
        if found > SCHEMA_VERSION or found < 1:
            why = too_new(found) if found > SCHEMA_VERSION else "unreadable schema version"
            return self._D(False, f"ESS state unavailable, trading blocked: {why}"), int(seq)
        return self._decision(active, reason, since, count), int(seq)

    def _decision(self, active: object, reason: object, since: datetime | None,
                  count: object) -> Any:
        count_value = int(count) if isinstance(count, int) else None
        if active is False:
            return self._D(True, None, count_value, since)
        if active is True:
            text = reason if isinstance(reason, str) and reason else "(no reason recorded)"
            return self._D(False, f"ESS active: {text}", count_value, since)
        return self._D(False, f"ESS state unavailable, trading blocked: state.active = "
                                   f"{active!r}; the database is damaged")

    def _apply(self, payload: str) -> bool:
        """Take the state a NOTIFY carries, if it blocks. False: re-read the row now.

        Anyone who can connect can NOTIFY the channel, so a notification is trusted only to
        block (latch: taken at once, the fast path). One that would allow trading (a reset), or
        that cannot be read, only makes the gate re-read the state row, which alone says armed."""
        try:
            data = json.loads(payload)
            seq = int(data["change_seq"])
            since = datetime.fromisoformat(data["since"]) if data.get("since") else None
            decision = self._decision(data["active"], data.get("reason"), since,
                                      data.get("activation_count"))
        except (ValueError, KeyError, TypeError):
            self._set(decision=self._D(False, "ESS state unavailable, trading blocked: "
                                            "an unreadable notification; re-reading"))
            return False
        if decision.allowed:
            return False
        if seq > self._snap.change_seq:
            self._set(decision=decision, change_seq=seq)
        return True

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening and close the connection (a later check starts again)."""
        self._stopping = True
        thread, loop = self._thread, self._loop
        if thread is not None and loop is not None and self._pid == os.getpid():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lambda: None)
            thread.join(timeout=2 * self._interval + 1.0)
        self._thread = None
        self._pid = -1

    def __enter__(self) -> PGTradeGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
