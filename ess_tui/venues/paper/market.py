"""The paper exchange's simulated market: one seeded random-walk price per symbol, and its feed.

Prices move as a driftless geometric random walk: each :meth:`SimulatedMarket.step` of ``dt``
seconds multiplies a symbol's mid by ``exp(vol * sqrt(dt) * z - vol**2 * dt / 2)`` with ``z`` drawn
from a :class:`random.Random` seeded once, so the same seed gives the same prices. Bid and ask sit
half the spread either side of the mid.

The feed (:meth:`SimulatedMarket.last_tick` to poll, :meth:`SimulatedMarket.subscribe` to be pushed
every tick) is what a data-feed monitor sees, and drills can
break it without touching the prices the book trades on: a stalled feed keeps its last ticks and
their old timestamps; a garbage tick (NaN, crossed book, future timestamp) is served until
:meth:`SimulatedMarket.recover`.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Literal

from ess_tui.market.ticks import Tick

log = logging.getLogger(__name__)

GARBAGE_KINDS: tuple[str, ...] = ("nan", "crossed", "future")
FeedState = Literal["live", "stalled", "garbage"]

#: How far in the future a "future" garbage tick is stamped.
FUTURE_SKEW = timedelta(hours=1)


def _positive(value: object, what: str) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return float(value)


class SimulatedMarket:
    """Mid prices per symbol, a fixed proportional spread, and the feed of ticks built on them."""

    def __init__(
        self,
        prices: Mapping[str, float],
        *,
        spread_bps: float,
        volatility: float | Mapping[str, float],
        seed: int,
        clock: Callable[[], datetime],
    ) -> None:
        if not isinstance(spread_bps, (int, float)) or not 0 <= spread_bps < 10_000:
            raise ValueError(f"spread_bps must be between 0 and 10000 basis points, got {spread_bps!r}")
        self.spread_bps = float(spread_bps)
        self._clock = clock
        self._rng = random.Random(seed)
        self._mid: dict[str, float] = {}
        self._vol: dict[str, float] = {}
        self._default_vol = volatility if isinstance(volatility, (int, float)) else 0.0
        self._ticks: dict[str, Tick] = {}
        self._garbage: dict[str, Tick] = {}
        self._listeners: list[Callable[[Tick], object]] = []
        self.stalled = False
        #: False while the venue is down: like a dropped websocket, the feed delivers nothing.
        self.connected = True
        for symbol, price in prices.items():
            vol = volatility.get(symbol, 0.0) if isinstance(volatility, Mapping) else volatility
            self.add_symbol(symbol, price, volatility=vol)

    # --- prices --------------------------------------------------------------------------------

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._mid)

    def lists(self, symbol: str) -> bool:
        """Is ``symbol`` traded here? O(1), unlike ``symbol in symbols``."""
        return symbol in self._mid

    def add_symbol(self, symbol: str, price: float, *, volatility: float | None = None) -> None:
        """Quote ``symbol`` from now on, starting at ``price``.

        ``volatility`` is the standard deviation of the log return per square-root second.
        """
        vol = self._default_vol if volatility is None else volatility
        if not isinstance(vol, (int, float)) or not math.isfinite(vol) or vol < 0:
            raise ValueError(f"volatility for {symbol} must be a number >= 0, got {vol!r}")
        self._mid[symbol] = _positive(price, f"price for {symbol}")
        self._vol[symbol] = float(vol)
        self._publish(symbol)

    def _require(self, symbol: str) -> None:
        if symbol not in self._mid:
            known = ", ".join(self._mid) or "none"
            raise KeyError(f"the paper market does not quote {symbol!r} (it quotes: {known})")

    def mid(self, symbol: str) -> float:
        self._require(symbol)
        return self._mid[symbol]

    def quote(self, symbol: str) -> tuple[float, float]:
        """(bid, ask) around the mid."""
        mid = self.mid(symbol)
        half = mid * self.spread_bps / 20_000.0
        return mid - half, mid + half

    def set_price(self, symbol: str, price: float) -> None:
        self._require(symbol)
        self._mid[symbol] = _positive(price, f"price for {symbol}")
        self._publish(symbol)

    def step(self, dt: float = 1.0) -> None:
        """Advance every symbol's random walk by ``dt`` seconds and publish fresh ticks."""
        if not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt < 0:
            raise ValueError(f"step dt must be a number of seconds >= 0, got {dt!r}")
        for symbol in self._mid:
            vol = self._vol[symbol]
            z = self._rng.gauss(0.0, 1.0)
            if vol > 0 and dt > 0:
                self._mid[symbol] *= math.exp(vol * math.sqrt(dt) * z - 0.5 * vol * vol * dt)
            self._publish(symbol)

    # --- feed ----------------------------------------------------------------------------------

    @property
    def delivering(self) -> bool:
        return not self.stalled and self.connected

    def _publish(self, symbol: str) -> None:
        if not self.delivering:
            return
        bid, ask = self.quote(symbol)
        tick = Tick(symbol, bid, ask, self._mid[symbol], self._clock())
        self._ticks[symbol] = tick
        self._emit(self._garbage.get(symbol) or tick)

    def _emit(self, tick: Tick) -> None:
        for listener in list(self._listeners):
            try:
                listener(tick)
            except Exception:  # a broken subscriber must not stop the market
                log.exception("paper market: tick subscriber %r failed", listener)

    def subscribe(self, listener: Callable[[Tick], object]) -> Callable[[], None]:
        """Call ``listener(tick)`` for every tick delivered from now on (garbage included, nothing
        while stalled). Returns a function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def publish_all(self) -> None:
        for symbol in self._mid:
            self._publish(symbol)

    def last_tick(self, symbol: str) -> Tick:
        """The last tick the feed delivered for ``symbol`` (garbage if a drill injected some)."""
        self._require(symbol)
        return self._garbage.get(symbol) or self._ticks[symbol]

    @property
    def feed_state(self) -> FeedState:
        if self._garbage:
            return "garbage"
        return "stalled" if self.stalled or not self.connected else "live"

    def stall(self) -> None:
        """Stop delivering ticks: the last ones stay, with their timestamps ageing."""
        self.stalled = True

    def inject_garbage(self, kind: str, symbols: tuple[str, ...] | None = None) -> None:
        """Serve a bad tick for ``symbols`` (default: all) until :meth:`recover`."""
        if kind not in GARBAGE_KINDS:
            raise ValueError(f"garbage tick kind must be one of {', '.join(GARBAGE_KINDS)}; got {kind!r}")
        for symbol in symbols or self.symbols:
            self._require(symbol)
            now = self._clock()
            mid = self._mid[symbol]
            if kind == "nan":
                tick = Tick(symbol, math.nan, math.nan, math.nan, now)
            elif kind == "crossed":
                tick = Tick(symbol, mid * 1.01, mid * 0.99, mid, now)
            else:
                bid, ask = self.quote(symbol)
                tick = Tick(symbol, bid, ask, mid, now + FUTURE_SKEW)
            self._garbage[symbol] = tick
            if self.delivering:
                self._emit(tick)

    def recover(self) -> None:
        """Feed healthy again: garbage cleared, stall lifted, fresh ticks stamped now."""
        self._garbage.clear()
        self.stalled = False
        self.publish_all()
