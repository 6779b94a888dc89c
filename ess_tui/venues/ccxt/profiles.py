"""What differs between exchanges, in one place: order books kept apart, account-wide queries,
close parameters, equity, dead-man switch and market loading.

ccxt unifies the method names; it does not unify *coverage*. Binance keeps stop/trigger orders in a
separate "algo" book and cancels per symbol; OKX has no cancel-all for regular orders and keeps
conditional, trigger and trailing orders in algo books; Bybit needs a settle coin to list orders
without a symbol and reports a wallet balance without unrealised PnL. This module says, per family,
which calls cover everything. No ccxt import here: it works on ids and plain dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ess_tui.venues.ccxt.config import CcxtVenueConfig, exchange_family

__all__ = ["Book", "Profile", "profile_for"]

#: An open-orders query: (symbol, or None for account-wide; extra params).
Query = tuple[str | None, dict[str, Any]]
#: A positions query: (symbols list, or None for account-wide; extra params).
PositionQuery = tuple[list[str] | None, dict[str, Any]]


@dataclass(frozen=True)
class Book:
    """One list of open orders a venue keeps apart, with the params that reach it."""

    label: str
    fetch_params: dict[str, Any] = field(default_factory=dict)
    cancel_params: dict[str, Any] = field(default_factory=dict)
    trigger: bool = False


_REGULAR = Book("regular")
_BINANCE_TRIGGER = Book("trigger", {"trigger": True}, {"trigger": True}, trigger=True)
_BYBIT_TRIGGER = Book("trigger", {"trigger": True}, {"trigger": True}, trigger=True)
#: Bybit spot keeps TP/SL, conditional, OCO and bidirectional TP/SL orders apart (``orderFilter``).
_BYBIT_SPOT = tuple(
    Book(label, {"orderFilter": f}, {"orderFilter": f}, trigger=True)
    for label, f in (("tpsl", "tpslOrder"), ("stop", "StopOrder"), ("oco", "OcoOrder"),
                     ("bidirectional tpsl", "BidirectionalTpslOrder"))
)
_GATE_TRIGGER = Book("price-triggered", {"trigger": True}, {"trigger": True}, trigger=True)
_OKX_ALGO = tuple(
    Book(f"algo {kind}", {"trigger": True, "ordType": kind}, {"trigger": True}, trigger=True)
    for kind in ("conditional,oco", "trigger", "move_order_stop", "iceberg", "twap")
)


@dataclass(frozen=True)
class Profile:
    """The venue-specific rules for one configured exchange."""

    exchange_id: str
    family: str
    market_type: str
    books: tuple[Book, ...]
    position_queries: tuple[PositionQuery, ...]
    order_queries: tuple[Query, ...]
    cancel_batch: int = 20  # ids per cancel_orders call
    trigger_cancel_batch: int = 10
    create_batch: int = 1  # orders per create_orders call (1: one create_order each)
    paging: str | None = None  # "okx" (after = last id) | "bybit" (nextPageCursor) | "offset" | None
    cancel_wide: tuple[Query, ...] = ()  # account-wide cancel-all calls (scope = "account")
    wide_reports_ids: bool = False  # the account-wide cancel answers with the ids it cancelled
    dead_man: str | None = None  # "cancel_all_after" | "countdown" | None
    dead_man_note: str | None = None

    def close_params(self, raw_position: dict[str, Any]) -> dict[str, Any]:
        """Params for the reduce-only market order that closes ``raw_position``.

        In hedge mode (``hedged``) ccxt turns this into positionSide / posSide / positionIdx and
        drops ``reduceOnly``: an order on the position's own side can only reduce it.
        """
        if self.market_type == "spot":
            return {}
        params: dict[str, Any] = {"reduceOnly": True}
        if raw_position.get("hedged") is True:
            params["hedged"] = True
        if self.family == "okx":
            params["marginMode"] = raw_position.get("marginMode") or "cross"
        return params

    def equity(self, balance: dict[str, Any], currency: str) -> float | None:
        """Account equity in ``currency`` (unrealised PnL included), or None if absent."""
        if self.family == "bybit":
            for account in (balance.get("info", {}).get("result", {}) or {}).get("list", []) or []:
                for coin in account.get("coin", []) or []:
                    if coin.get("coin") == currency and coin.get("equity") not in (None, ""):
                        return float(coin["equity"])
        total = (balance.get("total") or {}).get(currency)
        if total is None:
            entry = balance.get(currency) or {}
            total = entry.get("total") if isinstance(entry, dict) else None
        return None if total is None else float(total)


def _market_load_types(exchange_id: str, family: str, market_type: str) -> list[str] | None:
    if family == "binance":
        if market_type == "spot":
            return ["spot"]
        if exchange_id == "binanceusdm":
            return ["linear"]
        if exchange_id == "binancecoinm":
            return ["inverse"]
        return ["linear", "inverse"]
    if family == "bybit":
        return ["spot"] if market_type == "spot" else ["linear", "inverse"]
    if family == "okx" or exchange_id in ("gate", "krakenfutures"):
        return [market_type]
    return None


def exchange_options(config: CcxtVenueConfig, defaults: dict[str, Any]) -> dict[str, Any]:
    """ccxt ``options`` for a lean, emergency-ready instance of ``config.exchange``.

    ``defaults`` is the class's own options (to merge into, never replace). Markets are loaded for
    the configured market type only; currencies are not loaded (a trade-only key may not read them
    and the ESS does not need them); binance's leverage brackets are preset empty, so that
    ``fetch_positions`` makes one call, not two, in an emergency.
    """
    family = exchange_family(config.exchange)
    options: dict[str, Any] = {"defaultType": config.market_type, "fetchCurrencies": False}
    types = _market_load_types(config.exchange, family, config.market_type)
    if types is not None:
        fetch_markets = defaults.get("fetchMarkets")
        base = dict(fetch_markets) if isinstance(fetch_markets, dict) else {}
        options["fetchMarkets"] = {**base, "types": types}
    if family == "binance":
        # the offset to the venue's clock is loaded with the markets and used for every signed
        # request's timestamp (a drifting host clock otherwise gets -1021 on every call)
        options["adjustForTimeDifference"] = True
        options["leverageBrackets"] = {}
        open_orders = defaults.get("fetchOpenOrders")
        base = dict(open_orders) if isinstance(open_orders, dict) else {}
        options["fetchOpenOrders"] = {**base, "warnWithoutSymbol": False}
        options["warnOnFetchOpenOrdersWithoutSymbol"] = False
    return options


def profile_for(
    config: CcxtVenueConfig, has: dict[str, Any], markets: dict[str, Any] | None = None
) -> Profile:
    """The rules for ``config.exchange``. ``markets`` (when loaded) refines the query lists."""
    exchange_id = config.exchange
    family = exchange_family(exchange_id)
    market_type = config.market_type
    markets = markets or {}
    symbols = list(config.symbols)
    per_symbol: tuple[Query, ...] = tuple((s, {}) for s in symbols)
    dead_man: str | None = None
    note: str | None = None
    paging: str | None = None
    cancel_wide: tuple[Query, ...] = ()
    wide_reports_ids = False

    if family == "binance":
        books = (_REGULAR,) if market_type == "spot" else (_REGULAR, _BINANCE_TRIGGER)
        wide: tuple[Query, ...] = ((None, {}),)
        if exchange_id == "binance" and market_type != "spot":
            wide = ((None, {"subType": "linear"}), (None, {"subType": "inverse"}))
        positions: tuple[PositionQuery, ...] = wide
        orders: tuple[Query, ...] = wide
        if market_type != "spot" and exchange_id in ("binanceusdm", "binancecoinm"):
            dead_man = "countdown"
            note = "binance countdownCancelAll, per listed symbol"
        else:
            note = "this binance market has no cancel-all countdown"
    elif family == "bybit":
        books = (_REGULAR, _BYBIT_TRIGGER)
        paging = "bybit"
        if market_type == "spot":
            books = (_REGULAR, *_BYBIT_SPOT)
            positions, orders = ((None, {}),), ((None, {}),)
        else:
            settles = {"USDT", "USDC"} | {
                m.get("settle") for s in symbols if (m := markets.get(s)) and m.get("linear")
            }
            linear = tuple(
                (None, {"subType": "linear", "settleCoin": c}) for c in sorted(x for x in settles if x)
            )
            inverse_symbols = tuple(
                (s, {}) for s in symbols if (m := markets.get(s)) and m.get("inverse")
            )
            positions = (*linear, (None, {"subType": "inverse"}))
            orders = (*linear, *inverse_symbols)
            cancel_wide = linear
            wide_reports_ids = True
        note = (
            "bybit's cancel-all-after (DCP) only fires when a private websocket drops and must be "
            "enabled by Bybit; ess-tui holds no such websocket, so it is not used"
        )
    elif family == "okx":
        books = (_REGULAR, *_OKX_ALGO)  # spot has algo orders too (conditional, OCO, trigger…)
        positions, orders = ((None, {}),), ((None, {}),)
        paging = "okx"
        if has.get("cancelAllOrdersAfter"):
            dead_man = "cancel_all_after"
            note = "okx cancel-all-after, account-wide"
    elif exchange_id == "krakenfutures":
        # one list of open orders (trigger orders included), one account-wide cancel-all for both
        books = (_REGULAR,)
        positions, orders = ((None, {}),), ((None, {}),)
        cancel_wide = ((None, {}),)
        dead_man = "cancel_all_after"
        note = "krakenfutures cancelallordersafter (dead man's switch), account-wide"
    elif exchange_id == "gate":
        books = (_REGULAR, _GATE_TRIGGER)
        positions, orders = ((None, {}),), ((None, {}),)
        paging = "offset"
        note = "gate's countdown_cancel_all is per contract and not in ccxt's unified API; not used"
    else:
        books = (_REGULAR,)
        positions = ((list(symbols), {}),)
        orders = per_symbol
        if has.get("cancelAllOrdersAfter"):
            dead_man = "cancel_all_after"
            note = "ccxt cancel_all_orders_after"
        else:
            note = f"{exchange_id} has no cancel-all-after in ccxt"
    create_batch = 1
    if family == "okx":
        create_batch = 20
    elif family == "bybit":
        create_batch = 10 if market_type == "spot" else 20
    elif family == "binance" and market_type != "spot":
        create_batch = 5
    if not config.dead_man_enabled:
        dead_man, note = None, "off in ess.toml (dead_man_timeout_sec = 0)"
    return Profile(
        exchange_id=exchange_id,
        family=family,
        market_type=market_type,
        books=books,
        position_queries=positions,
        order_queries=orders,
        dead_man=dead_man,
        dead_man_note=note,
        create_batch=create_batch,
        paging=paging,
        cancel_wide=cancel_wide,
        wide_reports_ids=wide_reports_ids,
    )
