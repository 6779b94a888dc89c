"""A real exchange through ccxt (async), behind the engine's :class:`~ess_tui.engine.venue.Venue`.

Each method makes one pass and raises the mapped :class:`~ess_tui.engine.venue.VenueError`; the
engine's flatten loop (``ess_tui.engine.flatten``) does the retrying. What each pass covers:

* ``cancel_all_orders`` — lists the open orders (regular *and* stop/trigger books), then uses
  ccxt's ``cancel_all_orders`` per symbol where the exchange has it (binance needs a symbol and
  keeps trigger orders apart), else ``cancel_orders`` / ``cancel_order`` by id (okx, coinbase).
* ``fetch_positions`` / ``close_position`` — every open position of the configured market type
  (the whole account, or only the listed symbols with ``scope = "symbols"``), closed with a
  reduce-only market order on the opposite side, amounts at the market's precision. ``close_position``
  never sends more than the venue says is open. All calls share ccxt's rate limiter.
* a dead-man switch (:mod:`ess_tui.venues.ccxt.deadman`) armed by :meth:`CcxtVenue.start` and
  disarmed by :meth:`CcxtVenue.close`.

ccxt is imported when a ``CcxtVenue`` is built, never when this module is imported. Keys are read
from the environment variables the config names, handed to ccxt, and kept nowhere else; every
error text is scrubbed of them (:func:`ess_tui.venues.ccxt.errors.redact`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ess_tui.engine.state import clean_text, utcnow
from ess_tui.engine.venue import (
    Order,
    VenueAuthError,
    VenueError,
    VenueRateLimited,
    VenueRejected,
    VenueUnavailable,
)
from ess_tui.venues.ccxt.config import (
    CcxtVenueConfig,
    check_markets,
    check_static,
    exchange_family,
    read_credentials,
)
from ess_tui.venues.ccxt.closing import CloseBatcher
from ess_tui.venues.ccxt.deadman import DeadManSwitch
from ess_tui.venues.ccxt.errors import map_ccxt_error, redact
from ess_tui.venues.ccxt.orders import OrderDesk
from ess_tui.venues.ccxt.positions import PositionsMixin, worst
from ess_tui.venues.ccxt.pacing import (
    GONE,
    SLEEP_THROUGH_SEC,
    Backoff,
    is_clock_error,
    is_gone,
    retry_after_seconds,
)
from ess_tui.venues.ccxt.profiles import Profile, exchange_options, profile_for

log = logging.getLogger(__name__)

#: ccxt logs every request's headers (the API key among them) at DEBUG on its module logger. Our
#: exchanges log to this one instead, pinned at WARNING whatever level the root logger runs at.
wire_log = logging.getLogger("ess_tui.venues.ccxt_wire")
wire_log.setLevel(logging.WARNING)

__all__ = ["CcxtVenue", "build_exchange"]


def build_exchange(
    config: CcxtVenueConfig, credentials: Mapping[str, str], *, websocket: bool = False
) -> Any:
    """A ccxt async exchange for ``config``: rate-limited, lean options, sandbox/demo applied.

    ``websocket=True`` builds the ccxt.pro class (REST and ``watch_*``) where ccxt.pro has it.
    """
    import ccxt.async_support as ccxt_async

    cls = getattr(ccxt_async, config.exchange)
    if websocket:
        import ccxt.pro as ccxt_pro

        cls = getattr(ccxt_pro, config.exchange, cls)
    defaults = cls().options  # the class's own options, to merge into
    exchange = cls({
        **credentials,
        "enableRateLimit": True,
        "timeout": int(config.request_timeout_sec * 1000),
        "options": exchange_options(config, defaults),
    })
    exchange.has["fetchCurrencies"] = False
    exchange.logger = wire_log
    family = exchange_family(config.exchange)
    if config.sandbox or (config.demo_trading and family == "okx"):
        exchange.set_sandbox_mode(True)
    elif config.demo_trading:
        exchange.enable_demo_trading(True)
    return exchange


class CcxtVenue(PositionsMixin):
    """The ESS's venue on a real exchange. Build it, ``await start()``, ``await close()``."""

    def __init__(
        self,
        config: CcxtVenueConfig,
        *,
        environ: Mapping[str, str] | None = None,
        exchange: Any | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        env = os.environ if environ is None else environ
        check_static(config, env)
        self.config = config
        self.exchange_id = config.exchange
        self.name = config.exchange if config.mode == "live" else f"{config.exchange} ({config.mode})"
        credentials = read_credentials(config, env)
        self._secrets = tuple(v for v in credentials.values() if v)
        self.exchange = exchange if exchange is not None else build_exchange(config, credentials)
        self.exchange.logger = wire_log
        del credentials
        self._clock = clock
        self._ready_lock = asyncio.Lock()
        self._markets_ready = False
        self._profile: Profile = profile_for(config, dict(self.exchange.has))
        self._positions: dict[tuple[str, str], dict[str, Any]] = {}
        self._order_failures: list[tuple[datetime, str]] = []
        self.last_ok_at: datetime | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.auth_failed = False
        self.settle_currency: str | None = config.settle_currency
        self.orders = OrderDesk(self)
        self.backoff = Backoff()
        self.clock_offset_ms = 0
        self.clock_note: str | None = None
        self._emergency = 0  # cancel / close calls in flight (the dead-man re-arm steps aside)
        self._closer = CloseBatcher(
            size=self._profile.create_batch if self.exchange.has.get("createOrders") else 1,
            send_batch=self._send_closes, send_one=self._send_close,
            # a batch refused as a whole (not a network failure): each order alone, so one bad
            # order, or a batch shape the venue will not take, never holds the others back
            one_by_one_after=lambda exc: isinstance(exc, VenueRejected),
        )
        self.dead_man = DeadManSwitch(
            mechanism=self._profile.dead_man,
            timeout_sec=config.dead_man_timeout_sec,
            call=self._call,
            market_ids=self._listed_market_ids,
            exchange_id=config.exchange,
            note=self._profile.dead_man_note,
            clock=clock,
            busy=lambda: self._emergency > 0,
            open_order_symbols=lambda: [
                s for s in self.orders.last_symbols if s not in self.config.symbols
            ],
        )

    def __repr__(self) -> str:
        return f"CcxtVenue({self.name!r}, {self.config.market_type}, {len(self.config.symbols)} symbols)"

    # -- plumbing ------------------------------------------------------------------------------

    async def _call(self, method: str, *args: Any, gone_ok: bool = False) -> Any:
        """One ccxt call; ccxt errors come out as VenueErrors with a scrubbed message.

        Held while the venue's Retry-After runs; a Binance -1021 reloads the clock offset and
        resends once (:mod:`ess_tui.venues.ccxt.pacing`).
        """
        left = self.backoff.remaining()
        if left > SLEEP_THROUGH_SEC:
            exc = VenueRateLimited(
                f"{self.exchange_id} {method}: not sent: backing off {left:.0f}s more as the venue "
                f"asked ({self.backoff.reason})", venue=self.exchange_id, call=method,
            )
            self._note_error(exc)
            raise exc
        if left > 0:
            await asyncio.sleep(left)
        try:
            result = await getattr(self.exchange, method)(*args)
        except Exception as exc:  # noqa: BLE001 - mapped, or re-raised when not ccxt's
            if gone_ok and is_gone(exc):
                return GONE  # the order is already gone (filled or cancelled): what we wanted
            if not is_clock_error(exc) or method == "load_time_difference":
                self._raise_mapped(exc, method)
            await self._correct_clock(method)
            try:
                result = await getattr(self.exchange, method)(*args)
            except Exception as again:  # noqa: BLE001
                self._raise_mapped(again, method)
        self.last_ok_at = self._clock()
        if method != "load_markets":  # a private call went through: the key works (again)
            self.auth_failed = False
        return result

    async def _correct_clock(self, method: str) -> None:
        """-1021: our clock and the venue's disagree. Reload the offset, say so."""
        before = self.clock_offset_ms
        await self._call("load_time_difference")
        self.clock_offset_ms = int((self.exchange.options or {}).get("timeDifference") or 0)
        self.clock_note = (
            f"clock drift: {self.exchange_id} refused a timestamp (-1021) on {method}; clock "
            f"offset corrected from {before} ms to {self.clock_offset_ms} ms and the call resent"
        )
        log.warning("%s", self.clock_note)

    def _raise_mapped(self, exc: Exception, method: str) -> None:
        mapped = map_ccxt_error(exc, venue=self.exchange_id, call=method, secrets=self._secrets)
        if isinstance(mapped, VenueRateLimited):
            wait = retry_after_seconds(getattr(self.exchange, "last_response_headers", None))
            if wait is not None:
                self.backoff.hold(wait, f"Retry-After {wait:g}s")
                mapped = VenueRateLimited(
                    f"{mapped}; the venue asks to wait {wait:g}s (Retry-After): backing off, no "
                    "call before then", venue=self.exchange_id, call=method,
                )
            else:
                mapped = VenueRateLimited(
                    f"{mapped}; no Retry-After from the venue: the flatten's own back-off applies",
                    venue=self.exchange_id, call=method,
                )
        if mapped is None and isinstance(exc, VenueError):
            raise exc
        if mapped is None:
            # Not a ccxt error (a bug, an aiohttp oddity): still never show its text unscrubbed.
            mapped = VenueUnavailable(
                redact(f"{method} failed: {type(exc).__name__}: {exc}", self._secrets),
                venue=self.exchange_id, call=method,
            )
        self._note_error(mapped)
        raise mapped from None

    def _note_error(self, exc: VenueError) -> None:
        self.last_error = str(exc)
        self.last_error_at = self._clock()
        if isinstance(exc, VenueAuthError):
            if not self.auth_failed:
                log.critical("%s", exc)
            self.auth_failed = True
        else:  # the caller (flatten loop, evaluator) reports it; one line here is enough
            log.debug("%s", exc)

    async def _ready(self) -> None:
        """Markets loaded (once). Called by every public method."""
        if self._markets_ready:
            return
        async with self._ready_lock:
            if self._markets_ready:
                return
            await self._call("load_markets")
            if self._profile.family == "bybit":
                # account type (unified or not), cached by ccxt; asked once here rather than by
                # every concurrent call of the first flatten pass
                await self._call("is_unified_enabled")
            markets = self.exchange.markets or {}
            self.clock_offset_ms = int((self.exchange.options or {}).get("timeDifference") or 0)
            self._profile = profile_for(self.config, dict(self.exchange.has), markets)
            self.dead_man.mechanism = self._profile.dead_man
            self._closer.size = self._profile.create_batch if self.exchange.has.get("createOrders") else 1
            if self.settle_currency is None:
                first = markets.get(self.config.symbols[0]) or {}
                self.settle_currency = first.get("settle") or first.get("quote")
            self._markets_ready = True

    async def call(self, method: str, *args: Any) -> Any:
        """Any ccxt method, markets loaded and errors mapped (for the account and tools)."""
        await self._ready()
        return await self._call(method, *args)

    def _listed_market_ids(self) -> list[str]:
        markets = self.exchange.markets or {}
        return [markets[s]["id"] for s in self.config.symbols if s in markets]

    def _in_scope(self, symbol: str | None) -> bool:
        market = (self.exchange.markets or {}).get(symbol or "")
        if market is None or market.get("type") != self.config.market_type:
            return False
        return self.config.scope == "account" or symbol in self.config.symbols

    async def _fan_out(self, calls: list[Any]) -> list[Any]:
        """Run calls concurrently (ccxt's limiter spaces them); raise the worst error, if any."""
        results = await asyncio.gather(*calls, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise worst(errors)
        return results

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Load markets, check the symbols, check the key, arm the dead-man switch.

        Raises :class:`~ess_tui.venues.ccxt.config.CcxtConfigError` for a symbol the exchange
        does not list, :class:`VenueAuthError` for a rejected key, before anything trades.
        """
        await self._ready()
        check_markets(self.config, self.exchange.markets or {})
        try:
            await self.get_account_balance()
        except VenueAuthError:
            raise
        except VenueError as exc:
            log.warning("balance not read at start (will retry): %s", exc)
        if self.dead_man.supported:
            await self.dead_man.arm()
            self.dead_man.start()
        log.info(
            "ccxt venue %s ready: %s %s, dead-man switch %s", self.name, self.config.market_type,
            ", ".join(self.config.symbols),
            "armed" if self.dead_man.armed else f"off ({self.dead_man.note})",
        )

    async def close(self) -> None:
        """Disarm the dead-man switch (clean shutdown) and release the HTTP session."""
        try:
            if self._markets_ready:
                await self.dead_man.disarm()
            else:
                await self.dead_man.stop()
        finally:
            await self.exchange.close()

    @property
    def dead_man_supported(self) -> bool:
        return self.dead_man.supported

    @property
    def dead_man_armed(self) -> bool:
        return self.dead_man.armed

    def status(self) -> dict[str, Any]:
        """What the venue panel shows. No key material."""
        return {
            "venue": self.exchange_id,
            "name": self.name,
            "mode": self.config.mode,
            "market_type": self.config.market_type,
            "scope": self.config.scope,
            "symbols": list(self.config.symbols),
            "armed": self.dead_man.armed,
            "dead_man_supported": self.dead_man.supported,
            "dead_man": self.dead_man.status(),
            "last_ok_at": self.last_ok_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "auth_failed": self.auth_failed,
            "markets_loaded": self._markets_ready,
            "clock_offset_ms": self.clock_offset_ms,
            "clock_note": self.clock_note,
            "backing_off_sec": round(self.backoff.remaining(), 1) or None,
        }

    # -- orders (ess_tui.venues.ccxt.orders) ---------------------------------------------------

    async def fetch_open_orders(self) -> list[Order]:
        """Every open order in scope, every page: regular and stop/trigger/algo books alike."""
        await self._ready()
        return await self.orders.fetch_open_orders()

    async def cancel_all_orders(self) -> int:
        """Cancel every open order in scope, stop/trigger orders included. Returns how many.

        Lists the open orders first (so the count is real and symbols outside the list are found),
        then cancels. If listing fails, the listed symbols are still cancelled before the error
        is raised.
        """
        await self._ready()
        self._emergency += 1
        try:
            return await self.orders.cancel_all_orders()
        finally:
            self._emergency -= 1

    # -- account -------------------------------------------------------------------------------

    async def fetch_balance(self) -> dict[str, Any]:
        """ccxt's balance structure (mapped errors)."""
        await self._ready()
        return await self._call("fetch_balance")

    async def get_account_balance(self) -> float:
        """Account equity in the settlement currency, unrealised PnL included."""
        balance = await self.fetch_balance()
        currency = self.settle_currency or "USDT"
        equity = self._profile.equity(balance, currency)
        if equity is None:
            raise VenueRejected(
                f"{self.exchange_id}: no {currency} balance in the account; set "
                "venue.settle_currency to the currency the account is margined in",
                venue=self.exchange_id, call="fetch_balance",
            )
        return equity

    def order_failures(self, since: datetime) -> list[str]:
        """Orders this venue sent that the exchange refused, since ``since``."""
        return [clean_text(text) for at, text in self._order_failures if at >= since]
