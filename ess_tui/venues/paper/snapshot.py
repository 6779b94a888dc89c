"""What the paper exchange answers with: an order's acknowledgement, and a snapshot of the account.

Plain data; the exchange (``exchange.py``) builds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ess_tui.engine.venue import Order, Position
from ess_tui.venues.paper.book import Fill
from ess_tui.venues.paper.market import FeedState

__all__ = ["OrderAck", "PaperSnapshot"]


@dataclass(frozen=True)
class OrderAck:
    """The venue's answer to ``place_order``: the order, whether it rests or filled, and how much.

    A market order is immediate-or-cancel: ``partially_filled`` means the rest was cancelled.
    """

    order: Order
    status: Literal["open", "filled", "partially_filled"]
    filled: float = 0.0
    fill_price: float | None = None


@dataclass(frozen=True)
class PaperSnapshot:
    """Everything the control room's venue panel shows, read at one instant (no round trip)."""

    venue: str
    positions: tuple[Position, ...]
    orders: tuple[Order, ...]
    equity: float
    cash: float
    unrealised_pnl: float
    realised_pnl: float
    starting_cash: float
    feed: FeedState
    down: bool
    round_trips: int
    stop_loss_hits: int
    order_failures: int
    recent_fills: tuple[Fill, ...]
    taken_at: datetime

    @property
    def flat(self) -> bool:
        """No position and no resting order."""
        return not self.positions and not self.orders
