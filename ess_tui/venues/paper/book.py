"""The paper exchange's book: cash, one net position per symbol, resting orders, and matching.

No I/O and no clocks: :class:`PaperBook` is told prices and returns what filled. It enforces the
reduce-only rule every caller relies on: a reduce-only order may only shrink the position it
faces, never open, grow or flip one. :meth:`PaperBook.reduce_only_amount` refuses before anything
changes, so a refused order leaves the book exactly as it was.

Accounting is margin style: a fill exchanges no notional; realised PnL moves into cash when a
position shrinks, and equity is cash plus the unrealised PnL of open positions at the mark.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count

from ess_tui.engine.venue import (
    Order,
    OrderSide,
    Position,
    ReduceOnlyViolation,
    Side,
    VenueRejected,
)

ORDER_KINDS: tuple[str, ...] = ("market", "limit", "stop")

#: Quotes as the book sees them: symbol -> (bid, ask).
Quotes = Callable[[str], tuple[float, float]]


def _flat(qty: float, reference: float) -> bool:
    """Float dust after a close counts as flat."""
    return abs(qty) <= 1e-9 * max(1.0, abs(reference))


def fmt_amount(value: float) -> str:
    return f"{value:.10g}"


@dataclass
class NetPosition:
    """Signed quantity (+ long, - short) and average entry price of one symbol."""

    qty: float
    entry: float

    @property
    def side(self) -> Side:
        return "long" if self.qty > 0 else "short"

    @property
    def amount(self) -> float:
        return abs(self.qty)


@dataclass(frozen=True)
class Fill:
    """One execution: which order, how much at what price, and what it realised."""

    order_id: str
    symbol: str
    side: OrderSide
    amount: float
    price: float
    kind: str
    reduce_only: bool
    realised_pnl: float

    @property
    def stop_loss(self) -> bool:
        """A reduce-only stop that reduced a position: what traders call a stop-loss hit."""
        return self.kind == "stop" and self.reduce_only


class PaperBook:
    """Positions, resting orders and cash of one paper account."""

    def __init__(self, starting_cash: float, *, venue: str = "paper") -> None:
        valid = isinstance(starting_cash, (int, float)) and math.isfinite(starting_cash)
        if not valid or starting_cash <= 0:
            raise ValueError(f"starting cash must be a positive number, got {starting_cash!r}")
        self.venue = venue
        self.starting_cash = float(starting_cash)
        self.cash = float(starting_cash)
        self.realised_pnl = 0.0
        self.positions: dict[str, NetPosition] = {}
        self.orders: dict[str, Order] = {}
        self.fills: deque[Fill] = deque(maxlen=200)
        self._ids = count(1)

    # --- reading -------------------------------------------------------------------------------

    def position(self, symbol: str, mark: float = 0.0) -> Position | None:
        net = self.positions.get(symbol)
        if net is None:
            return None
        return Position(symbol, net.side, net.amount, net.entry, mark)

    def unrealised_pnl(self, marks: Callable[[str], float]) -> float:
        return sum(net.qty * (marks(sym) - net.entry) for sym, net in self.positions.items())

    def equity(self, marks: Callable[[str], float]) -> float:
        return self.cash + self.unrealised_pnl(marks)

    def next_id(self) -> str:
        return f"{self.venue}-{next(self._ids)}"

    # --- the reduce-only rule ------------------------------------------------------------------

    def reduce_only_amount(self, symbol: str, side: OrderSide, amount: float, *, clip: bool) -> float:
        """How much of a reduce-only ``side`` order for ``amount`` may execute now.

        Refuses (ReduceOnlyViolation) when there is no position, when the order is on the side that
        would grow the position, or when it is larger than the position and ``clip`` is False
        (resting orders); with ``clip`` (market orders) the amount is cut to the position.
        """
        what = f"reduce-only {side} {fmt_amount(amount)} {symbol}"
        net = self.positions.get(symbol)
        if net is None:
            raise ReduceOnlyViolation(
                f"{what} refused: there is no {symbol} position to reduce. Re-fetch positions; "
                "if it is already flat there is nothing to close",
                venue=self.venue,
                call="reduce_only",
            )
        grows = (net.side == "long" and side == "buy") or (net.side == "short" and side == "sell")
        if grows:
            closing = "sell" if net.side == "long" else "buy"
            raise ReduceOnlyViolation(
                f"{what} refused: it would increase the {net.side} {fmt_amount(net.amount)} position. "
                f"To reduce a {net.side} position send a {closing} order",
                venue=self.venue,
                call="reduce_only",
            )
        if amount > net.amount * (1 + 1e-9):
            if clip:
                return net.amount
            raise ReduceOnlyViolation(
                f"{what} refused: it is larger than the {net.side} {fmt_amount(net.amount)} position "
                f"and would flip it. Send at most {fmt_amount(net.amount)}",
                venue=self.venue,
                call="reduce_only",
            )
        return min(amount, net.amount)

    # --- changing the book ---------------------------------------------------------------------

    def fill(
        self,
        order_id: str,
        symbol: str,
        side: OrderSide,
        amount: float,
        price: float,
        *,
        kind: str = "market",
        reduce_only: bool = False,
    ) -> Fill:
        """Apply an execution to the net position and cash; return the fill."""
        delta = amount if side == "buy" else -amount
        net = self.positions.get(symbol)
        realised = 0.0
        if net is None:
            self.positions[symbol] = NetPosition(delta, price)
        elif (net.qty > 0) == (delta > 0):
            new_qty = net.qty + delta
            net.entry = (abs(net.qty) * net.entry + amount * price) / abs(new_qty)
            net.qty = new_qty
        else:
            closing = min(abs(net.qty), amount)
            realised = closing * (price - net.entry) * (1.0 if net.qty > 0 else -1.0)
            new_qty = net.qty + delta
            if _flat(new_qty, net.qty):
                del self.positions[symbol]
            elif (new_qty > 0) == (net.qty > 0):
                net.qty = new_qty
            else:  # flipped: the rest opens a new position at this price
                net.qty, net.entry = new_qty, price
        self.cash += realised
        self.realised_pnl += realised
        done = Fill(order_id, symbol, side, amount, price, kind, reduce_only, realised)
        self.fills.append(done)
        return done

    def set_position(self, symbol: str, side: Side, amount: float, entry_price: float) -> None:
        """Put a position on the book directly (seeding a world; no cash changes hands)."""
        if side not in ("long", "short"):
            raise ValueError(f"position side must be 'long' or 'short', got {side!r}")
        if not math.isfinite(amount) or amount <= 0 or not math.isfinite(entry_price) or entry_price <= 0:
            raise ValueError(f"{symbol} position needs a positive amount and entry price")
        self.positions[symbol] = NetPosition(amount if side == "long" else -amount, float(entry_price))

    def rest(self, order: Order) -> None:
        self.orders[order.id] = order

    def cancel(self, order_id: str) -> Order | None:
        return self.orders.pop(order_id, None)

    # --- matching ------------------------------------------------------------------------------

    def match(self, symbols: set[str] | None, quotes: Quotes) -> list[Fill]:
        """Fill every resting order the current quotes cross, oldest first.

        A limit buy fills at its price once the ask reaches it (a limit sell once the bid does).
        A stop sell triggers once the mid falls to its trigger and fills at the bid (a stop buy
        once the mid rises to it, at the ask): a gap fills at the gapped price. A reduce-only
        order is cut to the position it faces, and is cancelled if it can no longer reduce.
        """
        fills: list[Fill] = []
        for order in list(self.orders.values()):
            if symbols is not None and order.symbol not in symbols:
                continue
            if order.id not in self.orders or order.price is None:
                continue
            bid, ask = quotes(order.symbol)
            mid = (bid + ask) / 2.0
            buy = order.side == "buy"
            if order.kind == "limit":
                hit = ask <= order.price if buy else bid >= order.price
                price = order.price
            elif order.kind == "stop":
                hit = mid >= order.price if buy else mid <= order.price
                price = ask if buy else bid
            else:
                continue
            if not hit:
                continue
            del self.orders[order.id]
            amount = order.amount
            if order.reduce_only:
                try:
                    amount = self.reduce_only_amount(order.symbol, order.side, amount, clip=True)
                except VenueRejected:
                    continue  # nothing left to reduce: the order expires unfilled
            fills.append(
                self.fill(
                    order.id,
                    order.symbol,
                    order.side,
                    amount,
                    price,
                    kind=order.kind,
                    reduce_only=order.reduce_only,
                )
            )
        return fills
