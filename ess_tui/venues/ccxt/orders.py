"""Open orders on a ccxt venue: listed every page deep, in every book, and cancelled for real.

* Listing follows the venue's pages (OKX: 100 a page, next page ``after`` the last id; Bybit: 50
  a page, next page by ``nextPageCursor``; Gate: 100 a page by ``offset``), so orders past page
  one are seen and counted.
* Cancelling uses the widest call the venue has: Bybit derivatives cancel account-wide per settle
  coin (orders the listing missed go too), Binance per symbol in each book, OKX (no cancel-all)
  by id in batches. A batch the venue refuses because one id is stale is cancelled id by id; an
  order already gone is not an error.
* The count is what the venue said it cancelled where it says so (the id lists of Bybit and OKX),
  else what was listed open on the symbols cancelled.

Works on a :class:`~ess_tui.venues.ccxt.venue.CcxtVenue` (its ``_call``, exchange and profile).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ess_tui.engine.venue import Order, VenueAuthError, VenueError, VenueRejected
from ess_tui.venues.ccxt.pacing import GONE
from ess_tui.venues.ccxt.profiles import Book

if TYPE_CHECKING:
    from ess_tui.venues.ccxt.venue import CcxtVenue

log = logging.getLogger(__name__)

__all__ = ["OrderDesk", "to_order"]

#: Most pages read from one book in one listing (OKX 100 × 50 = 5,000 orders).
MAX_PAGES = 50

Listed = tuple[Book, dict[str, Any]]


def to_order(book: Book, raw: dict[str, Any]) -> Order:
    stop = raw.get("stopLossPrice") or raw.get("triggerPrice") or raw.get("stopPrice")
    take = raw.get("takeProfitPrice")
    if take and not raw.get("stopLossPrice"):
        kind = "take_profit"
    elif book.trigger or stop:
        kind = "stop"
    else:
        kind = str(raw.get("type") or "limit")
    remaining = raw.get("remaining")
    try:
        amount = abs(float(remaining if remaining is not None else raw.get("amount") or 0))
    except (TypeError, ValueError):
        amount = 0.0
    price = raw.get("price") or stop or take
    try:
        price_value = float(price) if price else None
    except (TypeError, ValueError):
        price_value = None
    return Order(
        id=str(raw.get("id")),
        symbol=str(raw.get("symbol")),
        side=raw.get("side") or "buy",
        amount=amount,
        price=price_value,
        kind=kind,
        reduce_only=bool(raw.get("reduceOnly")),
    )


class OrderDesk:
    """Lists and cancels a venue's open orders (see the module text)."""

    def __init__(self, venue: CcxtVenue) -> None:
        self.venue = venue
        #: Symbols with open orders at the last listing (the dead-man panel names the uncovered).
        self.last_symbols: set[str] = set()

    # -- listing -------------------------------------------------------------------------------

    async def _pages(self, symbol: str | None, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every page of one open-orders query."""
        paging = self.venue._profile.paging
        call = self.venue._call
        if paging is None:
            return list(await call("fetch_open_orders", symbol, None, None, params) or [])
        limit = 50 if paging == "bybit" else 100
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            query = dict(params)
            if cursor is not None:
                query[{"okx": "after", "offset": "offset"}.get(paging, "cursor")] = cursor
            page = list(await call("fetch_open_orders", symbol, None, limit, query) or [])
            out.extend(page)
            if not page:
                break
            if paging == "okx":
                cursor = str(page[-1].get("id")) if len(page) >= limit else None
            elif paging == "offset":
                cursor = str(len(out)) if len(page) >= limit else None
            else:
                cursor = next((str(c) for o in page
                               if (c := (o.get("info") or {}).get("nextPageCursor"))), None)
            if not cursor:
                break
        else:
            log.warning("%s: more than %d pages of open orders; cancel-all still runs",
                        self.venue.exchange_id, MAX_PAGES)
        return out

    async def listed(self) -> list[Listed]:
        profile = self.venue._profile
        queries = [
            (book, symbol, {**params, **book.fetch_params})
            for symbol, params in profile.order_queries
            for book in profile.books
        ]
        batches = await self.venue._fan_out([self._pages(symbol, params) for _, symbol, params in queries])
        seen: dict[str, Listed] = {}
        for (book, _, _), batch in zip(queries, batches):
            for raw in batch:
                if not self.venue._in_scope(raw.get("symbol")):
                    continue
                order_id = str(raw.get("id"))
                if order_id not in seen or book.trigger:  # a trigger book knows it better
                    seen[order_id] = (book, raw)
        self.last_symbols = {raw["symbol"] for _, raw in seen.values()}
        return list(seen.values())

    async def fetch_open_orders(self) -> list[Order]:
        return [to_order(book, raw) for book, raw in await self.listed()]

    # -- cancelling ----------------------------------------------------------------------------

    @staticmethod
    def _done(answer: Any, sent: list[str]) -> set[str]:
        """Ids the venue's answer says it cancelled; ``sent`` when it does not say per id."""
        if not isinstance(answer, list):
            return set(sent)
        done: set[str] = set()
        per_id = False
        for item in answer:
            item = item or {}
            info = item.get("info") or {}
            if item.get("id") or "sCode" in info:
                per_id = True
                if str(info.get("sCode", "0")) == "0" and item.get("id"):
                    done.add(str(item["id"]))
        return done if per_id else set(sent)

    async def _cancel_all(self, symbol: str | None, params: dict[str, Any],
                          listed: list[str]) -> set[str]:
        """One cancel-all; the listed orders it covered and whatever else it says it cancelled."""
        answer = await self.venue._call("cancel_all_orders", symbol, params)
        return set(listed) | (self._done(answer, []) if isinstance(answer, list) else set())

    async def _cancel_wide(self, open_orders: list[Listed]) -> set[str]:
        """cancel-all calls: account-wide where the profile has them, else per symbol and book."""
        venue, profile = self.venue, self.venue._profile
        by_key: dict[tuple[str, str], list[str]] = {}
        for book, raw in open_orders:
            by_key.setdefault((book.label, raw["symbol"]), []).append(str(raw["id"]))
        calls: list[Any] = []
        covered: set[str] = set()
        if profile.cancel_wide and venue.config.scope == "account":
            markets = venue.exchange.markets or {}
            coins = {params.get("settleCoin") for _, params in profile.cancel_wide}
            covered = {s for s, m in markets.items() if m.get("type") == venue.config.market_type
                       and (None in coins or (m.get("linear") and m.get("settle") in coins))}
            for book in profile.books:
                for _, params in profile.cancel_wide:
                    listed = [str(raw["id"]) for b, raw in open_orders
                              if b.label == book.label and raw["symbol"] in covered]
                    calls.append(self._cancel_all(None, {**params, **book.cancel_params}, listed))
        symbols = list(dict.fromkeys(
            [*venue.config.symbols, *(raw["symbol"] for _, raw in open_orders)]
        ))
        for symbol in symbols:
            if symbol in covered:
                continue
            for book in profile.books:
                calls.append(self._cancel_all(symbol, dict(book.cancel_params),
                                              by_key.get((book.label, symbol), [])))
        cancelled: set[str] = set()
        for ids in await venue._fan_out(calls):
            cancelled |= ids
        return cancelled

    async def _cancel_one(self, order_id: str, symbol: str, book: Book) -> int:
        """1 if cancelled; 0 if already gone (filled or cancelled: what we wanted)."""
        answer = await self.venue._call(
            "cancel_order", order_id, symbol, dict(book.cancel_params), gone_ok=True
        )
        return 0 if answer is GONE else 1

    async def _cancel_batch(self, ids: list[str], symbol: str, book: Book) -> int:
        """One cancel_orders call; refused as a whole (a stale id), or partly: id by id."""
        try:
            answer = await self.venue._call("cancel_orders", ids, symbol, dict(book.cancel_params))
        except VenueAuthError:
            raise
        except VenueRejected:
            answer = None
        done = self._done(answer, ids) & set(ids) if answer is not None else set()
        rest = [i for i in ids if i not in done]
        if rest:
            counts = await asyncio.gather(*(self._cancel_one(i, symbol, book) for i in rest),
                                          return_exceptions=True)
            errors = [c for c in counts if isinstance(c, BaseException)]
            if errors:
                raise errors[0]
            return len(done) + sum(counts)  # type: ignore[arg-type]
        return len(done)

    async def _cancel_by_id(self, orders: list[Listed]) -> int:
        groups: dict[tuple[str, str], tuple[Book, list[str]]] = {}
        for book, raw in orders:
            entry = groups.setdefault((book.label, raw["symbol"]), (book, []))
            entry[1].append(str(raw["id"]))
        profile = self.venue._profile
        batch_ok = bool(self.venue.exchange.has.get("cancelOrders"))
        calls: list[Any] = []
        for (_, symbol), (book, ids) in groups.items():
            size = profile.trigger_cancel_batch if book.trigger else profile.cancel_batch
            if batch_ok:
                calls.extend(self._cancel_batch(ids[i:i + size], symbol, book)
                             for i in range(0, len(ids), size))
            else:
                calls.extend(self._cancel_one(i, symbol, book) for i in ids)
        results = await asyncio.gather(*calls, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise next((e for e in errors if isinstance(e, VenueAuthError)), errors[0])
        return sum(results)  # type: ignore[arg-type]

    async def cancel_all_orders(self) -> int:
        venue, profile = self.venue, self.venue._profile
        if profile.wide_reports_ids and profile.cancel_wide and venue.config.scope == "account" \
                and venue.exchange.has.get("cancelAllOrders") is True:
            # Account-wide cancels answer with the ids they cancelled: no listing needed first
            # (one round trip less in an emergency), and the count is the venue's own.
            count = len(await self._cancel_wide([]))
            if count:
                log.info("cancelled %d open order(s) on %s", count, venue.name)
            return count
        listing_error: VenueError | None = None
        try:
            open_orders = await self.listed()
        except VenueAuthError:
            raise
        except VenueError as exc:
            listing_error, open_orders = exc, []
        if self.venue.exchange.has.get("cancelAllOrders") is True:
            count = len(await self._cancel_wide(open_orders))
        else:
            count = await self._cancel_by_id(open_orders) if open_orders else 0
        if listing_error is not None:
            raise listing_error
        if count:
            log.info("cancelled %d open order(s) on %s", count, self.venue.name)
        return count
