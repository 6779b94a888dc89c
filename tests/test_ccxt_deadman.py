"""Binance's per-symbol dead-man countdown on the real ccxt class against the local stub: a
heartbeat never delays an emergency order, and orders the countdown does not cover are named.
"""

from __future__ import annotations

import asyncio
import copy
import time

from ccxt_stub import fixture, make_venue, running, serve_binance_orders
from test_ccxt_binanceusdm import filled, limit_order, risk


def forty_symbols() -> tuple[dict, list[str]]:
    info = fixture("binanceusdm_exchangeInfo.json")
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    extra = []
    for i in range(38):
        entry = copy.deepcopy(btc)
        entry["symbol"], entry["baseAsset"], entry["pair"] = f"X{i}USDT", f"X{i}", f"X{i}USDT"
        extra.append(entry)
    info["symbols"] = [*info["symbols"], *extra]
    return info, ["BTC/USDT:USDT", "ETH/USDT:USDT", *(f"X{i}/USDT:USDT" for i in range(38))]


async def test_a_forty_symbol_rearm_does_not_delay_a_close_order():
    async with running() as server:
        info, symbols = forty_symbols()
        venue = make_venue(server, "binanceusdm", symbols=symbols, dead_man_timeout_sec=30)
        server.on("GET", "/fapi/v1/exchangeInfo", info)
        server.on("GET", "/fapi/v3/positionRisk", [risk("BTCUSDT", "0.015")])
        server.on("POST", "/fapi/v1/countdownCancelAll", lambda r: {
            "symbol": r.params["symbol"], "countdownTime": r.params["countdownTime"]})
        serve_binance_orders(server, filled)
        try:
            [position] = await venue.fetch_positions()
            ex = venue.exchange
            ex.rateLimit = 50  # binanceusdm's own: weight 10 per countdown call = 0.5 s each
            ex.tokenBucket = None
            ex.init_rest_rate_limiter()
            venue.dead_man.mechanism = "countdown"
            venue.dead_man.timeout_sec = 0.3  # the background re-arm starts after 0.1 s
            venue.dead_man.start()
            for _ in range(500):  # until the re-arm is on its way
                if server.calls("POST", "/fapi/v1/countdownCancelAll"):
                    break
                await asyncio.sleep(0.01)
            started, seen = time.monotonic(), len(server.requests)
            await asyncio.wait_for(venue.close_position(position), 5)
            elapsed = time.monotonic() - started
            order_at = next(i for i, r in enumerate(server.requests)
                            if r.path in ("/fapi/v1/order", "/fapi/v1/batchOrders"))
            beats_before_order = sum(1 for r in server.requests[seen:order_at]
                                     if r.path == "/fapi/v1/countdownCancelAll")
        finally:
            await venue.dead_man.stop()
            await venue.exchange.close()
        # before: 40 countdown calls of weight 10 queued ahead of the close, ~20 s
        assert elapsed < 1.0, elapsed
        assert beats_before_order <= 2, beats_before_order


async def test_orders_on_symbols_the_countdown_does_not_cover_are_named():
    async with running() as server:
        venue = make_venue(server, "binanceusdm", dead_man_timeout_sec=30)
        server.on("GET", "/fapi/v1/openOrders", [
            limit_order(1, "BTCUSDT", "BUY", "0.010", "90000"),
            limit_order(2, "SOLUSDT", "BUY", "1", "100")])
        server.on("GET", "/fapi/v1/openAlgoOrders", [])
        try:
            await venue.fetch_open_orders()
            info = venue.status()["dead_man"]
        finally:
            await venue.exchange.close()
        assert info["mechanism"] == "countdown"
        assert info["uncovered_symbols"] == ["SOL/USDT:USDT"]
