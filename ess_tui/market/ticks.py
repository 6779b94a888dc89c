"""The market tick: one top-of-book quote for one symbol, as a feed hands it over.

A tiny shared module so that the paper exchange (``ess_tui.venues.paper.exchange``), which produces ticks,
and the feed monitor (``ess_tui.market.feed``), which validates them, agree on one type without
importing each other. Plain data, no I/O, no validation: a Tick may hold garbage (NaN, a crossed
book, a timestamp in the future) precisely so that the feed monitor can catch it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Tick:
    """Best bid, best ask and last trade price for ``symbol`` at ``timestamp`` (UTC)."""

    symbol: str
    bid: float
    ask: float
    last: float
    timestamp: datetime

    @property
    def mid(self) -> float:
        """Midpoint of bid and ask (NaN in, NaN out)."""
        return (self.bid + self.ask) / 2.0
