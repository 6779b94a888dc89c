"""The book poller: reads positions and open orders from the venue for the venue panel.

It also tells the runtime when the venue last answered (the system-health evaluator reads that).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from ess_tui.engine.flatten import describe_error
from ess_tui.runtime.panel import VenueSnapshot

log = logging.getLogger(__name__)


class BookPoller:
    """Keeps :attr:`book` (a :class:`VenueSnapshot`) fresh: one read at a time, never overlapping."""

    def __init__(self, venue: Any, *, name: str, controller: Any, metrics: Any,
                 clock: Callable[[], datetime], interval: float) -> None:
        self.venue = venue
        self.controller = controller
        self.metrics = metrics
        self.clock = clock
        self.interval = interval
        self.book = VenueSnapshot(venue=name)
        self.last_ok: datetime | None = None
        self.name = name

    async def refresh(self) -> VenueSnapshot:
        """Read positions and open orders once (the previous ones are kept on an error)."""
        error = None
        positions, orders = self.book.positions, self.book.orders
        try:
            got_p, got_o = await asyncio.gather(
                self.venue.fetch_positions(), self.venue.fetch_open_orders()
            )
            positions, orders = tuple(got_p), tuple(got_o)
            self.last_ok = self.clock()
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            error = describe_error(exc)
        status = getattr(self.venue, "status", None)
        dead_man = status() if callable(status) else {}
        self.book = VenueSnapshot(
            venue=self.name, positions=positions, orders=orders,
            equity=self.metrics.equity, taken_at=self.clock(), error=error,
            report=self.controller.last_report, flattening=self.controller.flattening,
            dead_man=dict(dead_man or {}),
        )
        return self.book

    async def run(self, after: Callable[[VenueSnapshot], Awaitable[None]] | None = None) -> None:
        """Poll every :attr:`interval` seconds until cancelled; ``after`` sees each new book."""
        while True:
            try:
                book = await self.refresh()
                if after is not None:
                    await after(book)
            except Exception as exc:  # noqa: BLE001 - the panel goes stale; the ESS goes on
                log.warning("venue panel refresh failed: %s", describe_error(exc))
            await asyncio.sleep(self.interval)
