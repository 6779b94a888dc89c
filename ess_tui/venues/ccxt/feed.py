"""Market data from a ccxt exchange, as :class:`~ess_tui.market.ticks.Tick` s for the feed monitor.

``CcxtTickerFeed`` streams tickers with ccxt.pro's ``watch_tickers`` where the exchange has it,
else polls ``fetch_tickers`` (or ``fetch_ticker`` per symbol) every ``poll_interval_sec``, and hands
every update to ``on_tick`` — normally :meth:`ess_tui.market.feed.FeedMonitor.on_tick`, which
validates it (NaN, non-positive, crossed, future or backwards timestamps, absurd jumps).

The feed does not clean data up: a venue that sends garbage is *meant* to be caught. It only
assembles a whole quote where the venue splits it: Binance futures tickers carry no bid/ask, so
bid/ask come from its book-ticker stream (``watch_bids_asks`` / ``fetch_bids_asks``) and the last
price from the ticker; the tick's timestamp is the newer of the two parts. A timestamp the venue
does not send is the time the update was received.

Stream errors are retried with backoff; after three websocket failures in a row the feed falls
back to polling. The feed uses its own keyless exchange instance (``for_config``), so a flatten
never waits behind market-data requests in the venue's rate limiter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ess_tui.engine.state import utcnow
from ess_tui.market.ticks import Tick
from ess_tui.venues.ccxt.config import CcxtVenueConfig
from ess_tui.venues.ccxt.errors import map_ccxt_error, redact

log = logging.getLogger(__name__)

__all__ = ["CcxtTickerFeed", "tick_from_ticker"]

#: Consecutive websocket failures after which the feed polls instead.
_WS_FAILURES_BEFORE_POLLING = 3


def _ms_to_datetime(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return datetime.fromtimestamp(value / 1000.0, tz=timezone.utc)


def tick_from_ticker(ticker: dict[str, Any], received_at: datetime) -> Tick:
    """A ccxt ticker as a Tick, values untouched (None stays None for the monitor to judge)."""
    last = ticker.get("last")
    if last is None:
        last = ticker.get("close")
    return Tick(
        symbol=ticker.get("symbol"),  # type: ignore[arg-type]
        bid=ticker.get("bid"),  # type: ignore[arg-type]
        ask=ticker.get("ask"),  # type: ignore[arg-type]
        last=last,  # type: ignore[arg-type]
        timestamp=_ms_to_datetime(ticker.get("timestamp")) or received_at,
    )


class _Quote:
    """One symbol's quote assembled from a ticker part and a bid/ask part."""

    __slots__ = ("last", "last_at", "bid", "ask", "book_at")

    def __init__(self) -> None:
        self.last: Any = None
        self.last_at: datetime | None = None
        self.bid: Any = None
        self.ask: Any = None
        self.book_at: datetime | None = None


class CcxtTickerFeed:
    """Tickers for ``symbols`` from ``exchange`` to ``on_tick``. ``start()`` / ``await stop()``."""

    def __init__(
        self,
        exchange: Any,
        symbols: list[str],
        on_tick: Callable[[Tick], Any],
        *,
        poll_interval_sec: float = 2.0,
        websocket: bool = True,
        clock: Callable[[], datetime] = utcnow,
        max_backoff_sec: float = 30.0,
        owns_exchange: bool = False,
    ) -> None:
        self.exchange = exchange
        self.symbols = list(symbols)
        self.on_tick = on_tick
        self.poll_interval_sec = poll_interval_sec
        self.max_backoff_sec = max_backoff_sec
        self._clock = clock
        self._owns_exchange = owns_exchange
        has = getattr(exchange, "has", {}) or {}
        self.mode = "websocket" if websocket and has.get("watchTickers") is True and hasattr(
            exchange, "watch_tickers") else "polling"
        self._quotes: dict[str, _Quote] = {s: _Quote() for s in self.symbols}
        self._split_book = False  # tickers without bid/ask: take them from the book ticker
        self._task: asyncio.Task[None] | None = None
        self._book_task: asyncio.Task[None] | None = None
        self.ticks = 0
        self.last_tick_at: datetime | None = None
        self.last_error: str | None = None
        self._failures = 0

    @classmethod
    def for_config(
        cls, config: CcxtVenueConfig, on_tick: Callable[[Tick], Any], **kwargs: Any
    ) -> CcxtTickerFeed:
        """A feed on its own keyless instance of the configured exchange (same environment)."""
        from ess_tui.venues.ccxt.venue import build_exchange, wire_log

        exchange = build_exchange(config, {}, websocket=config.websocket)
        exchange.logger = wire_log
        return cls(
            exchange, list(config.symbols), on_tick,
            poll_interval_sec=config.poll_interval_sec, websocket=config.websocket,
            owns_exchange=True, **kwargs,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="ess-ccxt-ticker-feed")
        return self._task

    async def stop(self) -> None:
        for task in (self._book_task, self._task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._task = self._book_task = None
        if self._owns_exchange:
            await self.exchange.close()

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "symbols": list(self.symbols),
            "ticks": self.ticks,
            "last_tick_at": self.last_tick_at,
            "last_error": self.last_error,
            "split_book": self._split_book,
        }

    async def run(self) -> None:
        """Until cancelled: stream (or poll), hand ticks over, back off on errors."""
        while True:
            try:
                if self.mode == "websocket":
                    await self._watch_once()
                else:
                    await self._poll_once()
                    await asyncio.sleep(self.poll_interval_sec)
                self._failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a feed outage must not end the feed
                await self._failed(exc)

    async def _failed(self, exc: Exception) -> None:
        self._failures += 1
        mapped = map_ccxt_error(exc, venue=getattr(self.exchange, "id", "?"), call="tickers")
        self.last_error = str(mapped) if mapped is not None else redact(f"{type(exc).__name__}: {exc}")
        if self._failures == 1:
            log.warning("market data feed error (%s): %s", self.mode, self.last_error)
        if self.mode == "websocket" and self._failures >= _WS_FAILURES_BEFORE_POLLING:
            log.warning("websocket feed failed %d times; polling every %gs instead",
                        self._failures, self.poll_interval_sec)
            self.mode = "polling"
            self._failures = 0
            return
        await asyncio.sleep(min(self.max_backoff_sec, 0.5 * 2 ** (self._failures - 1)))

    # -- sources -------------------------------------------------------------------------------

    async def _watch_once(self) -> None:
        tickers = await self.exchange.watch_tickers(self.symbols)
        self._take_tickers(tickers)

    async def _watch_books(self) -> None:
        while self.mode == "websocket":
            try:
                books = await self.exchange.watch_bids_asks(self.symbols)
                self._take_books(books)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                await self._failed(exc)

    async def _poll_once(self) -> None:
        has = self.exchange.has
        if has.get("fetchTickers"):
            tickers = await self.exchange.fetch_tickers(self.symbols)
        else:
            answers = await asyncio.gather(*(self.exchange.fetch_ticker(s) for s in self.symbols))
            tickers = {t.get("symbol"): t for t in answers}
        self._take_tickers(tickers)  # may find the bid/ask missing and switch to a split book
        if self._split_book:
            self._take_books(await self.exchange.fetch_bids_asks(self.symbols))
            for symbol in {t.get("symbol") for t in (tickers or {}).values()} & set(self._quotes):
                self._emit_quote(symbol, self._quotes[symbol])

    # -- assembling ticks ----------------------------------------------------------------------

    def _take_tickers(self, tickers: dict[str, Any] | None) -> None:
        now = self._clock()
        for ticker in (tickers or {}).values():
            symbol = ticker.get("symbol")
            if symbol not in self._quotes:
                continue
            if ticker.get("bid") is None and ticker.get("ask") is None and self._can_split():
                self._start_split_book()
            if not self._split_book:
                self._emit(tick_from_ticker(ticker, now))
                continue
            quote = self._quotes[symbol]
            tick = tick_from_ticker(ticker, now)
            quote.last, quote.last_at = tick.last, tick.timestamp
            if self.mode == "websocket":
                self._emit_quote(symbol, quote)

    def _take_books(self, books: dict[str, Any] | None) -> None:
        now = self._clock()
        for book in (books or {}).values():
            symbol = book.get("symbol")
            quote = self._quotes.get(symbol)
            if quote is None:
                continue
            quote.bid, quote.ask = book.get("bid"), book.get("ask")
            quote.book_at = _ms_to_datetime(book.get("timestamp")) or now
            if self.mode == "websocket":
                self._emit_quote(symbol, quote)

    def _can_split(self) -> bool:
        has = self.exchange.has
        key = "watchBidsAsks" if self.mode == "websocket" else "fetchBidsAsks"
        return bool(has.get(key))

    def _start_split_book(self) -> None:
        if self._split_book:
            return
        self._split_book = True
        log.info("%s tickers carry no bid/ask; taking them from the book ticker",
                 getattr(self.exchange, "id", "venue"))
        if self.mode == "websocket" and self._book_task is None:
            self._book_task = asyncio.create_task(self._watch_books(), name="ess-ccxt-book-feed")

    def _emit_quote(self, symbol: str, quote: _Quote) -> None:
        if quote.last_at is None or quote.book_at is None:
            return  # wait for both halves before the first tick
        self._emit(Tick(symbol, quote.bid, quote.ask, quote.last, max(quote.last_at, quote.book_at)))

    def _emit(self, tick: Tick) -> None:
        self.ticks += 1
        self.last_tick_at = self._clock()
        try:
            self.on_tick(tick)
        except Exception:  # noqa: BLE001 - the consumer's bug must not stop the feed
            log.exception("on_tick failed for %s", tick.symbol)
