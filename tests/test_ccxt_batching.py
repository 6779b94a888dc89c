"""100 positions flat at 20 requests a second: what the venue batches goes out batched.

The real ccxt classes against the local stub, the rate limiter at a flat 20 requests/s (every
call costs one token, 50 ms apart). Before batching one close order was one call: 100 positions
needed 100 close calls (5 s at 20 req/s on their own). Run with ``-s`` to see the figures:
``.venv/bin/python -m pytest -q -s tests/test_ccxt_batching.py``.
"""

from __future__ import annotations

import copy
import time

from ccxt_stub import fixture, make_venue, running
from ess_tui.engine.flatten import Flattener, RetryPolicy
from test_ccxt_bybit import listing, ok as bybit_ok, position as bybit_position
from test_ccxt_okx import ok, position

N = 100


def flat_rate(exchange, per_second: float = 20.0) -> None:
    """ccxt's limiter at a flat ``per_second``: every call one token, whatever its weight."""
    exchange.rateLimit = 1000.0 / per_second
    exchange.tokenBucket = None
    exchange.init_rest_rate_limiter()
    exchange.calculate_rate_limiter_cost = lambda *a, **k: 1


def okx_markets() -> tuple[dict, list[str]]:
    info = fixture("okx_instruments_swap.json")
    btc = info["data"][0]
    for i in range(N):
        entry = copy.deepcopy(btc)
        entry.update(instId=f"X{i}-USDT-SWAP", uly=f"X{i}-USDT", instFamily=f"X{i}-USDT", ctValCcy=f"X{i}")
        info["data"].append(entry)
    return info, [f"X{i}/USDT:USDT" for i in range(N)]


async def _flatten(venue) -> tuple[object, float]:
    started = time.monotonic()
    report = await Flattener(venue, retry=RetryPolicy(initial_sec=0.01, max_attempts=3)).run()
    return report, time.monotonic() - started


async def test_okx_100_positions_flat_in_twenty_calls_at_20_per_second():
    async with running() as server:
        info, symbols = okx_markets()
        open_ = {s.replace("/USDT:USDT", "-USDT-SWAP") for s in symbols}
        venue = make_venue(server, "okx", symbols=symbols[:2])
        server.on("GET", "/api/v5/public/instruments", info)
        server.on("GET", "/api/v5/account/positions", lambda r: ok([position(i, "3") for i in sorted(open_)]))
        server.on("GET", "/api/v5/trade/orders-pending", ok([]))
        server.on("GET", "/api/v5/trade/orders-algo-pending", ok([]))

        def place(request):
            for item in request.body:
                open_.discard(item["instId"])
            return ok([{"clOrdId": "", "ordId": f"o{k}", "tag": "", "sCode": "0", "sMsg": ""}
                       for k, _ in enumerate(request.body)])

        server.on("POST", "/api/v5/trade/batch-orders", place)
        try:
            await venue.call("load_markets")
            flat_rate(venue.exchange)
            before = len(server.requests)
            report, elapsed = await _flatten(venue)
        finally:
            await venue.exchange.close()
        calls = len(server.requests) - before
        batches = server.calls("POST", "/api/v5/trade/batch-orders")
        print(f"\nokx: {N} positions flat in {elapsed:.2f}s, {calls} calls at 20 req/s "
              f"({len(batches)} batch-order calls)")
        assert report.flat is True and report.positions_closed == N
        assert len(batches) == 5 and all(len(b.body) == 20 for b in batches)
        assert calls <= 20  # (calls - 1) × 50 ms ≤ 1 s at a flat 20 requests a second


def bybit_markets() -> tuple[dict, list[str]]:
    info = fixture("bybit_instruments_linear.json")
    btc = info["result"]["list"][0]
    for i in range(N):
        entry = copy.deepcopy(btc)
        entry.update(symbol=f"X{i}USDT", baseCoin=f"X{i}")
        info["result"]["list"].append(entry)
    return info, [f"X{i}/USDT:USDT" for i in range(N)]


async def test_bybit_100_positions_flat_with_20_orders_a_batch():
    async with running() as server:
        info, symbols = bybit_markets()
        open_ = {s.replace("/USDT:USDT", "USDT") for s in symbols}
        venue = make_venue(server, "bybit", symbols=symbols[:2])
        server.on("GET", "/v5/market/instruments-info", info, match={"category": "linear"})
        server.on("GET", "/v5/position/list", bybit_ok({"list": [], "category": "linear"}))
        server.on("GET", "/v5/position/list", lambda r: bybit_ok({"list": [
            bybit_position(s, "Buy", "0.015") for s in sorted(open_)], "category": "linear"}),
            match={"settleCoin": "USDT"})
        server.on("GET", "/v5/order/realtime", listing([]))
        server.on("POST", "/v5/order/cancel-all", bybit_ok({"list": []}))

        def place(request):
            items = request.body["request"]
            for item in items:
                open_.discard(item["symbol"])
            return {"retCode": 0, "retMsg": "OK", "result": {"list": [
                {"category": "linear", "symbol": i["symbol"], "orderId": f"b{k}", "orderLinkId": "",
                 "createAt": "1767225600000"} for k, i in enumerate(items)]},
                "retExtInfo": {"list": [{"code": 0, "msg": "OK"} for _ in items]}, "time": 1}

        server.on("POST", "/v5/order/create-batch", place)
        try:
            await venue.call("load_markets")
            flat_rate(venue.exchange)
            before = len(server.requests)
            report, elapsed = await _flatten(venue)
        finally:
            await venue.exchange.close()
        calls = len(server.requests) - before
        batches = server.calls("POST", "/v5/order/create-batch")
        print(f"\nbybit: {N} positions flat in {elapsed:.2f}s, {calls} calls at 20 req/s "
              f"({len(batches)} create-batch calls)")
        assert report.flat is True and report.positions_closed == N
        assert len(batches) == 5 and calls <= 20
        assert all(i["reduceOnly"] is True for b in batches for i in b.body["request"])
