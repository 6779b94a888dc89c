"""The paper exchange's simulated world: the market it steps, what the evaluators read, the drills.

:class:`SimulatedWorld` is the half of :class:`~ess_tui.venues.paper.exchange.PaperExchange` that is
not a venue call: stepping prices and matching what they cross, the execution record (stop-loss
hits, order failures), the tick feed, and the drills the control room fires. The exchange owns the
state (``market``, ``book``, ``wire``, ``faults``, the execution record); this class only acts on it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from datetime import datetime

from ess_tui.engine.text import as_utc
from ess_tui.engine.venue import OrderSide, Position, Side
from ess_tui.market.ticks import Tick
from ess_tui.venues.paper.book import Fill, PaperBook
from ess_tui.venues.paper.market import FeedState, SimulatedMarket
from ess_tui.venues.paper.snapshot import OrderAck, PaperSnapshot
from ess_tui.venues.paper.wire import FaultConfig, PaperWire

__all__ = ["SimulatedWorld", "positive_finite"]


def positive_finite(value: object) -> bool:
    """A real number above zero (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and value > 0


class SimulatedWorld:
    """Market stepping, the execution record, ticks and drills, on the exchange's own state."""

    market: SimulatedMarket
    book: PaperBook
    wire: PaperWire
    _stop_loss_hits: deque[datetime]
    _order_failures: deque[datetime]

    @property
    def faults(self) -> FaultConfig:  # the exchange overrides this with its wire's faults
        raise NotImplementedError

    def _now(self) -> datetime:  # the exchange overrides this with its injected clock
        raise NotImplementedError

    name: str

    @property
    def round_trips(self) -> int:  # the exchange overrides this with its wire's count
        raise NotImplementedError

    def _positions(self) -> list[Position]:  # the exchange's book, as venue positions
        raise NotImplementedError

    def _submit(self, symbol: str, side: OrderSide, amount: float, kind: str,
                price: float | None, reduce_only: bool, *, faults: bool,
                client_order_id: str | None = None) -> OrderAck:  # the exchange's order entry
        raise NotImplementedError

    # --- the account, read locally ---------------------------------------------------------------

    @property
    def equity(self) -> float:
        return self.book.equity(self.market.mid)

    @property
    def unrealised_pnl(self) -> float:
        return self.book.unrealised_pnl(self.market.mid)

    @property
    def starting_cash(self) -> float:
        return self.book.starting_cash

    def snapshot(self) -> PaperSnapshot:
        """Positions, orders, equity and health, read directly (no latency, never fails)."""
        return PaperSnapshot(
            venue=self.name,
            positions=tuple(self._positions()),
            orders=tuple(self.book.orders.values()),
            equity=self.equity,
            cash=self.book.cash,
            unrealised_pnl=self.unrealised_pnl,
            realised_pnl=self.book.realised_pnl,
            starting_cash=self.book.starting_cash,
            feed=self.market.feed_state,
            down=self.faults.down,
            round_trips=self.round_trips,
            stop_loss_hits=len(self._stop_loss_hits),
            order_failures=len(self._order_failures),
            recent_fills=tuple(self.book.fills)[-20:],
            taken_at=self._now(),
        )

    # --- the simulated market --------------------------------------------------------------------

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.market.symbols

    def step(self, dt: float = 1.0) -> list[Fill]:
        """Advance the market ``dt`` seconds; fill what the new prices cross. Returns the fills."""
        self.market.connected = not self.faults.down
        self.market.step(dt)
        return self._match()

    def tick(self) -> list[Fill]:
        """One one-second step."""
        return self.step(1.0)

    def drift(self, dt: float = 1.0) -> list[Fill]:
        """Let PnL move: the same as :meth:`step`, named for the control room's timer."""
        return self.step(dt)

    async def run_market(self, interval: float = 1.0) -> None:
        """Step the market every ``interval`` seconds until cancelled (a background task)."""
        while True:
            await self.wire.sleep(interval)
            self.step(interval)

    def set_price(self, symbol: str, price: float) -> list[Fill]:
        """Move one symbol's mid to ``price`` (tests, drills); fill what it crosses."""
        self.market.connected = not self.faults.down
        self.market.set_price(symbol, price)
        return self._match({symbol})

    def _match(self, symbols: set[str] | None = None) -> list[Fill]:
        fills = self.book.match(symbols, self.market.quote)
        now = self._now()
        for fill in fills:
            if fill.stop_loss:
                self._stop_loss_hits.append(now)
        return fills

    # --- what the evaluators read ----------------------------------------------------------------

    def stop_loss_hits(self, since: datetime) -> int:
        """Stop-loss hits (reduce-only stops that fired on a position) at or after ``since``."""
        cutoff = as_utc(since)
        return sum(1 for ts in self._stop_loss_hits if ts >= cutoff)

    def order_failures(self, since: datetime) -> int:
        """Orders and cancels the venue rejected at or after ``since``."""
        cutoff = as_utc(since)
        return sum(1 for ts in self._order_failures if ts >= cutoff)

    def last_tick(self, symbol: str) -> Tick:
        """The last tick the feed delivered for ``symbol``. KeyError for a symbol not quoted."""
        return self.market.last_tick(symbol)

    def subscribe_ticks(self, listener: Callable[[Tick], object]) -> Callable[[], None]:
        """Push every delivered tick to ``listener`` (e.g. ``FeedMonitor.on_tick``): nothing while
        the feed is stalled or the venue down, the bad tick while a garbage drill runs.
        Returns a function that unsubscribes."""
        return self.market.subscribe(listener)

    @property
    def feed_state(self) -> FeedState:
        """``live``, ``stalled`` (drill, or the venue is down) or ``garbage`` (drill)."""
        return self.market.feed_state

    # --- drills ----------------------------------------------------------------------------------

    def drill_crash(self, pct: float = 10.0) -> list[Fill]:
        """Move every price ``pct`` percent against the book (longs down, shorts up, flat
        symbols down) in one gap; stops fire at the gapped price. Returns the fills."""
        if not positive_finite(pct) or pct >= 100:
            raise ValueError(f"crash size must be a percentage between 0 and 100, got {pct!r}")
        self.market.connected = not self.faults.down
        for symbol in self.market.symbols:
            net = self.book.positions.get(symbol)
            against_up = net is not None and net.qty < 0
            factor = 1 + pct / 100 if against_up else 1 - pct / 100
            self.market.set_price(symbol, self.market.mid(symbol) * factor)
        return self._match()

    def drill_stop_hits(self, n: int = 11) -> None:
        """Record ``n`` stop-loss hits now (default 11: past the default limit of 10 in 15 min).
        Only the execution record changes; the book is untouched."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"number of stop-loss hits must be a whole number >= 1, got {n!r}")
        now = self._now()
        self._stop_loss_hits.extend([now] * n)

    def drill_stall_feed(self) -> None:
        """The feed stops delivering: ticks keep their last prices and timestamps."""
        self.market.stall()

    def drill_garbage_tick(self, kind: str = "nan", symbol: str | None = None) -> None:
        """Serve a bad tick (``nan``, ``crossed`` or ``future``) for ``symbol`` (default: every
        symbol) until :meth:`drill_recover_feed`. Trading prices are unaffected."""
        self.market.inject_garbage(kind, None if symbol is None else (symbol,))

    def drill_recover_feed(self) -> None:
        """End feed drills: garbage cleared, stall lifted, fresh ticks stamped now."""
        self.market.connected = not self.faults.down
        self.market.recover()

    # --- seeding a world (no round trip, no faults) ----------------------------------------------

    def seed_position(self, symbol: str, side: Side, amount: float, entry_price: float | None = None) -> None:
        """Put a position on the book directly, entered at ``entry_price`` (default: the mid)."""
        entry = self.market.mid(symbol) if entry_price is None else entry_price
        self.book.set_position(symbol, side, amount, entry)

    def seed_order(
        self,
        symbol: str,
        side: OrderSide,
        amount: float,
        kind: str = "limit",
        price: float | None = None,
        reduce_only: bool = False,
        client_order_id: str | None = None,
    ) -> OrderAck:
        """``place_order`` without the wire: no latency, no faults, not logged."""
        return self._submit(symbol, side, amount, kind, price, reduce_only, faults=False,
                            client_order_id=client_order_id)
