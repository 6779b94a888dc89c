"""The trade gate: the one call any process of the desk makes before it trades.

    from ess_tui.gate import TradeGate

    gate = TradeGate("~/.local/state/ess-tui/ess.db")
    decision = gate.check()
    if not decision.allowed:
        reject(decision.reason)      # "ESS active: Daily PnL catastrophic: -12.00%"

It reads the ESS database read-only with the stdlib ``sqlite3`` (no ccxt, Textual, aiosqlite or
pydantic is imported), keeps its connection open between checks, and runs one SELECT per check.
It fails closed: a missing, corrupt, truncated, locked or unreadable file, a schema newer than this
code, a foreign look-alike, or an invalid state row all answer *blocked*, with a reason a person
can act on. It judges the file with the same validation the store uses
(:mod:`ess_tui.store.validate`), again whenever the file changes, and it reads the latch's second
channel, the latch marker beside the database (:mod:`ess_tui.store.marker`): a latch that could
not reach the database yet still blocks. The decision also says whether a runner holds a live
lease (judged by this process's monotonic clock watching the lease's beat); with
``require_runner=True`` no live runner means blocked.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ess_tui.engine.scopes import (
    ACTIVE_SQL,
    HALT,
    ScopedLatch,
    covering,
    latches_from_rows,
    most_severe,
)
from ess_tui.store.marker import LatchMarker, marker_path, read_marker_file
from ess_tui.store.schema import RUNNER_LEASE, explain_error
from ess_tui.store.validate import Invalid, Validator, check_file, check_state_row

__all__ = ["GateDecision", "TradeGate"]

NO_RUNNER = "no ESS runner is watching this desk"

#: The steady path's one SELECT: the state row, the connection's ``data_version`` (it moves when
#: another connection commits, which makes the validation look again, schema version included),
#: and from schema 2 on the lease row.
_STATE = (
    "SELECT active, reason, since, activation_count, last_reset_by, last_reset_at, change_seq, "
    "(SELECT data_version FROM pragma_data_version)"
)
_SQL_V2 = (_STATE + ", l.holder, l.epoch, l.beat, l.ttl_sec, l.expires_at, l.heartbeat_at FROM state s "
           f"LEFT JOIN lease l ON l.name = '{RUNNER_LEASE}' WHERE s.id = 1")
_SQL_V1 = _STATE + ", NULL, NULL, NULL, NULL, NULL, NULL FROM state WHERE id = 1"
#: The longest lease a gate believes (the config's own ceiling): a row claiming more is capped.
_MAX_TTL_SEC = 600.0
#: The schema version that brought the ``latches`` table (scoped and reduce-only latches).
LATCHES_SINCE_VERSION = 4
#: A directory whose mtime is this recent may still change within the same timestamp tick.
_FRESH_NS = 2_000_000_000


@dataclass(frozen=True)
class GateDecision:
    """The gate's answer. ``bool(decision)`` is ``decision.allowed``.

    ``runner_live`` says whether a runner holds a live lease (None when unknown), ``holder``
    names it; neither takes part in equality."""

    allowed: bool
    reason: str | None = None
    activation_count: int | None = None
    since: datetime | None = None
    runner_live: bool | None = field(default=None, compare=False)
    holder: str | None = field(default=None, compare=False)
    #: The level of the most severe latch covering the caller ("halt", "reduce_only") and its
    #: scope ("desk", "venue=okx", "strategy=mm-btc"); None when nothing covers it.
    level: str | None = field(default=None, compare=False)
    scope: str | None = field(default=None, compare=False)
    #: How many active latches cover the caller (the desk halt included).
    latches: int = field(default=0, compare=False)

    def __bool__(self) -> bool:
        return self.allowed


def _parse_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _read_latches(conn: sqlite3.Connection) -> list[ScopedLatch]:
    try:
        return latches_from_rows(conn.execute(ACTIVE_SQL).fetchall())
    except ValueError as exc:  # a row no ess-tui wrote: blocked, with the reason
        raise Invalid(f"the latches table holds a row this ess-tui cannot read ({exc})") from exc


def _scoped(decision: GateDecision, worst: ScopedLatch | None, count: int,
            reduce_only: bool) -> GateDecision:
    """The desk answer narrowed by the most severe scoped latch covering the caller."""
    if worst is None:
        return decision
    what = "halted" if worst.level == HALT else "reduce-only"
    text = f"ESS {what} ({worst.scope}): {worst.reason}"
    allowed = decision.allowed and worst.level != HALT and reduce_only
    if not allowed and worst.level != HALT and decision.allowed:
        text += " (only orders that reduce exposure pass: check(reduce_only=True))"
    if not decision.allowed:  # e.g. no live runner: that reason stays first
        text = f"{decision.reason}; {text}"
    return GateDecision(allowed, text, decision.activation_count, decision.since,
                        decision.runner_live, decision.holder, worst.level, str(worst.scope),
                        count)


class _Reader:
    """One thread's open read-only connection, which file (inode) and process it belongs to,
    and its validation."""

    __slots__ = ("conn", "ident", "pid", "validator", "main", "good_row", "scoped")

    def __init__(self, conn: sqlite3.Connection, ident: tuple[int, int], pid: int,
                 validator: Validator, main: tuple[int, ...]) -> None:
        self.conn = conn
        self.ident = ident
        self.pid = pid
        self.validator = validator
        self.main = main
        self.good_row: tuple[object, ...] | None = None  # the last state row found valid
        #: (data_version, active scoped latches) as last read; re-read when data_version moves
        self.scoped: tuple[object, list[ScopedLatch], dict[object, object]] | None = None


class TradeGate:
    """Answers "may this process trade now?" from the ESS database, failing closed.

    ``busy_timeout_sec`` is how long a check waits for a lock held by another process before it
    answers blocked. ``require_runner`` blocks while no runner holds a live lease. Safe to share
    between threads (each thread gets its own connection).
    """

    def __new__(cls, db_path: str | os.PathLike[str], **kwargs: object) -> TradeGate:
        if isinstance(db_path, str) and db_path.strip().lower().startswith(
                ("postgresql://", "postgres://")):
            # A desk on PostgreSQL: the LISTENing gate, loaded only now (no driver otherwise).
            from ess_tui.store.postgres.gate import PGTradeGate

            kwargs.pop("busy_timeout_sec", None)
            return PGTradeGate(db_path, decision_type=GateDecision,  # type: ignore[return-value]
                               **kwargs)  # type: ignore[arg-type]
        return super().__new__(cls)

    def __init__(self, db_path: str | os.PathLike[str], *, busy_timeout_sec: float = 0.1,
                 require_runner: bool = False) -> None:
        self._path = os.path.abspath(os.path.expanduser(os.fspath(db_path)))
        # The latch marker beside the real file (symlinks resolved once, here) and its folder.
        self._marker_file = marker_path(self._path)
        self._last: tuple[tuple[object, ...], GateDecision] | None = None  # see _decide
        self._dir = os.path.dirname(self._marker_file)
        self._uri = Path(self._path).as_uri() + "?mode=ro"
        self._timeout = float(busy_timeout_sec)
        self._require_runner = bool(require_runner)
        self._local = threading.local()
        self._marker_at: int | None = None  # directory mtime the cached marker answer is for
        self._marker: LatchMarker | None = None
        self._beat: tuple[tuple[object, ...], float, bool] | None = None

    @property
    def path(self) -> str:
        return self._path

    def __repr__(self) -> str:
        return f"TradeGate({self._path!r})"

    def _blocked(self, why: str) -> GateDecision:
        return GateDecision(False, f"ESS state unavailable, trading blocked: {why}")

    def _drop(self) -> None:
        reader: _Reader | None = getattr(self._local, "reader", None)
        self._local.reader = None
        if reader is not None and reader.pid == os.getpid():
            with contextlib.suppress(sqlite3.Error):
                reader.conn.close()

    def _open(self, ident: tuple[int, int], pid: int, main: tuple[int, ...]) -> _Reader:
        self._drop()
        check_file(self._path)  # an empty, foreign or garbage file is judged before SQLite opens it
        conn = sqlite3.connect(self._uri, uri=True, timeout=self._timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA query_only = ON")
            reader = _Reader(conn, ident, pid, Validator(self._path), main)
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            reader.validator.check(conn, main, version)
        except BaseException:
            conn.close()
            raise
        self._local.reader = reader
        return reader

    def _latch_marker(self) -> LatchMarker | None:
        """The latch marker, re-read whenever the directory changed (a stat per check)."""
        try:
            mtime = os.stat(self._dir).st_mtime_ns
        except OSError:
            return read_marker_file(self._marker_file)
        if mtime != self._marker_at or time.time_ns() - mtime < _FRESH_NS:
            self._marker = read_marker_file(self._marker_file)
            self._marker_at = mtime
        return self._marker

    def check(self, venue: str | None = None, strategy: str | None = None,
              reduce_only: bool = False) -> GateDecision:
        """Allowed, or blocked with the reason. Never raises for a database problem.

        ``venue`` and ``strategy`` are the caller's scope (None: covered by every latch);
        ``reduce_only=True`` says the order only reduces exposure, which a reduce-only latch
        lets through. The answer comes from the most severe latch covering the caller."""
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            self._drop()
            return self._blocked(
                f"database not found: {self._path} (start the ESS runner to create it, "
                "or fix the path)"
            )
        except OSError as exc:
            self._drop()
            return self._blocked(explain_error(exc, self._path))
        ident = (st.st_dev, st.st_ino)
        main = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        pid = os.getpid()
        reader: _Reader | None = getattr(self._local, "reader", None)
        try:
            if reader is None or reader.ident != ident or reader.pid != pid:
                # First check, a replaced file, or a forked child: (re)open.
                reader = self._open(ident, pid, main)
            validator = reader.validator
            version = validator.version
            row = reader.conn.execute(_SQL_V2 if version >= 2 else _SQL_V1).fetchone()
            if row is None:
                check_state_row(None, self._path)
            if validator.check(reader.conn, main, row[7]) != version:
                # the schema changed under us: read it the new way
                return self.check(venue, strategy, reduce_only)
            state = row[:7]
            if state != reader.good_row:
                check_state_row((version, *state), self._path)
                reader.good_row = state
            scoped: tuple[object, list[ScopedLatch], dict[object, object]] | None = None
            if version >= LATCHES_SINCE_VERSION:
                scoped = reader.scoped
                if scoped is None or scoped[0] != row[7]:
                    scoped = (row[7], _read_latches(reader.conn), {})
                    reader.scoped = scoped
        except Invalid as exc:
            self._drop()
            return self._blocked(str(exc))
        except (sqlite3.Error, OSError) as exc:
            self._drop()
            return self._blocked(explain_error(exc, self._path))
        decision = self._decide(row, self._latch_marker())
        if scoped is None or not scoped[1] or (not decision.allowed and decision.level is not None):
            return decision
        memo = scoped[2]
        key = (venue, strategy)
        if not (venue is None or type(venue) is str) or not (
                strategy is None or type(strategy) is str):
            return GateDecision(False, "trade gate: venue and strategy must be text or None; "
                                "trading blocked", decision.activation_count)
        found = memo.get(key)
        if found is None:  # worked out once per caller scope and read of the latches
            if len(memo) > 4096:
                memo.clear()
            cover = covering(scoped[1], venue, strategy)
            found = memo[key] = (most_severe(cover), len(cover))
        return _scoped(decision, *found, reduce_only)  # type: ignore[misc]

    def _runner(self, row: tuple[object, ...]) -> tuple[bool, str | None]:
        """Whether the lease's holder is alive: its beat moved within its ttl on *our* clock.

        On first sight (a gate built for one check) the row is all there is: it counts as live
        only if its last renewal is within its ttl of our wall clock and its expiry is no further
        than one ttl past that renewal. A dead holder whose clock ran an hour ahead, or a row
        edited to expire next week, never reads live; a live holder on a skewed clock reads
        not-live until the beat is seen to move (blocked with ``require_runner``: fail closed)."""
        holder, epoch, beat, ttl, expires, renewed = (row[8], row[9], row[10], row[11], row[12],
                                                      row[13])
        if not isinstance(holder, str) or not holder:
            return False, None
        limit = float(ttl) if isinstance(ttl, (int, float)) and ttl > 0 else 5.0
        limit = min(limit, _MAX_TTL_SEC)
        key = (holder, epoch, beat)
        now = time.monotonic()
        seen = self._beat
        if seen is None or seen[0] != key:
            if seen is None:
                alive = self._plausibly_live(expires, renewed, limit)
            else:
                alive = True  # we saw the beat move
            self._beat = seen = (key, now, alive)
        return seen[2] and now - seen[1] < limit, holder

    @staticmethod
    def _plausibly_live(expires: object, renewed: object, ttl: float) -> bool:
        until, last = _parse_time(expires), _parse_time(renewed)
        if until is None or last is None:
            return False
        wall = datetime.now(timezone.utc)
        age = (wall - last).total_seconds()
        return -1.0 <= age < ttl and until > wall and (until - last).total_seconds() <= ttl + 1.0

    def _decide(self, row: tuple[object, ...], marker: LatchMarker | None) -> GateDecision:
        """The decision for this row and marker; the same inputs give the same (immutable)
        answer, so the steady path reuses it instead of building it again."""
        live, holder = self._runner(row)
        key = (row[:8], marker, live, holder)
        last = self._last
        if last is not None and last[0] == key:
            return last[1]
        decision = self._decide_fresh(row, marker, live, holder)
        self._last = (key, decision)
        return decision

    def _decide_fresh(self, row: tuple[object, ...], marker: LatchMarker | None, live: bool,
                      holder: str | None) -> GateDecision:
        active, reason, since, count = row[0], row[1], row[2], row[3]
        count_value = count if isinstance(count, int) else None
        when = _parse_time(since)
        if active == 1:
            text = reason if isinstance(reason, str) and reason else "(no reason recorded)"
            return GateDecision(False, f"ESS active: {text}", count_value, when, live, holder,
                                HALT, "desk", 1)
        if marker is not None and not marker.covered_by(False, count_value or 0):
            return GateDecision(
                False, f"ESS active: {marker.reason} (latched by the latch marker "
                f"{self._marker_file}; the database does not hold it yet)",
                marker.activation, _parse_time(marker.at), live, holder, HALT, "desk", 1)
        if self._require_runner and not live:
            where = f"lease held by {holder}, not renewed" if holder else "no lease holder"
            return GateDecision(False, f"{NO_RUNNER} ({where}; start `ess-tui headless`)",
                                count_value, when, live, holder)
        return GateDecision(True, None, count_value, when, live, holder)

    def close(self) -> None:
        """Close this thread's connection (a later check reopens it)."""
        self._drop()

    def __enter__(self) -> TradeGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
