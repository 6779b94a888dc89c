"""krakenfutures through the real ccxt class against the local stub.

One list of open orders holds limit *and* trigger (stop / take-profit) orders; one account-wide
cancel-all takes both; closes are reduce-only ``mkt`` orders; the dead man's switch is Kraken's
``cancelallordersafter`` (seconds; 0 disarms).
"""

from __future__ import annotations

import pytest

from ccxt_stub import make_venue, running
from ess_tui.engine.flatten import Flattener, RetryPolicy

T = "2026-01-01T00:00:00.000Z"
API = "/derivatives/api/v3"


def position(symbol: str, side: str, size: float, price: float = 95000) -> dict:
    return {"side": side, "symbol": symbol, "price": price, "fillTime": T, "size": size,
            "unrealizedFunding": 0, "pnlCurrency": "USD"}


def limit(order_id: str, symbol: str, side: str, size: float, price: float) -> dict:
    return {"order_id": order_id, "symbol": symbol, "side": side, "orderType": "lmt",
            "limitPrice": price, "unfilledSize": size, "receivedTime": T, "status": "untouched",
            "filledSize": 0, "reduceOnly": False, "lastUpdateTime": T}


def stop(order_id: str, symbol: str, side: str, size: float, trigger: float) -> dict:
    return {"order_id": order_id, "symbol": symbol, "side": side, "orderType": "stop",
            "stopPrice": trigger, "limitPrice": trigger, "unfilledSize": size, "receivedTime": T,
            "status": "untouched", "filledSize": 0, "reduceOnly": True, "triggerSignal": "mark_price",
            "lastUpdateTime": T}


def placed(request) -> dict:
    return {"result": "success", "sendStatus": {"order_id": "n1", "status": "placed",
                                                "receivedTime": T, "orderEvents": []}, "serverTime": T}


def cancelled_all(ids: list[str]) -> dict:
    return {"result": "success", "serverTime": T, "cancelStatus": {
        "receivedTime": T, "cancelOnly": "all", "status": "cancelled",
        "cancelledOrders": [{"order_id": i} for i in ids], "orderEvents": []}}


@pytest.fixture
async def server():
    async with running() as srv:
        srv.on("GET", f"{API}/openpositions", {"result": "success", "openPositions": [], "serverTime": T})
        srv.on("GET", f"{API}/openorders", {"result": "success", "openOrders": [], "serverTime": T})
        yield srv


@pytest.fixture
async def venue(server):
    v = make_venue(server, "krakenfutures")
    yield v
    await v.close()


async def test_trigger_orders_are_listed_and_one_account_wide_cancel_takes_both(server, venue):
    server.on("GET", f"{API}/openorders", {"result": "success", "serverTime": T, "openOrders": [
        limit("o1", "PF_XBTUSD", "buy", 0.1, 90000), stop("s1", "PF_ETHUSD", "buy", 2.5, 3500)]})
    server.on("POST", f"{API}/cancelallorders", cancelled_all(["o1", "s1"]))

    orders = {o.id: o for o in await venue.fetch_open_orders()}
    assert orders["s1"].kind == "stop" and orders["s1"].symbol == "ETH/USD:USD"
    assert await venue.cancel_all_orders() == 2

    [cancel] = server.calls("POST", f"{API}/cancelallorders")
    assert "symbol" not in cancel.params  # the whole account, not per symbol


async def test_close_is_a_reduce_only_market_order_per_side(server, venue):
    server.on("GET", f"{API}/openpositions", {"result": "success", "serverTime": T, "openPositions": [
        position("PF_XBTUSD", "long", 0.5), position("PF_ETHUSD", "short", 2.5, 3000)]})
    server.on("POST", f"{API}/sendorder", placed)

    for p in await venue.fetch_positions():
        assert await venue.close_position(p) == p.amount

    sent = sorted((r.params["symbol"], r.params["side"], r.params["orderType"], r.params["size"],
                   r.params["reduceOnly"]) for r in server.calls("POST", f"{API}/sendorder"))
    assert sent == [("PF_ETHUSD", "buy", "mkt", "2.5", "true"), ("PF_XBTUSD", "sell", "mkt", "0.5", "true")]


async def test_dead_mans_switch_is_cancelallordersafter(server):
    venue = make_venue(server, "krakenfutures", dead_man_timeout_sec=60)
    server.on("GET", f"{API}/accounts", {"result": "success", "serverTime": T, "accounts": {}})
    server.on("POST", f"{API}/cancelallordersafter", {"result": "success", "serverTime": T,
                                                       "status": {"currentTime": T, "triggerTime": T}})
    await venue.start()
    assert venue.dead_man_armed and venue.status()["dead_man"]["mechanism"] == "cancel_all_after"
    await venue.close()
    sent = [r.params["timeout"] for r in server.calls("POST", f"{API}/cancelallordersafter")]
    assert sent == ["60", "0"]


async def test_engine_flatten_loop_goes_flat_on_krakenfutures(server, venue):
    state = {"positions": [position("PF_XBTUSD", "long", 0.5)],
             "orders": [limit("o1", "PF_XBTUSD", "buy", 0.1, 90000), stop("s1", "PF_XBTUSD", "sell", 0.5, 80000)]}

    def cancel(request):
        ids = [o["order_id"] for o in state["orders"]]
        state["orders"] = []
        return cancelled_all(ids)

    def place(request):
        state["positions"] = []
        return placed(request)

    server.on("GET", f"{API}/openpositions", lambda r: {"result": "success", "serverTime": T,
                                                          "openPositions": state["positions"]})
    server.on("GET", f"{API}/openorders", lambda r: {"result": "success", "serverTime": T,
                                                       "openOrders": state["orders"]})
    server.on("POST", f"{API}/cancelallorders", cancel)
    server.on("POST", f"{API}/sendorder", place)

    report = await Flattener(venue, retry=RetryPolicy(initial_sec=0.01, max_attempts=3)).run()

    assert (report.flat, report.orders_canceled, report.positions_closed) == (True, 2, 1)
