"""The ccxt world for :meth:`ess_tui.runtime.assembly.Runtime.build`: venue, feed monitor, account metrics and
the background tasks, all from ``settings.venue`` (kind = "ccxt"). Importing this module imports
ccxt lazily only through the venue modules' functions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ess_tui.market.feed import FeedMonitor
from ess_tui.market.metrics import AccountMetrics
from ess_tui.venues.ccxt.account import CcxtAccount
from ess_tui.venues.ccxt.config import CcxtVenueConfig
from ess_tui.venues.ccxt.feed import CcxtTickerFeed
from ess_tui.venues.ccxt.venue import CcxtVenue

__all__ = ["build_ccxt_world"]


async def build_ccxt_world(
    settings: Any, *, store: Any, clock: Callable[[], datetime]
) -> tuple[CcxtVenue, FeedMonitor, AccountMetrics, list[Callable[[], Any]]]:
    """(venue, data-feed monitor, metrics repository, world tasks) for a ccxt venue.

    Raises :class:`~ess_tui.venues.ccxt.config.CcxtConfigError` (a ConfigError: one line, exit 2)
    for a bad ``[venue]`` table, unknown exchange id, missing key variable or unsupported
    sandbox/demo mode. Symbols are checked by ``venue.start()``.
    """
    config = CcxtVenueConfig.from_table(settings.venue.model_dump())
    venue = CcxtVenue(config, clock=clock)
    monitor = FeedMonitor(symbols=list(config.symbols), clock=clock)
    ticker_feed = CcxtTickerFeed.for_config(config, monitor.on_tick, clock=clock)
    account = CcxtAccount(venue, clock=clock)
    metrics = AccountMetrics(account.equity, account, store, clock=clock)

    async def run_feed() -> None:
        try:
            await ticker_feed.run()
        finally:
            await ticker_feed.exchange.close()  # its own keyless instance

    return venue, monitor, metrics, [run_feed]
