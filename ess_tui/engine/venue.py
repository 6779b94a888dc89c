"""The venue protocol the engine flattens through, its data types and its errors.

A venue is anything that holds positions and orders: the paper exchange (``ess_tui.venues.paper.exchange``),
a ccxt exchange (``ess_tui.venues.ccxt.venue``), or a seed-shaped ``exchange`` object that only has
``cancel_all_orders()`` and ``close_all_positions()``. This module imports neither ccxt nor Textual.

Every method may be sync or async in a seed-shaped object; ess-tui's own venues are async.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

Side = Literal["long", "short"]
OrderSide = Literal["buy", "sell"]


@dataclass(frozen=True)
class Position:
    """An open position. ``amount`` is always positive; ``side`` says which way."""

    symbol: str
    side: Side
    amount: float
    entry_price: float = 0.0
    mark_price: float = 0.0
    #: The strategy tag the venue attributes this position to (None: it cannot tell).
    strategy: str | None = None

    @property
    def notional(self) -> float:
        return abs(self.amount * (self.mark_price or self.entry_price))

    @property
    def closing_side(self) -> OrderSide:
        """The order side that reduces this position."""
        return "sell" if self.side == "long" else "buy"

    def describe(self) -> str:
        return f"{self.symbol} {self.side} {self.amount:g}"


@dataclass(frozen=True)
class Order:
    """A resting order. ``kind`` is ``limit``, ``stop``, ``take_profit``, ``market`` or a venue's own."""

    id: str
    symbol: str
    side: OrderSide
    amount: float
    price: float | None = None
    kind: str = "limit"
    reduce_only: bool = False
    #: The client order id the placer gave (a strategy tag prefix: ``TAG-...``), if any.
    client_order_id: str | None = None

    @property
    def notional(self) -> float:
        return abs(self.amount * (self.price or 0.0))

    def describe(self) -> str:
        px = f" @ {self.price:g}" if self.price else ""
        return f"{self.symbol} {self.kind} {self.side} {self.amount:g}{px}"


class VenueError(Exception):
    """A venue call failed. ``retryable`` says whether trying again can help."""

    retryable: bool = True

    def __init__(self, message: str, *, venue: str = "", call: str = "") -> None:
        super().__init__(message)
        self.venue = venue
        self.call = call


class VenueTimeout(VenueError):
    """The call did not answer in time. Retryable."""


class VenueRateLimited(VenueError):
    """429 / DDoS protection. Retryable after a pause."""


class VenueUnavailable(VenueError):
    """5xx, maintenance, network down. Retryable."""


class VenueRejected(VenueError):
    """The venue refused this one request (e.g. an order it would not take). Retryable next pass."""


class VenueAuthError(VenueError):
    """API key rejected or lacks permission. Not retryable: a person has to act."""

    retryable = False


class ReduceOnlyViolation(VenueRejected):
    """A reduce-only order would have increased exposure; the venue refused it."""


@runtime_checkable
class Venue(Protocol):
    """What ess-tui's own venues implement. Flatten uses the fetch methods to verify."""

    name: str

    async def fetch_positions(self) -> list[Position]: ...

    async def fetch_open_orders(self) -> list[Order]: ...

    async def cancel_all_orders(self) -> int:
        """Cancel every open order, stop/trigger orders included. Returns how many were cancelled."""
        ...

    async def close_position(self, position: Position) -> float:
        """Send a reduce-only market order on ``position.closing_side`` for ``position.amount``.

        Returns the amount filled. Must never increase exposure.
        """
        ...

    async def close_all_positions(self) -> int: ...

    async def get_account_balance(self) -> float: ...
