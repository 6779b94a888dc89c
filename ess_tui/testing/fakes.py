"""Fakes for users' own tests, in the seed's shapes.

    from ess_tui.testing import FakeMetricsRepository, FakeExchange, RecordingEventBus

Each fake records what was asked of it so a test can assert on order and counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ess_tui.engine.venue import Order, Position

__all__ = [
    "FakeDataFeedMonitor",
    "FakeExchange",
    "FakeHealthMonitor",
    "FakeMetricsRepository",
    "FakeVenue",
    "RecordingEventBus",
]


@dataclass
class FakeMetricsRepository:
    """The seed's metrics repo: set the attributes, the evaluators read them."""

    daily_pnl_pct: float = 0.0
    equity_drawdown_pct: float = 0.0
    sl_hits: int = 0
    order_failures: int = 0

    def get_daily_pnl_percent(self) -> float:
        return self.daily_pnl_pct

    def get_equity_drawdown_percent(self) -> float:
        return self.equity_drawdown_pct

    def get_recent_sl_hits(self, minutes: float) -> int:
        return self.sl_hits

    def get_recent_order_failures(self, minutes: float) -> int:
        return self.order_failures


@dataclass
class FakeHealthMonitor:
    status: str = "HEALTHY"

    def get_status(self) -> str:
        return self.status


@dataclass
class FakeDataFeedMonitor:
    last_update: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    corrupted: bool = False

    def get_last_update_time(self) -> datetime:
        return self.last_update

    def is_corrupted(self) -> bool:
        return self.corrupted


@dataclass
class FakeExchange:
    """Seed-shaped exchange: only the two bulk calls and a balance. Records the call order."""

    open_orders: int = 3
    open_positions: int = 2
    balance: float = 100_000.0
    calls: list[str] = field(default_factory=list)

    async def cancel_all_orders(self) -> int:
        self.calls.append("cancel_all_orders")
        n, self.open_orders = self.open_orders, 0
        return n

    async def close_all_positions(self) -> int:
        self.calls.append("close_all_positions")
        n, self.open_positions = self.open_positions, 0
        return n

    async def get_account_balance(self) -> float:
        self.calls.append("get_account_balance")
        return self.balance


@dataclass
class FakeVenue:
    """A full venue (fetch, cancel, close reduce-only) with scripted failures, for engine tests.

    ``fail`` maps a method name to a list of exceptions raised by its next calls, in order.
    ``refuse_close`` keeps positions open however often they are closed (a venue that won't fill).
    """

    positions: list[Position] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    fail: dict[str, list[BaseException]] = field(default_factory=dict)
    refuse_close: bool = False
    calls: list[str] = field(default_factory=list)
    reduce_only_orders: list[tuple[str, str, float]] = field(default_factory=list)
    name: str = "fake"

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        queue = self.fail.get(method)
        if queue:
            raise queue.pop(0)

    async def fetch_positions(self) -> list[Position]:
        self._enter("fetch_positions")
        return list(self.positions)

    async def fetch_open_orders(self) -> list[Order]:
        self._enter("fetch_open_orders")
        return list(self.orders)

    async def cancel_all_orders(self) -> int:
        self._enter("cancel_all_orders")
        n, self.orders = len(self.orders), []
        return n

    async def close_position(self, position: Position) -> float:
        self._enter("close_position")
        current = next((p for p in self.positions if p.symbol == position.symbol), None)
        if current is None or current.side != position.side:
            raise AssertionError(f"reduce-only order would increase exposure on {position.symbol}")
        amount = min(position.amount, current.amount)
        self.reduce_only_orders.append((position.symbol, position.closing_side, amount))
        if self.refuse_close:
            return 0.0
        self.positions = [p for p in self.positions if p.symbol != position.symbol]
        return amount

    async def close_all_positions(self) -> int:
        self._enter("close_all_positions")
        n, self.positions = len(self.positions), []
        return n

    async def get_account_balance(self) -> float:
        self._enter("get_account_balance")
        return 100_000.0


@dataclass
class RecordingEventBus:
    """The seed's event bus: keeps every published event."""

    events: list[Any] = field(default_factory=list)

    async def publish(self, event: Any) -> None:
        self.events.append(event)

    def of_type(self, type_: str) -> list[Any]:
        return [e for e in self.events if getattr(e, "type", None) == type_]
