"""binanceusdm through the real ccxt class, offline: what the ESS sends when it flattens.

Binance cancels per symbol only and keeps stop/trigger ("algo") orders in a book of their own,
so a cancel-all must hit both books for every symbol; it has a per-symbol cancel-all countdown.
"""

from __future__ import annotations

import asyncio

import pytest

from ccxt_stub import binance_orders_sent, make_venue, running, serve_binance_orders
from ess_tui.engine.flatten import Flattener, RetryPolicy
from ess_tui.engine.venue import Position

NOW = 1767225600000


def risk(symbol: str, amount: str, side: str = "BOTH", entry: str = "95000", mark: str = "95500",
         notional: str | None = None) -> dict:
    if notional is None:
        notional = str(round(float(amount) * float(mark), 4))
    return {
        "symbol": symbol, "positionSide": side, "positionAmt": amount, "entryPrice": entry,
        "breakEvenPrice": entry, "markPrice": mark, "unRealizedProfit": "1.0",
        "liquidationPrice": "0", "isolatedMargin": "0", "notional": notional, "marginAsset": "USDT",
        "isolatedWallet": "0", "initialMargin": "10", "maintMargin": "1", "positionInitialMargin": "10",
        "openOrderInitialMargin": "0", "adl": "1", "bidNotional": "0", "askNotional": "0",
        "updateTime": NOW,
    }


def limit_order(order_id: int, symbol: str, side: str, qty: str, price: str) -> dict:
    return {
        "orderId": order_id, "symbol": symbol, "status": "NEW", "clientOrderId": f"c{order_id}",
        "price": price, "avgPrice": "0", "origQty": qty, "executedQty": "0", "cumQuote": "0",
        "timeInForce": "GTC", "type": "LIMIT", "reduceOnly": False, "closePosition": False,
        "side": side, "positionSide": "BOTH", "stopPrice": "0", "workingType": "CONTRACT_PRICE",
        "priceProtect": False, "origType": "LIMIT", "time": NOW, "updateTime": NOW,
    }


def algo_order(algo_id: int, symbol: str, side: str, qty: str, trigger: str) -> dict:
    return {
        "algoId": algo_id, "clientAlgoId": f"a{algo_id}", "algoType": "CONDITIONAL",
        "orderType": "STOP_MARKET", "symbol": symbol, "side": side, "positionSide": "BOTH",
        "timeInForce": "GTC", "quantity": qty, "algoStatus": "NEW", "triggerPrice": trigger,
        "price": "0", "reduceOnly": True, "closePosition": False, "workingType": "CONTRACT_PRICE",
        "priceProtect": False, "createTime": NOW, "updateTime": NOW, "triggerTime": 0,
    }


def filled(request) -> dict:  # echo the market order back as filled, like RESULT responses do
    p = request.params
    return {
        "orderId": 777, "symbol": p["symbol"], "status": "FILLED", "clientOrderId": "x",
        "price": "0", "avgPrice": "95000", "origQty": p["quantity"], "executedQty": p["quantity"],
        "cumQuote": "1", "timeInForce": "GTC", "type": "MARKET",
        "reduceOnly": p.get("reduceOnly") == "true", "closePosition": False, "side": p["side"],
        "positionSide": p.get("positionSide", "BOTH"), "stopPrice": "0", "workingType": "CONTRACT_PRICE",
        "priceProtect": False, "origType": "MARKET", "updateTime": NOW,
    }


DONE = {"code": 200, "msg": "The operation of cancel all open order is done."}


@pytest.fixture
async def server():
    async with running() as srv:
        yield srv


@pytest.fixture
async def venue(server):
    v = make_venue(server, "binanceusdm")
    yield v
    await v.close()


async def test_cancel_all_hits_both_books_per_symbol_including_unlisted_ones(server, venue):
    server.on("GET", "/fapi/v1/openOrders", [
        limit_order(1, "BTCUSDT", "BUY", "0.010", "90000"),
        limit_order(2, "SOLUSDT", "SELL", "3", "250"),  # not listed in ess.toml: found account-wide
    ])
    server.on("GET", "/fapi/v1/openAlgoOrders", [algo_order(3358, "BTCUSDT", "SELL", "0.015", "80000")])
    server.on("DELETE", "/fapi/v1/allOpenOrders", DONE)
    server.on("DELETE", "/fapi/v1/algoOpenOrders", DONE)

    assert await venue.cancel_all_orders() == 3

    regular = sorted(r.params["symbol"] for r in server.calls("DELETE", "/fapi/v1/allOpenOrders"))
    algo = sorted(r.params["symbol"] for r in server.calls("DELETE", "/fapi/v1/algoOpenOrders"))
    assert regular == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert algo == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    # listing happened account-wide (no symbol), in both books, before cancelling
    listing = server.calls("GET", "/fapi/v1/openOrders") + server.calls("GET", "/fapi/v1/openAlgoOrders")
    assert all("symbol" not in r.params for r in listing)


async def test_open_orders_report_stop_orders_from_the_algo_book(server, venue):
    server.on("GET", "/fapi/v1/openOrders", [limit_order(1, "ETHUSDT", "BUY", "0.5", "3000")])
    server.on("GET", "/fapi/v1/openAlgoOrders", [algo_order(9, "BTCUSDT", "SELL", "0.015", "80000")])

    orders = {o.id: o for o in await venue.fetch_open_orders()}

    assert orders["1"].kind == "limit" and orders["1"].symbol == "ETH/USDT:USDT"
    assert orders["9"].kind == "stop" and orders["9"].price == 80000 and orders["9"].reduce_only
    assert orders["9"].describe() == "BTC/USDT:USDT stop sell 0.015 @ 80000"


async def test_close_sends_reduce_only_market_orders_on_the_opposite_side_at_precision(server, venue):
    server.on("GET", "/fapi/v3/positionRisk", [
        risk("BTCUSDT", "0.015"), risk("ETHUSDT", "-1.234", entry="3000", mark="3010"),
    ])
    serve_binance_orders(server, filled)

    positions = {p.symbol: p for p in await venue.fetch_positions()}
    assert positions["BTC/USDT:USDT"] == Position("BTC/USDT:USDT", "long", 0.015, 95000, 95500)
    assert positions["ETH/USDT:USDT"].side == "short"
    noisy = Position("BTC/USDT:USDT", "long", 0.015000000001)  # float noise must not reach the venue
    results = await asyncio.gather(venue.close_position(noisy), venue.close_position(positions["ETH/USDT:USDT"]))

    assert results == [0.015, 1.234]
    sent = {p["symbol"]: p for p in binance_orders_sent(server)}
    assert sent["BTCUSDT"]["side"] == "SELL" and sent["BTCUSDT"]["quantity"] == "0.015"
    assert sent["ETHUSDT"]["side"] == "BUY" and sent["ETHUSDT"]["quantity"] == "1.234"
    for params in sent.values():
        assert params["type"] == "MARKET" and params["reduceOnly"] in ("true", True)
        assert "positionSide" not in params


async def test_side_comes_from_the_signed_amount_when_notional_is_zero(server, venue):
    # ccxt derives binance's side from the notional's sign; without a mark price it is "0"
    server.on("GET", "/fapi/v3/positionRisk", [risk("ETHUSDT", "-0.5", notional="0")])
    serve_binance_orders(server, filled)

    [position] = await venue.fetch_positions()
    assert position.side == "short"
    await venue.close_position(position)
    assert server.calls("POST", "/fapi/v1/order")[0].params["side"] == "BUY"


async def test_hedge_mode_closes_each_side_with_its_position_side(server, venue):
    server.on("GET", "/fapi/v3/positionRisk", [
        risk("BTCUSDT", "0.020", side="LONG"), risk("BTCUSDT", "-0.005", side="SHORT"),
    ])
    serve_binance_orders(server, filled)

    for position in await venue.fetch_positions():
        await venue.close_position(position)

    sent = sorted((p["side"], p["positionSide"], p["quantity"]) for p in binance_orders_sent(server))
    assert sent == [("BUY", "SHORT", "0.005"), ("SELL", "LONG", "0.02")]
    # in hedge mode binance rejects reduceOnly; an order on the position's own side only reduces it
    assert all("reduceOnly" not in p for p in binance_orders_sent(server))


async def test_close_never_sends_more_than_the_venue_holds(server, venue):
    server.on("GET", "/fapi/v3/positionRisk", [risk("BTCUSDT", "0.015")])
    serve_binance_orders(server, filled)

    await venue.fetch_positions()
    assert await venue.close_position(Position("BTC/USDT:USDT", "long", 5.0)) == 0.015
    assert [p["quantity"] for p in binance_orders_sent(server)] == ["0.015"]

    # gone at the venue: nothing is sent at all
    server.on("GET", "/fapi/v3/positionRisk", [])
    await venue.fetch_positions()
    assert await venue.close_position(Position("ETH/USDT:USDT", "short", 1.0)) == 0.0
    assert len(binance_orders_sent(server)) == 1


async def test_a_position_above_the_market_order_limit_is_closed_in_pieces(server, venue):
    server.on("GET", "/fapi/v3/positionRisk", [risk("BTCUSDT", "250.5")])  # market max is 120
    serve_binance_orders(server, filled)

    [position] = await venue.fetch_positions()
    assert await venue.close_position(position) == pytest.approx(250.5)
    # as even as the step allows, each within the 120 market-order cap (was 120 + 120 + 10.5)
    assert [p["quantity"] for p in binance_orders_sent(server)] == ["83.5", "83.5", "83.5"]


async def test_dead_man_countdown_is_armed_per_symbol_rearmed_and_disarmed(server):
    venue = make_venue(server, "binanceusdm", dead_man_timeout_sec=30)
    server.on("GET", "/fapi/v3/account", {"assets": []})
    server.on("POST", "/fapi/v1/countdownCancelAll", lambda r: {
        "symbol": r.params["symbol"], "countdownTime": r.params["countdownTime"]})
    assert venue.dead_man_supported and not venue.dead_man_armed

    await venue.start()
    arms = server.calls("POST", "/fapi/v1/countdownCancelAll")
    assert sorted((r.params["symbol"], r.params["countdownTime"]) for r in arms) == [
        ("BTCUSDT", "30000"), ("ETHUSDT", "30000")]
    assert venue.dead_man_armed and venue.status()["armed"] is True

    venue.dead_man.timeout_sec = 0.3  # re-arm every 0.1 s instead of every 10 s
    await venue.dead_man.stop()
    venue.dead_man.start()
    for _ in range(1000):  # two re-arms (two symbols each) within ~0.2 s; allow a loaded machine (10 s)
        # counted once the exchange has answered, not when the request reaches it
        if venue.dead_man.arm_count >= 3:
            break
        await asyncio.sleep(0.01)
    assert venue.dead_man.arm_count >= 3

    await venue.close()
    last = server.calls("POST", "/fapi/v1/countdownCancelAll")[-2:]
    assert sorted(r.params["countdownTime"] for r in last) == ["0", "0"]
    assert not venue.dead_man_armed


async def test_demo_trading_talks_to_the_demo_host(server):
    venue = make_venue(server, "binanceusdm", demo_trading=True)
    server.on("GET", "/fapi/v3/positionRisk", [])
    await venue.fetch_positions()
    await venue.close()
    assert {r.host for r in server.requests} == {"demo-fapi.binance.com"}


async def test_engine_flatten_loop_goes_flat_on_binance(server, venue):
    """The lead's flatten loop over this venue: cancel both books, close reduce-only, verify."""
    state = {"positions": [risk("BTCUSDT", "0.015"), risk("ETHUSDT", "-1.234")],
             "orders": [limit_order(1, "BTCUSDT", "BUY", "0.010", "90000")],
             "algo": [algo_order(5, "ETHUSDT", "BUY", "1.234", "3500")]}

    def close(request):
        state["positions"] = [p for p in state["positions"]
                              if p["symbol"] != request.params["symbol"]]
        return filled(request)

    def cancel(book):
        def handler(request):
            state[book] = [o for o in state[book] if o["symbol"] != request.params["symbol"]]
            return DONE
        return handler

    server.on("GET", "/fapi/v3/positionRisk", lambda r: state["positions"])
    server.on("GET", "/fapi/v1/openOrders", lambda r: state["orders"])
    server.on("GET", "/fapi/v1/openAlgoOrders", lambda r: state["algo"])
    server.on("DELETE", "/fapi/v1/allOpenOrders", cancel("orders"))
    server.on("DELETE", "/fapi/v1/algoOpenOrders", cancel("algo"))
    serve_binance_orders(server, close)

    report = await Flattener(venue, retry=RetryPolicy(initial_sec=0.01, max_attempts=3)).run()

    assert report.flat is True and report.attempts == 1
    assert report.orders_canceled == 2 and report.positions_closed == 2
    assert all(p["reduceOnly"] in ("true", True) for p in binance_orders_sent(server))
