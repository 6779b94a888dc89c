"""bybit (v5, unified account) through the real ccxt class, offline.

Bybit has a cancel-all per symbol; conditional orders are reached with ``orderFilter=StopOrder``;
listing without a symbol needs a settle coin; the wallet balance excludes unrealised PnL, the
coin's ``equity`` includes it. Its cancel-all-after (DCP) only fires on a private websocket drop,
so the ESS does not claim it as a dead-man switch.
"""

from __future__ import annotations

import pytest

from ccxt_stub import StubExchangeServer, make_venue
from ess_tui.engine.flatten import Flattener, RetryPolicy

NOW = "1767225600000"


def ok(result: dict) -> dict:
    return {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": int(NOW)}


def position(symbol: str, side: str, size: str, idx: int = 0, mark: str = "95500") -> dict:
    return {
        "positionIdx": idx, "riskId": 1, "riskLimitValue": "2000000", "symbol": symbol, "side": side,
        "size": size, "avgPrice": "95000", "positionValue": "100", "tradeMode": 0, "autoAddMargin": 0,
        "positionStatus": "Normal", "leverage": "10", "markPrice": mark, "liqPrice": "",
        "bustPrice": "", "positionIM": "10", "positionMM": "1", "positionBalance": "10",
        "takeProfit": "0", "stopLoss": "0", "trailingStop": "0", "sessionAvgPrice": "",
        "unrealisedPnl": "1", "curRealisedPnl": "0", "cumRealisedPnl": "0", "adlRankIndicator": 2,
        "createdTime": NOW, "updatedTime": NOW, "seq": 1, "isReduceOnly": False,
    }


def order(order_id: str, symbol: str, side: str, qty: str, *, price: str = "90000",
          trigger: str = "0", stop_type: str = "", status: str = "New", kind: str = "Limit",
          reduce_only: bool = False) -> dict:
    return {
        "orderId": order_id, "orderLinkId": "", "blockTradeId": "", "symbol": symbol, "price": price,
        "qty": qty, "side": side, "isLeverage": "", "positionIdx": 0, "orderStatus": status,
        "cancelType": "UNKNOWN", "rejectReason": "EC_NoError", "avgPrice": "0", "leavesQty": qty,
        "leavesValue": "0", "cumExecQty": "0", "cumExecValue": "0", "cumExecFee": "0",
        "timeInForce": "GTC", "orderType": kind, "stopOrderType": stop_type, "orderIv": "",
        "triggerPrice": trigger, "takeProfit": "", "stopLoss": "", "tpTriggerBy": "",
        "slTriggerBy": "", "triggerDirection": 0, "triggerBy": "LastPrice",
        "lastPriceOnCreated": "", "reduceOnly": reduce_only, "closeOnTrigger": reduce_only,
        "smpType": "None", "smpGroup": 0, "smpOrderId": "", "tpslMode": "", "tpLimitPrice": "",
        "slLimitPrice": "", "placeType": "", "createdTime": NOW, "updatedTime": NOW,
    }


def listing(orders: list[dict]) -> dict:
    return ok({"list": orders, "nextPageCursor": "", "category": "linear"})


CREATED = ok({"orderId": "new-1", "orderLinkId": ""})


@pytest.fixture
async def server():
    srv = StubExchangeServer()
    await srv.start()
    srv.on("GET", "/v5/position/list", ok({"list": [], "category": "linear"}))
    srv.on("GET", "/v5/order/realtime", listing([]))
    yield srv
    await srv.stop()
    assert not srv.unmatched, [f"{r.method} {r.path} {r.params}" for r in srv.unmatched]


@pytest.fixture
async def venue(server):
    v = make_venue(server, "bybit")
    yield v
    await v.close()


async def test_cancel_all_is_account_wide_per_settle_coin_in_regular_and_conditional_books(server, venue):
    stop = order("s1", "BTCUSDT", "Sell", "0.015", price="0", trigger="80000",
                 stop_type="StopLoss", status="Untriggered", kind="Market", reduce_only=True)
    server.on("GET", "/v5/order/realtime", listing([order("o1", "ETHUSDT", "Buy", "0.50"), stop]),
              match={"settleCoin": "USDT"})
    server.on("GET", "/v5/order/realtime", listing([stop]),
              match={"settleCoin": "USDT", "orderFilter": "StopOrder"})
    server.on("POST", "/v5/order/cancel-all", ok({"list": [], "success": "1"}))
    server.on("POST", "/v5/order/cancel-all", ok({"list": [{"orderId": "o1", "orderLinkId": ""}]}),
              match={"settleCoin": "USDT"})
    server.on("POST", "/v5/order/cancel-all", ok({"list": [{"orderId": "s1", "orderLinkId": ""}]}),
              match={"settleCoin": "USDT", "orderFilter": "StopOrder"})

    assert await venue.cancel_all_orders() == 2  # what the venue says it cancelled

    # by settle coin, not per symbol: orders on symbols the listing missed are cancelled too
    cancels = sorted((r.body.get("settleCoin"), r.body["category"], r.body.get("orderFilter", "-"),
                      "symbol" in r.body) for r in server.calls("POST", "/v5/order/cancel-all"))
    assert cancels == [("USDC", "linear", "-", False), ("USDC", "linear", "StopOrder", False),
                       ("USDT", "linear", "-", False), ("USDT", "linear", "StopOrder", False)]
    # listing (for the panel and the check) is account-wide per settle coin, never without one
    await venue.fetch_open_orders()
    coins = {r.params["settleCoin"] for r in server.calls("GET", "/v5/order/realtime")}
    assert coins == {"USDT", "USDC"}


async def test_conditional_orders_show_as_stops(server, venue):
    server.on("GET", "/v5/order/realtime", listing([
        order("s1", "BTCUSDT", "Sell", "0.015", price="0", trigger="80000", stop_type="Stop",
              status="Untriggered", kind="Market", reduce_only=True)]),
        match={"settleCoin": "USDT", "orderFilter": "StopOrder"})

    [stop] = await venue.fetch_open_orders()

    assert (stop.symbol, stop.kind, stop.side, stop.amount, stop.price) == (
        "BTC/USDT:USDT", "stop", "sell", 0.015, 80000)


async def test_close_sends_reduce_only_market_orders_at_the_qty_step(server, venue):
    server.on("GET", "/v5/position/list", ok({"list": [
        position("BTCUSDT", "Buy", "0.015"), position("ETHUSDT", "Sell", "1.23", mark="3000"),
    ], "category": "linear"}), match={"settleCoin": "USDT"})
    server.on("POST", "/v5/order/create", CREATED)

    positions = {p.symbol: p for p in await venue.fetch_positions()}
    assert positions["ETH/USDT:USDT"].side == "short" and positions["ETH/USDT:USDT"].amount == 1.23
    for p in positions.values():
        assert await venue.close_position(p) == p.amount  # bybit does not report the fill

    sent = sorted((r.body["symbol"], r.body["side"], r.body["orderType"], r.body["qty"],
                   r.body["reduceOnly"], r.body["category"])
                  for r in server.calls("POST", "/v5/order/create"))
    assert sent == [("BTCUSDT", "Sell", "Market", "0.015", True, "linear"),
                    ("ETHUSDT", "Buy", "Market", "1.23", True, "linear")]


async def test_hedge_mode_uses_the_position_index(server, venue):
    server.on("GET", "/v5/position/list", ok({"list": [
        position("BTCUSDT", "Buy", "0.020", idx=1), position("BTCUSDT", "Sell", "0.005", idx=2),
    ], "category": "linear"}), match={"settleCoin": "USDT"})
    server.on("POST", "/v5/order/create", CREATED)

    for p in await venue.fetch_positions():
        await venue.close_position(p)

    sent = sorted((r.body["side"], r.body["positionIdx"], r.body["qty"])
                  for r in server.calls("POST", "/v5/order/create"))
    assert sent == [("Buy", 2, "0.005"), ("Sell", 1, "0.02")]


async def test_equity_includes_unrealised_pnl(server, venue):
    server.on("GET", "/v5/account/wallet-balance", ok({"list": [{
        "accountType": "UNIFIED", "totalEquity": "10250.5", "totalWalletBalance": "10000",
        "totalMarginBalance": "10250.5", "totalAvailableBalance": "9000",
        "coin": [{"coin": "USDT", "equity": "10250.5", "walletBalance": "10000",
                  "unrealisedPnl": "250.5", "locked": "0", "totalPositionIM": "100",
                  "totalOrderIM": "0", "usdValue": "10250.5", "availableToWithdraw": ""}],
    }]}))

    assert await venue.get_account_balance() == 10250.5
    assert server.calls("GET", "/v5/account/wallet-balance")[0].params["accountType"] == "UNIFIED"


async def test_dcp_is_not_claimed_as_a_dead_man_switch(server):
    venue = make_venue(server, "bybit")
    server.on("GET", "/v5/account/wallet-balance", ok({"list": []}))
    assert venue.exchange.has["cancelAllOrdersAfter"] is True  # ccxt has it…

    await venue.start()
    await venue.close()

    assert not venue.dead_man_supported and not venue.status()["armed"]  # …but it would not fire
    assert "websocket" in venue.status()["dead_man"]["note"]
    assert not server.calls("POST", "/v5/order/disconnected-cancel-all")


async def test_demo_trading_talks_to_the_demo_host(server):
    venue = make_venue(server, "bybit", demo_trading=True)
    await venue.fetch_positions()
    await venue.close()
    assert {r.host for r in server.requests} == {"api-demo.bybit.com"}


async def test_engine_flatten_loop_goes_flat_on_bybit(server, venue):
    state = {"positions": [position("BTCUSDT", "Buy", "0.015")],
             "orders": [order("o1", "BTCUSDT", "Buy", "0.010")]}

    def create(request):
        state["positions"] = []
        return CREATED

    def cancel(request):
        gone = [o for o in state["orders"] if request.body.get("settleCoin") == "USDT"
                and "orderFilter" not in request.body]
        state["orders"] = [o for o in state["orders"] if o not in gone]
        return ok({"list": [{"orderId": o["orderId"], "orderLinkId": ""} for o in gone]})

    server.on("GET", "/v5/position/list", lambda r: ok({"list": state["positions"]}),
              match={"settleCoin": "USDT"})
    server.on("GET", "/v5/order/realtime", lambda r: listing(state["orders"]), match={"settleCoin": "USDT"})
    server.on("POST", "/v5/order/cancel-all", cancel)
    server.on("POST", "/v5/order/create", create)

    report = await Flattener(venue, retry=RetryPolicy(initial_sec=0.01, max_attempts=3)).run()

    assert (report.flat, report.orders_canceled, report.positions_closed) == (True, 1, 1)
