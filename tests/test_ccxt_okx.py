"""okx through the real ccxt class, offline.

OKX has no cancel-all for regular orders (``has['cancelAllOrders']`` is False): the ESS lists the
pending orders and cancels them by id in batches; conditional, trigger, trailing, iceberg and TWAP
orders live in algo books of their own and are cancelled with cancel-algos. Swap amounts are in
contracts; closes carry the position's margin mode. OKX's cancel-all-after is the dead-man switch.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ccxt_stub import StubExchangeServer, make_venue
from ess_tui.engine.flatten import Flattener, RetryPolicy

NOW = "1767225600000"


def ok(data: list) -> dict:
    return {"code": "0", "msg": "", "data": data}


def position(inst: str, pos: str, *, pos_side: str = "net", mode: str = "cross") -> dict:
    return {
        "adl": "1", "availPos": "", "avgPx": "95000", "cTime": NOW, "ccy": "USDT", "deltaBS": "",
        "deltaPA": "", "gammaBS": "", "gammaPA": "", "imr": "10", "instId": inst, "instType": "SWAP",
        "interest": "0", "idxPx": "95500", "last": "95500", "lever": "10", "liab": "", "liabCcy": "",
        "liqPx": "", "markPx": "95500", "margin": "", "mgnMode": mode, "mgnRatio": "", "mmr": "1",
        "notionalUsd": "100", "optVal": "", "pTime": NOW, "pos": pos, "posCcy": "", "posId": "1",
        "posSide": pos_side, "thetaBS": "", "thetaPA": "", "tradeId": "1", "uTime": NOW,
        "upl": "1", "uplRatio": "0.01", "vegaBS": "", "vegaPA": "",
    }


def pending(ord_id: str, inst: str, side: str, sz: str, px: str = "90000") -> dict:
    return {
        "accFillSz": "0", "avgPx": "", "cTime": NOW, "category": "normal", "ccy": "", "clOrdId": "",
        "fee": "0", "feeCcy": "USDT", "fillPx": "", "fillSz": "0", "fillTime": "", "instId": inst,
        "instType": "SWAP", "lever": "10", "ordId": ord_id, "ordType": "limit", "pnl": "0",
        "posSide": "net", "px": px, "rebate": "0", "rebateCcy": "USDT", "reduceOnly": "false",
        "side": side, "slOrdPx": "", "slTriggerPx": "", "state": "live", "sz": sz, "tag": "",
        "tdMode": "cross", "tgtCcy": "", "tpOrdPx": "", "tpTriggerPx": "", "tradeId": "", "uTime": NOW,
    }


def algo(algo_id: str, inst: str, side: str, sz: str, ord_type: str = "conditional",
         sl: str = "80000") -> dict:
    return {
        "activePx": "", "actualPx": "", "actualSide": "", "actualSz": "0", "algoId": algo_id,
        "cTime": NOW, "callbackRatio": "", "callbackSpread": "", "ccy": "", "clOrdId": "",
        "instId": inst, "instType": "SWAP", "lever": "10", "moveTriggerPx": "", "ordId": "",
        "ordPx": "", "ordType": ord_type, "posSide": "net", "pxLimit": "", "pxSpread": "",
        "pxVar": "", "side": side, "slOrdPx": "-1", "slTriggerPx": sl, "slTriggerPxType": "last",
        "state": "live", "sz": sz, "szLimit": "", "tag": "", "tdMode": "cross", "tgtCcy": "",
        "timeInterval": "", "tpOrdPx": "", "tpTriggerPx": "", "tpTriggerPxType": "",
        "triggerPx": "", "triggerTime": "", "reduceOnly": "true",
    }


def placed(request) -> dict:
    return ok([{"clOrdId": "", "ordId": "9001", "tag": "", "sCode": "0", "sMsg": ""}])


def cancelled(request) -> dict:
    key = "algoId" if "algos" in request.path else "ordId"
    return ok([{key: item[key], "sCode": "0", "sMsg": ""} for item in request.body])


@pytest.fixture
async def server():
    srv = StubExchangeServer()
    await srv.start()
    srv.on("GET", "/api/v5/account/positions", ok([]))
    srv.on("GET", "/api/v5/trade/orders-pending", ok([]))
    srv.on("GET", "/api/v5/trade/orders-algo-pending", ok([]))
    yield srv
    await srv.stop()
    assert not srv.unmatched, [f"{r.method} {r.path} {r.params}" for r in srv.unmatched]


@pytest.fixture
async def venue(server):
    v = make_venue(server, "okx")
    yield v
    await v.close()


async def test_without_cancel_all_orders_are_cancelled_by_id_in_every_book(server, venue):
    assert venue.exchange.has["cancelAllOrders"] is False
    regular = [pending(str(100 + i), "BTC-USDT-SWAP", "buy", "1") for i in range(23)]
    regular.append(pending("200", "ETH-USDT-SWAP", "sell", "2", px="3500"))
    server.on("GET", "/api/v5/trade/orders-pending", ok(regular))
    server.on("GET", "/api/v5/trade/orders-algo-pending",
              ok([algo("a1", "BTC-USDT-SWAP", "sell", "3")]), match={"ordType": "conditional,oco"})
    server.on("GET", "/api/v5/trade/orders-algo-pending",
              ok([algo("t1", "ETH-USDT-SWAP", "buy", "2", ord_type="move_order_stop", sl="")]),
              match={"ordType": "move_order_stop"})
    server.on("POST", "/api/v5/trade/cancel-batch-orders", cancelled)
    server.on("POST", "/api/v5/trade/cancel-algos", cancelled)

    assert await venue.cancel_all_orders() == 26

    batches = [r.body for r in server.calls("POST", "/api/v5/trade/cancel-batch-orders")]
    assert sorted(len(b) for b in batches) == [1, 3, 20]  # OKX takes at most 20 ids per call
    ids = {(item["instId"], item["ordId"]) for b in batches for item in b}
    assert ids == {(o["instId"], o["ordId"]) for o in regular}
    algos = {(item["instId"], item["algoId"])
             for r in server.calls("POST", "/api/v5/trade/cancel-algos") for item in r.body}
    assert algos == {("BTC-USDT-SWAP", "a1"), ("ETH-USDT-SWAP", "t1")}
    assert not server.calls(path="/api/v5/trade/cancel-order")


async def test_nothing_open_means_no_cancel_calls(server, venue):
    assert await venue.cancel_all_orders() == 0
    assert not [r for r in server.requests if r.method == "POST"]


async def test_algo_orders_show_as_stops_in_open_orders(server, venue):
    server.on("GET", "/api/v5/trade/orders-algo-pending",
              ok([algo("a1", "BTC-USDT-SWAP", "sell", "3")]), match={"ordType": "conditional,oco"})

    [stop] = await venue.fetch_open_orders()

    assert (stop.id, stop.kind, stop.side, stop.amount, stop.price) == ("a1", "stop", "sell", 3, 80000)


async def test_close_is_reduce_only_in_contracts_with_the_positions_margin_mode(server, venue):
    server.on("GET", "/api/v5/account/positions", ok([
        position("BTC-USDT-SWAP", "3"), position("ETH-USDT-SWAP", "-2.57", mode="isolated"),
    ]))
    server.on("POST", "/api/v5/trade/batch-orders", placed)

    positions = {p.symbol: p for p in await venue.fetch_positions()}
    assert (positions["ETH/USDT:USDT"].side, positions["ETH/USDT:USDT"].amount) == ("short", 2.57)
    for p in positions.values():
        await venue.close_position(p)

    orders = [o for r in server.calls("POST", "/api/v5/trade/batch-orders") for o in r.body]
    sent = sorted((o["instId"], o["side"], o["ordType"], o["sz"], o["reduceOnly"], o["tdMode"])
                  for o in orders)
    assert sent == [("BTC-USDT-SWAP", "sell", "market", "3", True, "cross"),
                    ("ETH-USDT-SWAP", "buy", "market", "2.57", True, "isolated")]
    assert all("posSide" not in o for o in orders)


async def test_long_short_mode_closes_with_pos_side(server, venue):
    server.on("GET", "/api/v5/account/positions", ok([
        position("BTC-USDT-SWAP", "4", pos_side="long"), position("BTC-USDT-SWAP", "1", pos_side="short"),
    ]))
    server.on("POST", "/api/v5/trade/batch-orders", placed)

    for p in await venue.fetch_positions():
        await venue.close_position(p)

    sent = sorted((o["side"], o["posSide"], o["sz"], "reduceOnly" in o)
                  for r in server.calls("POST", "/api/v5/trade/batch-orders") for o in r.body)
    assert sent == [("buy", "short", "1", False), ("sell", "long", "4", False)]


async def test_dead_man_switch_is_okx_cancel_all_after(server):
    venue = make_venue(server, "okx", dead_man_timeout_sec=45)
    server.on("GET", "/api/v5/account/balance", ok([{"totalEq": "1", "details": [], "uTime": NOW}]))
    server.on("POST", "/api/v5/trade/cancel-all-after",
              lambda r: ok([{"triggerTime": "1767225645", "ts": "1767225600"}]))

    await venue.start()
    assert venue.dead_man_armed and venue.status()["dead_man"]["timeout_sec"] == 45
    await venue.close()

    sent = [r.body["timeOut"] for r in server.calls("POST", "/api/v5/trade/cancel-all-after")]
    assert sent == [45, 0]
    assert not venue.dead_man_armed


async def test_failed_rearm_leaves_the_switch_armed_only_until_it_runs_out(server):
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    clock = {"now": start}
    venue = make_venue(server, "okx", dead_man_timeout_sec=30)
    venue.dead_man._clock = lambda: clock["now"]
    server.on("GET", "/api/v5/account/balance", ok([]))
    server.on("POST", "/api/v5/trade/cancel-all-after", ok([{"triggerTime": "1", "ts": "1"}]))
    await venue.start()
    await venue.dead_man.stop()

    server.on("POST", "/api/v5/trade/cancel-all-after",
              {"code": "50001", "msg": "Service temporarily unavailable", "data": []}, status=503)
    clock["now"] = start + timedelta(seconds=10)
    assert await venue.dead_man.arm() is True  # re-arm failed, but the exchange's timer still runs
    assert "unavailable" in venue.status()["dead_man"]["last_error"]
    clock["now"] = start + timedelta(seconds=31)
    assert venue.status()["armed"] is False  # what the panel shows is what the exchange will do
    await venue.exchange.close()


async def test_demo_trading_is_okx_simulated_trading(server):
    venue = make_venue(server, "okx", demo_trading=True)
    await venue.fetch_positions()
    await venue.close()
    private = server.calls("GET", "/api/v5/account/positions")[0]
    assert private.headers.get("x-simulated-trading") == "1"


async def test_equity_is_eq_in_the_settle_currency(server, venue):
    server.on("GET", "/api/v5/account/balance", ok([{"totalEq": "10300", "uTime": NOW, "details": [
        {"ccy": "USDT", "eq": "10250.5", "cashBal": "10000", "upl": "250.5", "availBal": "9000",
         "frozenBal": "0", "uTime": NOW},
    ]}]))
    assert await venue.get_account_balance() == 10250.5


async def test_engine_flatten_loop_goes_flat_on_okx(server, venue):
    state = {"positions": [position("BTC-USDT-SWAP", "3")],
             "orders": [pending("1", "BTC-USDT-SWAP", "buy", "1")],
             "algos": [algo("a1", "BTC-USDT-SWAP", "sell", "3")]}

    def place(request):
        state["positions"] = []
        return placed(request)

    def cancel(book):
        def handler(request):
            state[book] = []
            return cancelled(request)
        return handler

    server.on("GET", "/api/v5/account/positions", lambda r: ok(state["positions"]))
    server.on("GET", "/api/v5/trade/orders-pending", lambda r: ok(state["orders"]))
    server.on("GET", "/api/v5/trade/orders-algo-pending", lambda r: ok(state["algos"]),
              match={"ordType": "conditional,oco"})
    server.on("POST", "/api/v5/trade/cancel-batch-orders", cancel("orders"))
    server.on("POST", "/api/v5/trade/cancel-algos", cancel("algos"))
    server.on("POST", "/api/v5/trade/batch-orders", place)

    report = await Flattener(venue, retry=RetryPolicy(initial_sec=0.01, max_attempts=3)).run()

    assert (report.flat, report.orders_canceled, report.positions_closed) == (True, 2, 1)


def spot_balance(btc_total: str, btc_free: str, eth_total: str = "0.00001") -> dict:
    detail = lambda ccy, eq, avail: {"ccy": ccy, "eq": eq, "cashBal": eq, "availBal": avail,  # noqa: E731
                                     "frozenBal": str(float(eq) - float(avail)), "uTime": NOW}
    return ok([{"totalEq": "50000", "uTime": NOW, "details": [
        detail("BTC", btc_total, btc_free), detail("ETH", eth_total, eth_total),
        detail("USDT", "1000", "1000")]}])


async def test_spot_balances_are_out_of_scope_unless_configured(server):
    venue = make_venue(server, "okx", market_type="spot", symbols=["BTC/USDT", "ETH/USDT"])
    server.on("GET", "/api/v5/account/balance", spot_balance("0.5", "0.5"))

    assert await venue.fetch_positions() == []
    await venue.close()
    assert not server.calls("GET", "/api/v5/account/balance")


async def test_configured_spot_balances_are_sold_never_beyond_what_is_free(server):
    venue = make_venue(server, "okx", market_type="spot", symbols=["BTC/USDT", "ETH/USDT"],
                       include_spot_balances=True)
    server.on("GET", "/api/v5/account/balance", spot_balance("0.5", "0.3"))  # 0.2 held by an order
    server.on("POST", "/api/v5/trade/batch-orders", placed)

    positions = await venue.fetch_positions()
    assert [(p.symbol, p.side, p.amount) for p in positions] == [("BTC/USDT", "long", 0.5)]  # ETH is dust
    assert await venue.close_position(positions[0]) == 0.3
    await venue.close()

    [order] = [o for r in server.calls("POST", "/api/v5/trade/batch-orders") for o in r.body]
    assert (order["instId"], order["side"], order["ordType"], order["sz"], order["tdMode"]) == (
        "BTC-USDT", "sell", "market", "0.3", "cash")
    assert "reduceOnly" not in order


async def test_without_batch_cancel_each_order_is_cancelled_and_already_gone_is_fine(server, venue):
    venue.exchange.has["cancelOrders"] = False  # as on venues with neither cancel-all nor batch
    server.on("GET", "/api/v5/trade/orders-pending", ok([
        pending("1", "BTC-USDT-SWAP", "buy", "1"), pending("2", "BTC-USDT-SWAP", "buy", "1")]))
    server.on("POST", "/api/v5/trade/cancel-order", lambda r: ok([
        {"ordId": r.body["ordId"], "clOrdId": "", "sCode": "0", "sMsg": ""}]))
    server.on("POST", "/api/v5/trade/cancel-order", {"code": "1", "msg": "", "data": [
        {"ordId": "2", "clOrdId": "", "sCode": "51400",
         "sMsg": "Cancellation failed as the order has been filled, canceled or does not exist."}]},
        match={"ordId": "2"})

    assert await venue.cancel_all_orders() == 1  # what was really cancelled; "2" was already gone
    assert sorted(r.body["ordId"] for r in server.calls("POST", "/api/v5/trade/cancel-order")) == ["1", "2"]
    assert venue.status()["last_error"] is None
