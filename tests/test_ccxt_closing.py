"""Closing orders on the real ccxt classes against the local stub: the venue's *market*-order cap,
exact decimal splits, dust reported as such, and batched close orders.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from ccxt_stub import binance_orders_sent, make_venue, running, serve_binance_orders
from test_ccxt_binanceusdm import filled, risk
from test_ccxt_okx import ok, position

#: OKX's market-order cap for BTC-USDT-SWAP in the fixture (maxMktSz); maxLmtSz is 100,000,000.
OKX_BTC_MAX_MKT = Decimal("12000")


def okx_placer(state: dict):
    """OKX batch-orders: refuses a market order above maxMktSz (51202) like the venue does."""
    def handler(request):
        answers = []
        for item in request.body:
            if item["ordType"] == "market" and Decimal(item["sz"]) > OKX_BTC_MAX_MKT:
                answers.append({"clOrdId": "", "ordId": "", "tag": "", "sCode": "51202",
                                "sMsg": "Market order amount exceeds the maximum amount."})
                continue
            state["open"] -= Decimal(item["sz"])
            answers.append({"clOrdId": "", "ordId": f"o{len(answers)}", "tag": "", "sCode": "0", "sMsg": ""})
        code = "0" if all(a["sCode"] == "0" for a in answers) else (
            "1" if all(a["sCode"] != "0" for a in answers) else "2")
        return {"code": code, "msg": "" if code == "0" else "failed", "data": answers}
    return handler


async def test_okx_close_above_the_market_order_cap_is_split_under_maxMktSz():
    async with running() as server:
        state = {"open": Decimal("15000")}
        server.on("GET", "/api/v5/account/positions",
                  lambda r: ok([position("BTC-USDT-SWAP", format(state["open"], "f"))] if state["open"] else []))
        server.on("GET", "/api/v5/trade/orders-pending", ok([]))
        server.on("GET", "/api/v5/trade/orders-algo-pending", ok([]))
        server.on("POST", "/api/v5/trade/batch-orders", okx_placer(state))
        venue = make_venue(server, "okx")
        try:
            [pos] = await venue.fetch_positions()
            assert pos.amount == 15000
            assert await venue.close_position(pos) == 15000
        finally:
            await venue.close()
        sizes = [Decimal(o["sz"]) for r in server.calls("POST", "/api/v5/trade/batch-orders") for o in r.body]
        assert all(s <= OKX_BTC_MAX_MKT for s in sizes), sizes
        assert sum(sizes) == 15000 and state["open"] == 0
        assert all(o["reduceOnly"] is True for r in server.calls("POST", "/api/v5/trade/batch-orders")
                   for o in r.body)


async def test_split_close_adds_up_to_the_position_exactly_no_float_dust():
    # 240.003 - 2 * 120 in floats is 0.002999…, which truncates to 0.002 and left 0.001 open
    async with running() as server:
        server.on("GET", "/fapi/v3/positionRisk", [risk("BTCUSDT", "240.003")])
        serve_binance_orders(server, filled)
        venue = make_venue(server, "binanceusdm")
        try:
            [pos] = await venue.fetch_positions()
            assert await venue.close_position(pos) == pytest.approx(240.003)
        finally:
            await venue.close()
        quantities = [Decimal(p["quantity"]) for p in binance_orders_sent(server)]
        assert sum(quantities) == Decimal("240.003")
        assert all(q <= 120 for q in quantities)


async def test_dust_below_the_minimum_size_is_reported_as_cannot_be_closed_by_order():
    async with running() as server:
        server.on("GET", "/fapi/v3/positionRisk", [risk("BTCUSDT", "0.0005")])  # min 0.001
        venue = make_venue(server, "binanceusdm")
        try:
            [pos] = await venue.fetch_positions()
            with pytest.raises(Exception) as caught:
                await venue.close_position(pos)
        finally:
            await venue.close()
        assert "cannot be closed by order: 0.0005" in str(caught.value)
        assert binance_orders_sent(server) == []  # nothing sent that the venue must refuse


async def test_concurrent_closes_go_out_five_to_a_binance_batch():
    async with running() as server:
        symbols = ["BTCUSDT", "ETHUSDT"]
        server.on("GET", "/fapi/v3/positionRisk", [
            risk(s, amount, side=side) for s in symbols
            for amount, side in (("0.010", "LONG"), ("-0.020", "SHORT"))
        ])
        serve_binance_orders(server, filled)
        venue = make_venue(server, "binanceusdm")
        try:
            positions = await venue.fetch_positions()
            results = await asyncio.gather(*(venue.close_position(p) for p in positions))
        finally:
            await venue.close()
        assert len(results) == 4 and all(r > 0 for r in results)
        assert len(server.calls("POST", "/fapi/v1/batchOrders")) == 1
        assert not server.calls("POST", "/fapi/v1/order")
        assert sorted((p["symbol"], p["side"], p["positionSide"]) for p in binance_orders_sent(server)) == [
            ("BTCUSDT", "BUY", "SHORT"), ("BTCUSDT", "SELL", "LONG"),
            ("ETHUSDT", "BUY", "SHORT"), ("ETHUSDT", "SELL", "LONG")]


async def test_one_refused_order_in_a_batch_fails_only_its_own_close():
    async with running() as server:
        server.on("GET", "/fapi/v3/positionRisk", [risk("BTCUSDT", "0.010"), risk("ETHUSDT", "0.5")])

        def answer(item):
            if item.params["symbol"] == "ETHUSDT":
                return {"code": -2022, "msg": "ReduceOnly Order is rejected."}
            return filled(item)

        serve_binance_orders(server, answer)
        venue = make_venue(server, "binanceusdm")
        try:
            positions = {p.symbol: p for p in await venue.fetch_positions()}
            btc, eth = await asyncio.gather(
                venue.close_position(positions["BTC/USDT:USDT"]),
                venue.close_position(positions["ETH/USDT:USDT"]), return_exceptions=True)
        finally:
            await venue.close()
        assert btc == pytest.approx(0.010)
        assert isinstance(eth, Exception) and "-2022" in str(eth)


async def test_only_closes_of_one_category_share_a_batch():
    from ess_tui.venues.ccxt.closing import CloseBatcher

    batches: list[list[str]] = []

    async def send_batch(requests):
        batches.append(sorted(r.symbol for r in requests))
        return [{"id": str(i), "symbol": r.symbol, "side": r.side, "amount": float(r.amount), "info": {}}
                for i, r in enumerate(requests)]

    async def send_one(request):
        batches.append([request.symbol])
        return {"id": "1", "info": {}}

    closer = CloseBatcher(size=20, send_batch=send_batch, send_one=send_one)
    await asyncio.gather(
        closer.submit("A/USDT:USDT", "sell", "1", {}, key="linear"),
        closer.submit("B/USDT:USDT", "sell", "1", {}, key="linear"),
        closer.submit("C/USD:BTC", "buy", "1", {}, key="inverse"),
        closer.submit("D/USD:BTC", "buy", "1", {}, key="inverse"),
    )
    assert sorted(batches) == [["A/USDT:USDT", "B/USDT:USDT"], ["C/USD:BTC", "D/USD:BTC"]]


async def test_a_batch_refused_item_by_item_is_resent_order_by_order():
    async with running() as server:
        server.on("GET", "/fapi/v3/positionRisk", [risk("BTCUSDT", "0.010"), risk("ETHUSDT", "0.5")])
        server.on("POST", "/fapi/v1/batchOrders", lambda r: [
            {"code": -1102, "msg": "Mandatory parameter was not sent"} for _ in range(2)])
        server.on("POST", "/fapi/v1/order", filled)
        venue = make_venue(server, "binanceusdm")
        try:
            positions = await venue.fetch_positions()
            results = await asyncio.gather(*(venue.close_position(p) for p in positions))
        finally:
            await venue.close()
        assert sorted(results) == [pytest.approx(0.010), pytest.approx(0.5)]
        assert len(server.calls("POST", "/fapi/v1/order")) == 2
