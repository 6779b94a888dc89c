"""Open orders on the real ccxt classes against the local stub: every page, every book, and the
count of what was really cancelled.
"""

from __future__ import annotations

from ccxt_stub import make_venue, running
from test_ccxt_bybit import listing
from test_ccxt_bybit import ok as bybit_ok
from test_ccxt_bybit import order as bybit_order
from test_ccxt_okx import algo, cancelled, ok, pending


def okx_pages(orders: list[dict]):
    """orders-pending as OKX pages it: newest first, ``limit`` (≤100) a page, ``after`` an id."""
    ordered = sorted(orders, key=lambda o: int(o["ordId"]), reverse=True)

    def handler(request):
        after = request.params.get("after")
        limit = min(int(request.params.get("limit", 100)), 100)
        rest = [o for o in ordered if after is None or int(o["ordId"]) < int(after)]
        return ok(rest[:limit])
    return handler


def bybit_pages(orders: list[dict], per_page: int = 20):
    """order/realtime paged by ``cursor`` (Bybit answers at most 20 unless asked for more)."""
    def handler(request):
        start = int(request.params.get("cursor") or 0)
        limit = min(int(request.params.get("limit", per_page)), per_page)
        page = orders[start:start + limit]
        more = start + limit < len(orders)
        return bybit_ok({"list": page, "nextPageCursor": str(start + limit) if more else "",
                         "category": "linear"})
    return handler


async def test_okx_lists_past_the_first_page_of_100_and_cancels_every_one():
    async with running() as server:
        regular = [pending(str(1000 + i), "BTC-USDT-SWAP" if i % 2 else "ETH-USDT-SWAP", "buy", "1")
                   for i in range(250)]
        server.on("GET", "/api/v5/account/positions", ok([]))
        server.on("GET", "/api/v5/trade/orders-pending", okx_pages(regular))
        server.on("GET", "/api/v5/trade/orders-algo-pending", ok([]))
        server.on("POST", "/api/v5/trade/cancel-batch-orders", cancelled)
        venue = make_venue(server, "okx")
        try:
            assert len(await venue.fetch_open_orders()) == 250
            assert await venue.cancel_all_orders() == 250
        finally:
            await venue.close()
        ids = {i["ordId"] for r in server.calls("POST", "/api/v5/trade/cancel-batch-orders") for i in r.body}
        assert ids == {o["ordId"] for o in regular}


async def test_bybit_lists_every_page_and_cancels_account_wide_counting_what_it_says():
    orders = [bybit_order(f"o{i}", "BTCUSDT" if i % 3 else "SOLUSDT", "Buy", "0.010") for i in range(45)]
    async with running() as server:
        server.on("GET", "/v5/position/list", bybit_ok({"list": [], "category": "linear"}))
        server.on("GET", "/v5/order/realtime", listing([]))
        server.on("GET", "/v5/order/realtime", bybit_pages(orders),
                  match={"settleCoin": "USDT"})
        # the venue cancels what it has: the 45 listed and one placed since the listing
        answer = [{"orderId": o["orderId"], "orderLinkId": ""} for o in orders]
        answer.append({"orderId": "late-1", "orderLinkId": ""})
        server.on("POST", "/v5/order/cancel-all", bybit_ok({"list": []}))
        server.on("POST", "/v5/order/cancel-all", bybit_ok({"list": answer}),
                  match={"settleCoin": "USDT"})
        venue = make_venue(server, "bybit", symbols=["BTC/USDT:USDT"])
        try:
            listed = await venue.fetch_open_orders()
            assert len(listed) == 30  # SOLUSDT is not in the fixture's markets: out of scope
            assert await venue.cancel_all_orders() == 46  # all the venue says it cancelled
        finally:
            await venue.close()
        cursors = [r.params.get("cursor") for r in server.calls("GET", "/v5/order/realtime")
                   if r.params.get("settleCoin") == "USDT" and "orderFilter" not in r.params]
        assert cursors[:3] == [None, "20", "40"]


async def test_okx_one_stale_id_does_not_fail_the_batch_the_rest_is_cancelled():
    async with running() as server:
        server.on("GET", "/api/v5/account/positions", ok([]))
        server.on("GET", "/api/v5/trade/orders-pending", ok([
            pending("1", "BTC-USDT-SWAP", "buy", "1"), pending("2", "BTC-USDT-SWAP", "buy", "1"),
            pending("3", "BTC-USDT-SWAP", "buy", "1")]))
        server.on("GET", "/api/v5/trade/orders-algo-pending", ok([]))

        def batch(request):
            if any(i["ordId"] == "2" for i in request.body):  # all-or-nothing, as the review saw
                return {"code": "1", "msg": "All operations failed", "data": [
                    {"ordId": "2", "clOrdId": "", "sCode": "51400",
                     "sMsg": "Cancellation failed as the order has been filled, canceled or does not exist."}]}
            return cancelled(request)

        server.on("POST", "/api/v5/trade/cancel-batch-orders", batch)
        server.on("POST", "/api/v5/trade/cancel-order", lambda r: ok([
            {"ordId": r.body["ordId"], "clOrdId": "", "sCode": "0", "sMsg": ""}]))
        server.on("POST", "/api/v5/trade/cancel-order", {"code": "1", "msg": "", "data": [
            {"ordId": "2", "clOrdId": "", "sCode": "51400", "sMsg": "does not exist"}]}, match={"ordId": "2"})
        venue = make_venue(server, "okx")
        try:
            assert await venue.cancel_all_orders() == 2
        finally:
            await venue.close()
        singles = sorted(r.body["ordId"] for r in server.calls("POST", "/api/v5/trade/cancel-order"))
        assert singles == ["1", "2", "3"]


async def test_okx_spot_algo_orders_are_listed_and_cancelled():
    async with running() as server:
        spot_algo = {**algo("a9", "BTC-USDT", "sell", "0.1"), "instType": "SPOT", "tdMode": "cash"}
        oco = {**algo("a10", "ETH-USDT", "sell", "1", ord_type="oco"), "instType": "SPOT"}
        server.on("GET", "/api/v5/trade/orders-pending", ok([]))
        server.on("GET", "/api/v5/trade/orders-algo-pending", ok([]))
        server.on("GET", "/api/v5/trade/orders-algo-pending", ok([spot_algo, oco]),
                  match={"ordType": "conditional,oco"})
        server.on("POST", "/api/v5/trade/cancel-algos", cancelled)
        venue = make_venue(server, "okx", market_type="spot", symbols=["BTC/USDT", "ETH/USDT"])
        try:
            assert {o.id for o in await venue.fetch_open_orders()} == {"a9", "a10"}
            assert await venue.cancel_all_orders() == 2
        finally:
            await venue.close()
        algos = {(i["instId"], i["algoId"]) for r in server.calls("POST", "/api/v5/trade/cancel-algos")
                 for i in r.body}
        assert algos == {("BTC-USDT", "a9"), ("ETH-USDT", "a10")}


async def test_bybit_spot_tpsl_and_oco_orders_are_listed_and_cancelled():
    async with running() as server:
        tpsl = {**bybit_order("t1", "BTCUSDT", "Sell", "0.1", trigger="80000", stop_type="tpslOrder",
                              status="Untriggered"), "orderFilter": "tpslOrder"}
        oco = {**bybit_order("c1", "ETHUSDT", "Sell", "1", trigger="3000", stop_type="OcoOrder",
                             status="Untriggered"), "orderFilter": "OcoOrder"}
        server.on("GET", "/v5/order/realtime", listing([]))
        server.on("GET", "/v5/order/realtime", listing([tpsl]), match={"orderFilter": "tpslOrder"})
        server.on("GET", "/v5/order/realtime", listing([oco]), match={"orderFilter": "OcoOrder"})
        server.on("POST", "/v5/order/cancel-all", bybit_ok({"success": "1"}))
        venue = make_venue(server, "bybit", market_type="spot", symbols=["BTC/USDT", "ETH/USDT"])
        try:
            assert {o.id for o in await venue.fetch_open_orders()} == {"t1", "c1"}
            assert await venue.cancel_all_orders() == 2
        finally:
            await venue.close()
        filters = {(r.body.get("symbol"), r.body.get("orderFilter", "Order"))
                   for r in server.calls("POST", "/v5/order/cancel-all")}
        assert {("BTCUSDT", "tpslOrder"), ("ETHUSDT", "OcoOrder"), ("BTCUSDT", "StopOrder")} <= filters
