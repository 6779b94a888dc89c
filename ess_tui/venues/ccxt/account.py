"""Equity and the execution record of a ccxt venue, for the drawdown and execution evaluators.

``CcxtAccount`` is what :class:`ess_tui.market.metrics.AccountMetrics` measures from:

* ``equity()`` — its *equity source*: ``fetch_balance`` in the settlement currency, unrealised PnL
  included (:meth:`ess_tui.venues.ccxt.venue.CcxtVenue.get_account_balance`). AccountMetrics
  keeps the high-water mark and the day's opening equity, durably.
* ``stop_loss_hits(since)`` / ``order_failures(since)`` — its *execution record*, read from the
  order history of the listed symbols (``fetch_orders`` where the venue has it, else closed and
  cancelled orders) at most every ``poll_interval_sec``, on demand: there is no background task to
  die silently, and a read that fails raises, so the gauge shows ERROR instead of an all-clear.

A **stop-loss hit** is a filled order that a stop triggered: stop / stop-market / trailing-stop
types (Binance's ``origType``), a stop-loss price, Bybit's ``stopOrderType``, or an OKX order
placed by a TP/SL or trailing algo that realised a loss. Take-profits are not stop-losses.
An **order failure** is an order the venue rejected (status ``rejected``), or an order the ESS
itself sent that the venue refused.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from ess_tui.engine.state import utcnow
from ess_tui.engine.venue import VenueError
from ess_tui.venues.ccxt.venue import CcxtVenue

__all__ = ["CcxtAccount", "is_stop_loss_fill"]

_STOP_TYPES = {"stop", "stop_market", "stop_loss", "stop_loss_limit", "trailing_stop_market",
               "trailing_stop"}
_BYBIT_STOPS = {"StopLoss", "PartialStopLoss", "Stop", "TrailingStop"}
_OKX_TPSL_SOURCES = {"7", "25"}  # placed by a TP/SL algo, by a trailing stop


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def is_stop_loss_fill(order: dict[str, Any]) -> bool:
    """Whether a ccxt order is a stop-loss that triggered and filled."""
    if (_num(order.get("filled")) or 0.0) <= 0:
        return False
    info = order.get("info") or {}
    # the venue's own word first: it knows a take-profit from a stop-loss
    if info.get("stopOrderType"):  # bybit
        return info["stopOrderType"] in _BYBIT_STOPS
    if info.get("origType"):  # binance
        return str(info["origType"]).lower() in _STOP_TYPES
    if info.get("source") is not None and "ordId" in info:  # okx
        pnl = _num(info.get("pnl"))
        return str(info["source"]) in _OKX_TPSL_SOURCES and pnl is not None and pnl < 0
    if order.get("takeProfitPrice") and not order.get("stopLossPrice"):
        return False
    return str(order.get("type") or "").lower() in _STOP_TYPES or bool(order.get("stopLossPrice"))


class CcxtAccount:
    """Equity source and execution record of a :class:`CcxtVenue`."""

    def __init__(
        self,
        venue: CcxtVenue,
        *,
        poll_interval_sec: float | None = None,
        history: timedelta = timedelta(hours=24),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.venue = venue
        self.poll_interval_sec = (
            venue.config.account_poll_interval_sec if poll_interval_sec is None else poll_interval_sec
        )
        self.history = history
        self._clock = clock
        self._lock = asyncio.Lock()
        self._read_at: datetime | None = None
        self._stop_hits: dict[str, datetime] = {}
        self._rejected: dict[str, datetime] = {}

    async def equity(self) -> float:
        """Account equity in the settlement currency (one ``fetch_balance``)."""
        return await self.venue.get_account_balance()

    async def refresh(self, *, force: bool = False) -> None:
        """Read the order history if the last read is older than the poll interval."""
        async with self._lock:
            now = self._clock()
            due = self._read_at is None or (now - self._read_at).total_seconds() >= self.poll_interval_sec
            if due or force:
                await self._read_orders(now)
                self._read_at = now

    async def _read_orders(self, now: datetime) -> None:
        has = self.venue.exchange.has
        method = next((m for m, key in (
            ("fetch_orders", "fetchOrders"),
            ("fetch_canceled_and_closed_orders", "fetchCanceledAndClosedOrders"),
            ("fetch_closed_orders", "fetchClosedOrders"),
        ) if has.get(key) is True), None)
        if method is None:
            return
        overlap = timedelta(seconds=max(60.0, 3 * self.poll_interval_sec))
        since = (self._read_at or now - self.history) - overlap
        since_ms = int(since.timestamp() * 1000)
        results = await asyncio.gather(*(
            self.venue.call(method, symbol, since_ms) for symbol in self.venue.config.symbols
        ), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise next((e for e in errors if isinstance(e, VenueError)), errors[0])
        for order in (o for batch in results for o in (batch or [])):
            order_id = f"{order.get('symbol')}#{order.get('id')}"
            at = self._order_time(order, now)
            if is_stop_loss_fill(order):
                self._stop_hits.setdefault(order_id, at)
            elif order.get("status") == "rejected":
                self._rejected.setdefault(order_id, at)
        horizon = now - self.history
        for book in (self._stop_hits, self._rejected):
            for key in [k for k, t in book.items() if t < horizon]:
                del book[key]

    @staticmethod
    def _order_time(order: dict[str, Any], now: datetime) -> datetime:
        stamp = (order.get("lastTradeTimestamp") or order.get("lastUpdateTimestamp")
                 or order.get("timestamp"))
        if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
            return datetime.fromtimestamp(stamp / 1000.0, tz=timezone.utc)
        return now

    async def stop_loss_hits(self, since: datetime) -> int:
        """Stop-loss fills on the listed symbols at or after ``since`` (aware UTC)."""
        await self.refresh()
        return sum(1 for at in self._stop_hits.values() if at >= since)

    async def order_failures(self, since: datetime) -> int:
        """Rejected orders at or after ``since``: the venue's record plus the ESS's own."""
        await self.refresh()
        own = len(self.venue.order_failures(since))
        return own + sum(1 for at in self._rejected.values() if at >= since)
