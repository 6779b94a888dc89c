"""Market-data validation and the feed monitor the Data Feed evaluator reads.

* :func:`validate_tick` says why one tick is corrupt (or None when it is good).
* :class:`FeedMonitor` is fed every tick (``on_tick``) from any thread. It answers the seed's
  data feed monitor contract: ``get_last_update_time()`` (timestamp of the last *good* tick) and
  ``is_corrupted()``, plus ``corruption_reason()`` for the detail.

Corruption is **latched per symbol**: once a symbol sends a bad tick it stays corrupted until it
has sent ``good_ticks_to_recover`` consecutive good ticks (default 3), or until
:meth:`FeedMonitor.clear`.
Input that is not a tick at all (None, a dict, a string…) cannot be tied to a symbol; it latches
the feed as a whole, which recovers after the same number of consecutive good ticks of any symbol.
``good_ticks_to_recover=0`` disables recovery: only ``clear()`` clears.

Whether it recovers or not, the ESS itself stays latched once the Data Feed evaluator fired; the
recovery only lets the gauge (and the reset checklist's "feed fresh" check) see a healthy feed
again.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from ess_tui.engine.aio import nonblocking
from ess_tui.engine.state import as_utc, clean_text, utcnow
from ess_tui.market.ticks import Tick

log = logging.getLogger(__name__)

__all__ = ["FeedMonitor", "Tick", "validate_tick", "DEFAULT_MAX_SKEW_SEC"]

#: How far in the future a tick timestamp may be before it is corrupt (venue/host clock skew).
DEFAULT_MAX_SKEW_SEC = 5.0

_PRICE_FIELDS = ("bid", "ask", "last")


def _short(value: Any) -> str:
    return clean_text(repr(value), limit=60)


def _price(tick: Any, field: str) -> tuple[float | None, str | None]:
    """(price, None) when ``tick.field`` is a finite positive number, else (None, problem)."""
    value = getattr(tick, field)
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, Decimal)):
        return None, f"{field} is not a number: {_short(value)}"
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        return None, f"{field} is not a finite number: {_short(value)}"
    if number <= 0:
        return None, f"{field} is not a positive price: {number:g}"
    return number, None


def _reference_price(tick: Any) -> float | None:
    """The price a jump is measured on: last, else mid. None if the tick has none usable."""
    try:
        last, problem = _price(tick, "last")
        if problem is None:
            return last
        bid, p1 = _price(tick, "bid")
        ask, p2 = _price(tick, "ask")
        if p1 is None and p2 is None and bid is not None and ask is not None:
            return (bid + ask) / 2.0
    except Exception:
        return None
    return None


def validate_tick(
    tick: Any,
    previous: Any | None,
    now: datetime,
    max_jump_pct: float | None = None,
    *,
    max_skew_sec: float = DEFAULT_MAX_SKEW_SEC,
) -> str | None:
    """Why ``tick`` is corrupt, or None when it is good. Never raises.

    Checks, in order: it is a tick at all (has symbol, bid, ask, last, timestamp), a non-empty
    symbol, each price a finite number > 0, an uncrossed book (bid ≤ ask), a timezone-sensible
    timestamp (naive means UTC) not more than ``max_skew_sec`` ahead of ``now``, not earlier
    than ``previous``'s, and, when ``max_jump_pct`` is given, a price no more than that many
    percent away from ``previous``'s (last, else mid).
    """
    try:
        return _validate(tick, previous, now, max_jump_pct, max_skew_sec)
    except Exception as exc:  # a tick so odd that checking it failed is corrupt by definition
        return f"tick could not be checked ({type(exc).__name__}: {exc})"


def _validate(
    tick: Any, previous: Any | None, now: datetime, max_jump_pct: float | None,
    max_skew_sec: float,
) -> str | None:
    if tick is None:
        return "received None instead of a tick"
    missing = [f for f in ("symbol", *_PRICE_FIELDS, "timestamp") if not hasattr(tick, f)]
    if missing:
        return f"malformed tick: a {type(tick).__name__} without {', '.join(missing)}"
    symbol = tick.symbol
    if not isinstance(symbol, str) or not symbol.strip():
        return f"malformed tick: symbol is {_short(symbol)}"
    prices: dict[str, float] = {}
    for field in _PRICE_FIELDS:
        value, problem = _price(tick, field)
        if problem is not None:
            return problem
        assert value is not None
        prices[field] = value
    if prices["bid"] > prices["ask"]:
        return f"crossed book: bid {prices['bid']:g} > ask {prices['ask']:g}"
    stamp = tick.timestamp
    if not isinstance(stamp, datetime):
        return f"timestamp is not a datetime: {_short(stamp)}"
    stamp = as_utc(stamp)
    now = as_utc(now)
    ahead = (stamp - now).total_seconds()
    if ahead > max_skew_sec:
        return (
            f"timestamp {stamp.isoformat(timespec='seconds')} is {ahead:.1f} s in the future "
            f"(allowance {max_skew_sec:g} s)"
        )
    if previous is not None:
        prev_stamp = getattr(previous, "timestamp", None)
        if isinstance(prev_stamp, datetime) and stamp < as_utc(prev_stamp):
            back = (as_utc(prev_stamp) - stamp).total_seconds()
            return f"timestamp went backwards by {back:.3f} s"
        if max_jump_pct is not None:
            old = _reference_price(previous)
            new = _reference_price(tick)
            if old is not None and new is not None:
                jump = abs(new / old - 1.0) * 100.0
                if jump > max_jump_pct:
                    return (
                        f"price jumped {jump:.1f}% from {old:g} to {new:g} in one tick "
                        f"(limit {max_jump_pct:g}%)"
                    )
    return None


@dataclass
class _SymbolState:
    last_good: datetime | None = None
    last_good_mono: float | None = None  # when it arrived, on the monotonic clock
    last_good_lag: float = 0.0  # how old it already was when it arrived (wall, at one instant)
    reference: Any = None  # last tick that was structurally sound (jump / ordering reference)
    corrupt_reason: str | None = None
    corrupt_at: datetime | None = None
    good_streak: int = 0


class FeedMonitor:
    """Watches a stream of ticks; the Data Feed evaluator's ``data_feed_monitor``.

    ``symbols``: if given, ``get_last_update_time()`` answers for the *stalest* of them (None
    while any has never sent a good tick), so one frozen symbol cannot hide behind busy ones.
    Without it, it answers the newest good tick of any symbol.

    ``on_corruption`` (or :meth:`bind_wake`) is called, outside the monitor's lock, when a symbol
    (or the feed) goes from clean to corrupted. All methods are safe to call from any thread.
    """

    def __init__(
        self,
        *,
        symbols: list[str] | tuple[str, ...] | None = None,
        max_jump_pct: float | None = None,
        max_skew_sec: float = DEFAULT_MAX_SKEW_SEC,
        good_ticks_to_recover: int = 3,
        clock: Callable[[], datetime] | None = None,
        on_corruption: Callable[[], None] | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        if max_jump_pct is not None and not (
            isinstance(max_jump_pct, (int, float)) and max_jump_pct > 0
        ):
            raise ValueError(f"max_jump_pct must be a number > 0 or None, got {max_jump_pct!r}")
        if not isinstance(good_ticks_to_recover, int) or good_ticks_to_recover < 0:
            raise ValueError(
                f"good_ticks_to_recover must be a whole number ≥ 0, got {good_ticks_to_recover!r}"
            )
        self._expected = tuple(symbols) if symbols else ()
        self.max_jump_pct = max_jump_pct
        self.max_skew_sec = max_skew_sec
        self.good_ticks_to_recover = good_ticks_to_recover
        self._clock = clock or utcnow
        # Ages ("since start", "since the last good tick") run on the monotonic clock, so a
        # wall-clock step changes neither. A clock object with a ``monotonic()`` (a test's fake)
        # lends it.
        self._mono: Callable[[], float] = (
            monotonic or getattr(clock, "monotonic", None) or time.monotonic
        )
        self._started_mono = self._mono()
        self._wake = on_corruption
        self._lock = threading.Lock()
        self._symbols: dict[str, _SymbolState] = {}
        self._feed = _SymbolState()  # corruption that cannot be tied to a symbol
        self.ticks_seen = 0
        self.ticks_rejected = 0

    # -- wiring ------------------------------------------------------------------------------

    def bind_wake(self, callback: Callable[[], None] | None) -> None:
        """Called (from the thread that fed the tick) when corruption is first seen."""
        with self._lock:
            self._wake = callback

    # -- input -------------------------------------------------------------------------------

    def on_tick(self, tick: Any) -> str | None:
        """Take one tick (or whatever arrived). Returns the corruption reason, None if good.

        Never raises: garbage marks the feed corrupted with a reason that says what arrived.
        """
        try:
            now = as_utc(self._clock())
        except Exception:
            log.exception("feed monitor clock failed; using the system clock")
            now = utcnow()
        symbol = getattr(tick, "symbol", None)
        key = symbol.strip() if isinstance(symbol, str) and symbol.strip() else None
        with self._lock:
            self.ticks_seen += 1
            state = self._symbols.setdefault(key, _SymbolState()) if key else self._feed
            problem = validate_tick(
                tick, state.reference if key else None, now, self.max_jump_pct,
                max_skew_sec=self.max_skew_sec,
            )
            newly_corrupt = False
            if problem is None:
                state.reference = tick
                state.last_good = as_utc(tick.timestamp)
                state.last_good_mono = self._safe_mono()
                state.last_good_lag = max(0.0, (now - state.last_good).total_seconds())
                self._count_good(state)
                if key is not None:
                    self._count_good(self._feed)
            else:
                self.ticks_rejected += 1
                problem = clean_text(problem, limit=200)
                if key is not None and self.max_jump_pct is not None and validate_tick(
                    tick, state.reference, now, None, max_skew_sec=self.max_skew_sec
                ) is None:
                    state.reference = tick  # only a jump: later ticks compare with the new level
                newly_corrupt = state.corrupt_reason is None
                state.good_streak = 0
                if newly_corrupt:
                    state.corrupt_reason = problem
                    state.corrupt_at = now
            wake = self._wake if newly_corrupt else None
        if problem is not None:
            where = key or "feed"
            log.warning("market data corrupt (%s): %s", where, problem)
        if wake is not None:
            try:
                wake()
            except Exception:
                log.exception("feed monitor wake callback failed")
        return problem

    def _safe_mono(self) -> float:
        try:
            return float(self._mono())
        except Exception:  # noqa: BLE001
            return time.monotonic()

    def seconds_watching(self) -> float:
        """Seconds since this monitor started, on the monotonic clock (never negative)."""
        return max(0.0, self._safe_mono() - self._started_mono)

    @nonblocking
    def last_update_age_sec(self) -> float | None:
        """Age in seconds of the last good tick (the stalest expected symbol's, see the class
        docstring); None while one has never arrived.

        The age is how old the tick already was when it arrived (its timestamp against the wall
        clock *at that instant*) plus the time since, on the monotonic clock: a wall-clock step
        after it arrived changes nothing, unlike comparing ``get_last_update_time()`` with now.
        """
        now = self._safe_mono()
        with self._lock:
            states = (
                [self._symbols.get(s, _SymbolState()) for s in self._expected] if self._expected
                else [s for s in self._symbols.values() if s.last_good_mono is not None]
            )
            if not states or any(s.last_good_mono is None for s in states):
                return None
            ages = [max(0.0, now - float(s.last_good_mono)) + s.last_good_lag  # type: ignore[arg-type]
                    for s in states]
        return max(ages) if self._expected else min(ages)

    def _count_good(self, state: _SymbolState) -> None:
        if state.corrupt_reason is None:
            return
        state.good_streak += 1
        if self.good_ticks_to_recover and state.good_streak >= self.good_ticks_to_recover:
            log.info("market data recovered after %d good ticks", state.good_streak)
            state.corrupt_reason = None
            state.corrupt_at = None
            state.good_streak = 0

    def clear(self, symbol: str | None = None) -> None:
        """Clear latched corruption for ``symbol``, or for every symbol and the feed."""
        with self._lock:
            states = (
                [self._symbols[symbol]] if symbol is not None and symbol in self._symbols
                else [] if symbol is not None
                else [*self._symbols.values(), self._feed]
            )
            for state in states:
                state.corrupt_reason = None
                state.corrupt_at = None
                state.good_streak = 0

    # -- the seed's data feed monitor contract -------------------------------------------------

    @nonblocking
    def get_last_update_time(self) -> datetime | None:
        """UTC timestamp of the last good tick (see the class docstring for ``symbols``)."""
        with self._lock:
            if self._expected:
                stamps = [self._symbols.get(s, _SymbolState()).last_good for s in self._expected]
                if any(stamp is None for stamp in stamps):
                    return None
                return min(stamps)  # type: ignore[type-var]
            stamps = [s.last_good for s in self._symbols.values() if s.last_good is not None]
            return max(stamps) if stamps else None

    @nonblocking
    def is_corrupted(self) -> bool:
        with self._lock:
            return self._is_corrupt_locked()

    def _is_corrupt_locked(self) -> bool:
        return self._feed.corrupt_reason is not None or any(
            s.corrupt_reason is not None for s in self._symbols.values()
        )

    @nonblocking
    def corruption_reason(self) -> str | None:
        """``"BTC/USDT: crossed book: bid 101 > ask 100"``, several joined with ``; ``."""
        with self._lock:
            parts = [f"feed: {self._feed.corrupt_reason}"] if self._feed.corrupt_reason else []
            parts += [
                f"{symbol}: {state.corrupt_reason}"
                for symbol, state in sorted(self._symbols.items())
                if state.corrupt_reason is not None
            ]
        if not parts:
            return None
        if len(parts) > 3:
            parts = [*parts[:3], f"and {len(parts) - 3} more"]
        return "; ".join(parts)

    # -- for the control room ----------------------------------------------------------------

    def last_update_by_symbol(self) -> dict[str, datetime | None]:
        """Each known (or expected) symbol's last good tick time."""
        with self._lock:
            names = list(dict.fromkeys([*self._expected, *self._symbols]))
            return {n: self._symbols.get(n, _SymbolState()).last_good for n in names}

    def stalest_symbol(self, now: datetime | None = None) -> tuple[str, timedelta | None] | None:
        """The symbol whose data is oldest and its age (None age: never updated)."""
        table = self.last_update_by_symbol()
        if not table:
            return None
        now = as_utc(now or self._clock())
        never = [n for n, t in table.items() if t is None]
        if never:
            return never[0], None
        name = min(table, key=lambda n: table[n])  # type: ignore[arg-type,return-value]
        return name, now - table[name]  # type: ignore[operator]

