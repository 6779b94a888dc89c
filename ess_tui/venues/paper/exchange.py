"""The paper exchange: ess-tui's embedded default venue, and the venue its tests and drills run on.

:class:`PaperExchange` implements the :class:`~ess_tui.engine.venue.Venue` protocol in memory:
one net position per symbol, resting limit and stop orders, an account whose equity follows a
seeded random-walk market, and the faults a real venue has (latency, rate limits, timeouts, 429s,
5xx, rejected cancels, partial fills, down for good). Every venue call is logged with its
monotonic time, so tests can check the order of operations and benchmarks can count round trips.

It also records what the execution-error evaluator needs (stop-loss hits, order rejections, stamped
by an injectable clock), serves the ticks the data-feed evaluator watches, and offers the drills
the control room fires (crash, stop-loss storm, stalled feed, garbage tick).

Parts: ``world`` (the simulated market, execution record, drills, account reads), ``snapshot``
(the answers it gives), ``book`` (positions, orders, matching, the reduce-only rule), ``market`` (prices
and feed), ``wire`` (latency, rate limit, faults, call log), ``demo`` (the default world, data only).
Imports neither ccxt nor Textual.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal, TypeVar

from ess_tui.engine.state import as_utc, utcnow
from ess_tui.engine.venue import (
    Order,
    OrderSide,
    Position,
    ReduceOnlyViolation,
    VenueError,
    VenueRejected,
)
from ess_tui.market.ticks import Tick
from ess_tui.venues.paper.book import ORDER_KINDS, Fill, PaperBook
from ess_tui.venues.paper.demo import DEFAULT_PRICES
from ess_tui.venues.paper.market import GARBAGE_KINDS, SimulatedMarket
from ess_tui.venues.paper.snapshot import OrderAck, PaperSnapshot
from ess_tui.venues.paper.wire import CallRecord, FaultConfig, PaperWire, Sleep
from ess_tui.venues.paper.world import SimulatedWorld, positive_finite

__all__ = [
    "DEFAULT_PRICES",
    "GARBAGE_KINDS",
    "CallRecord",
    "FaultConfig",
    "Fill",
    "OrderAck",
    "PaperExchange",
    "PaperSnapshot",
    "Tick",
]

T = TypeVar("T")

#: How many stop-loss hits and order failures the execution record keeps.
RECORD_LIMIT = 10_000


class PaperExchange(SimulatedWorld):
    """An in-memory venue with a simulated market. All venue calls are async round trips.

    Args:
        name: venue name used in errors and order ids.
        prices: starting mid price per symbol (default: BTC, ETH, SOL, XRP against USDT).
        starting_cash: account cash in USDT.
        spread_bps: bid/ask spread in basis points of the mid (market buys pay the ask).
        volatility: log-return standard deviation per square-root second, one number or per symbol.
        seed: seeds the price walk (same seed, same prices).
        latency_ms: round-trip time of each venue call (half out, half back).
        rate_limit: requests per second (token bucket; callers wait their turn), None for no limit.
        rate_limit_burst: how many calls may go at once before the spacing starts.
        faults: injected faults, see :class:`FaultConfig`.
        clock: wall clock for tick timestamps and the execution record (default: UTC now).
        monotonic, sleep: the timer the wire uses; inject fakes to test latency without waiting.
        call_log_limit: how many calls ``calls`` keeps (``round_trips`` counts them all).
    """

    #: Strategy scopes (issue 15): orders carry the placer's client order id (``TAG-...``), so a
    #: strategy halt cancels that strategy's orders; positions are netted per symbol, so it
    #: cannot close one strategy's position (the scoped flatten says so).
    tags_orders = True
    tags_positions = False

    def __init__(
        self,
        *,
        name: str = "paper",
        prices: Mapping[str, float] | None = None,
        starting_cash: float = 100_000.0,
        spread_bps: float = 2.0,
        volatility: float | Mapping[str, float] = 0.0005,
        seed: int = 0,
        latency_ms: float = 0.0,
        rate_limit: float | None = None,
        rate_limit_burst: int = 1,
        faults: FaultConfig | None = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        call_log_limit: int | None = 10_000,
    ) -> None:
        self.name = name
        self._clock = clock
        self.book = PaperBook(starting_cash, venue=name)
        self.market = SimulatedMarket(
            DEFAULT_PRICES if prices is None else prices,
            spread_bps=spread_bps,
            volatility=volatility,
            seed=seed,
            clock=clock,
        )
        self.wire = PaperWire(
            venue=name,
            latency_ms=latency_ms,
            rate_limit=rate_limit,
            rate_limit_burst=rate_limit_burst,
            faults=faults,
            monotonic=monotonic,
            sleep=sleep,
            call_log_limit=call_log_limit,
        )
        self._stop_loss_hits: deque[datetime] = deque(maxlen=RECORD_LIMIT)
        self._order_failures: deque[datetime] = deque(maxlen=RECORD_LIMIT)

    @classmethod
    def demo(cls, seed: int = 0, **overrides: Any) -> PaperExchange:
        """The embedded-default world: 4 symbols, long and short positions, limit orders and
        protective reduce-only stops, 20 ms latency, no rate limit. ``overrides`` go to __init__
        (e.g. ``rate_limit=20``)."""
        from ess_tui.venues.paper.demo import build_demo

        return build_demo(cls, seed=seed, **overrides)

    # --- the wire: latency, rate limit, faults, call log ----------------------------------------

    @property
    def calls(self) -> list[CallRecord]:
        """(monotonic time sent, method, args) of every venue call, oldest first."""
        return self.wire.calls

    @property
    def round_trips(self) -> int:
        return self.wire.round_trips

    @property
    def latency_ms(self) -> float:
        return self.wire.latency_ms

    @latency_ms.setter
    def latency_ms(self, value: float) -> None:
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"latency_ms must be a number >= 0, got {value!r}")
        self.wire.latency_ms = float(value)

    @property
    def faults(self) -> FaultConfig:
        """The live fault configuration; flip ``faults.down`` to take the venue down or back up."""
        return self.wire.faults

    def set_faults(self, faults: FaultConfig) -> None:
        """Replace the fault configuration (its RNG restarts from ``faults.seed``)."""
        self.wire.set_faults(faults)

    async def _send(self, method: str, args: dict[str, Any], action: Callable[[], T]) -> T:
        try:
            return await self.wire.send(method, args, action)
        except VenueRejected:
            self._order_failures.append(self._now())
            raise

    def _now(self) -> datetime:
        return as_utc(self._clock())

    # --- the Venue protocol ----------------------------------------------------------------------

    async def fetch_positions(self) -> list[Position]:
        return await self._send("fetch_positions", {}, self._positions)

    async def fetch_open_orders(self) -> list[Order]:
        return await self._send("fetch_open_orders", {}, lambda: list(self.book.orders.values()))

    async def get_account_balance(self) -> float:
        """Equity in USDT: cash plus unrealised PnL at the mark."""
        return await self._send("get_account_balance", {}, lambda: self.equity)

    async def cancel_all_orders(self) -> int:
        """Cancel every resting order, stops included; return how many were cancelled.

        Under fault injection single cancels may be rejected: those orders stay open (and count as
        order failures), so re-fetch open orders to verify.
        """
        return await self._send("cancel_all_orders", {}, self._cancel_all)

    async def cancel_order(self, order_id: str) -> Order:
        """Cancel one resting order; return it. VenueRejected if it is not open or the cancel fails."""
        return await self._send("cancel_order", {"id": order_id}, lambda: self._cancel_one(order_id))

    async def close_position(self, position: Position) -> float:
        """Reduce-only market order on the closing side; return the amount filled.

        The amount is cut to the position actually held. ReduceOnlyViolation (book unchanged) if
        there is no such position or it faces the other way. Under fault injection the fill may be
        partial: the rest stays open.
        """
        args = {"symbol": position.symbol, "side": position.closing_side, "amount": position.amount}
        return await self._send("close_position", args, lambda: self._close(position))

    async def close_all_positions(self) -> int:
        """Fetch positions, then close them all concurrently (within the rate limit).

        Returns how many were closed completely. If any close failed, raises an error of the first
        failure's type saying how many closed and what failed; re-fetch to see what is left.
        """
        positions = await self.fetch_positions()
        results = await asyncio.gather(
            *(self.close_position(p) for p in positions), return_exceptions=True
        )
        closed = 0
        failures: list[tuple[Position, VenueError]] = []
        for position, result in zip(positions, results):
            if isinstance(result, VenueError):
                if isinstance(result, ReduceOnlyViolation) and position.symbol not in self.book.positions:
                    continue  # flattened meanwhile (e.g. its stop fired): nothing left to close
                failures.append((position, result))
            elif isinstance(result, BaseException):
                raise result
            elif result >= position.amount * (1 - 1e-9):
                closed += 1
        if failures:
            first = failures[0][1]
            detail = "; ".join(f"{p.symbol}: {e}" for p, e in failures)
            raise type(first)(
                f"{self.name} venue: closed {closed} of {len(positions)} positions; "
                f"{len(failures)} failed ({detail})",
                venue=self.name,
                call="close_all_positions",
            )
        return closed

    async def place_order(
        self,
        symbol: str,
        side: OrderSide,
        amount: float,
        kind: str = "market",
        price: float | None = None,
        reduce_only: bool = False,
        client_order_id: str | None = None,
    ) -> OrderAck:
        """Place a market, limit or stop order (``price`` is the limit or the stop trigger).

        Market orders fill at once (buy at the ask, sell at the bid). A limit order that crosses
        the book fills at once at the touch; otherwise it rests, as does a stop. A reduce-only order
        that would open, grow or flip a position is refused with ReduceOnlyViolation and the book is
        left unchanged; a reduce-only market order larger than the position is cut to it.
        """
        args = {
            "symbol": symbol,
            "side": side,
            "amount": amount,
            "kind": kind,
            "price": price,
            "reduce_only": reduce_only,
            "client_order_id": client_order_id,
        }
        return await self._send(
            "place_order",
            args,
            lambda: self._submit(symbol, side, amount, kind, price, reduce_only, faults=True,
                                 client_order_id=client_order_id),
        )

    async def close(self) -> None:
        """Nothing to release (kept for parity with ccxt exchanges)."""

    # --- venue-side actions (synchronous, atomic within the event loop) --------------------------

    def _positions(self) -> list[Position]:
        return [
            Position(sym, net.side, net.amount, net.entry, self.market.mid(sym))
            for sym, net in sorted(self.book.positions.items())
        ]

    def _cancel_all(self) -> int:
        cancelled = 0
        for order_id, order in list(self.book.orders.items()):
            if self.wire.chance(self.faults.reject_cancel_rate):
                self._order_failures.append(self._now())
                continue
            self.book.cancel(order_id)
            cancelled += 1
        return cancelled

    def _cancel_one(self, order_id: str) -> Order:
        order = self.book.orders.get(order_id)
        if order is None:
            raise VenueRejected(
                f"{self.name} venue: cannot cancel order {order_id!r}: it is not open "
                "(filled, cancelled or never placed); re-fetch open orders",
                venue=self.name,
                call="cancel_order",
            )
        if self.wire.chance(self.faults.reject_cancel_rate):
            raise VenueRejected(
                f"{self.name} venue: cancel of {order.describe()} rejected (simulated, "
                f"reject_cancel_rate={self.faults.reject_cancel_rate:g}); it is still open, retry",
                venue=self.name,
                call="cancel_order",
            )
        self.book.cancel(order_id)
        return order

    def _close(self, position: Position) -> float:
        ack = self._submit(
            position.symbol, position.closing_side, position.amount, "market", None, True, faults=True
        )
        return ack.filled

    def _reject(self, message: str) -> VenueRejected:
        return VenueRejected(f"{self.name} venue: {message}", venue=self.name, call="place_order")

    def _submit(
        self,
        symbol: str,
        side: OrderSide,
        amount: float,
        kind: str,
        price: float | None,
        reduce_only: bool,
        *,
        faults: bool,
        client_order_id: str | None = None,
    ) -> OrderAck:
        """Validate, apply the reduce-only rule, then fill or rest. Nothing changes on refusal."""
        if not self.market.lists(symbol):
            raise self._reject(
                f"unknown symbol {symbol!r}; this venue trades {', '.join(self.market.symbols)}"
            )
        if side not in ("buy", "sell"):
            raise self._reject(f"order side must be 'buy' or 'sell', got {side!r}")
        if kind not in ORDER_KINDS:
            raise self._reject(f"order kind must be one of {', '.join(ORDER_KINDS)}, got {kind!r}")
        if not positive_finite(amount):
            raise self._reject(f"order amount must be a positive number, got {amount!r}")
        bid, ask = self.market.quote(symbol)
        mid = self.market.mid(symbol)
        if kind != "market":
            if not positive_finite(price):
                raise self._reject(f"a {kind} order needs a positive price, got {price!r}")
            assert price is not None
            if kind == "stop":
                wrong = price <= mid if side == "buy" else price >= mid
                if wrong:
                    where = "below" if side == "buy" else "above"
                    raise self._reject(
                        f"stop {side} {symbol} trigger {price:g} is {where} the market {mid:g} and "
                        f"would trigger at once; put a stop {side} "
                        f"{'above' if side == 'buy' else 'below'} the market, or send a market order"
                    )
        marketable = kind == "market" or (
            kind == "limit" and (price >= ask if side == "buy" else price <= bid)  # type: ignore[operator]
        )
        if reduce_only:
            amount = self.book.reduce_only_amount(symbol, side, amount, clip=kind == "market")
        order = Order(
            self.book.next_id(),
            symbol,
            side,
            float(amount),
            None if kind == "market" else float(price),  # type: ignore[arg-type]
            kind,
            reduce_only,
            client_order_id,
        )
        if not marketable:
            self.book.rest(order)
            return OrderAck(order, "open")
        filled = order.amount
        status: Literal["filled", "partially_filled"] = "filled"
        if faults and kind == "market" and self.wire.chance(self.faults.partial_fill_rate):
            filled = order.amount * round(self.wire.uniform(0.2, 0.8), 4)
            status = "partially_filled"
        fill_price = ask if side == "buy" else bid
        self.book.fill(order.id, symbol, side, filled, fill_price, kind=kind, reduce_only=reduce_only)
        return OrderAck(order, status, filled, fill_price)

    def __repr__(self) -> str:
        return (
            f"PaperExchange(name={self.name!r}, positions={len(self.book.positions)}, "
            f"orders={len(self.book.orders)}, equity={self.equity:,.2f})"
        )
