"""The ccxt ticker feed into the real FeedMonitor: polling over the stubbed REST of okx and
binanceusdm, the websocket path on a ccxt.pro instance, and the fall-back from one to the other."""

from __future__ import annotations

import asyncio
import time

import ccxt
import pytest

from ccxt_stub import running, serve_markets
from ess_tui.market.feed import FeedMonitor
from ess_tui.venues.ccxt.config import CcxtVenueConfig
from ess_tui.venues.ccxt.feed import CcxtTickerFeed
from ess_tui.venues.ccxt.venue import build_exchange


def now_ms(offset: float = 0.0) -> int:
    return int((time.time() + offset) * 1000)


def okx_ticker(inst: str, bid: str, ask: str, last: str, ts: int) -> dict:
    return {"instType": "SWAP", "instId": inst, "last": last, "lastSz": "1", "askPx": ask,
            "askSz": "10", "bidPx": bid, "bidSz": "5", "open24h": last, "high24h": last,
            "low24h": last, "volCcy24h": "1", "vol24h": "1", "ts": str(ts), "sodUtc0": last,
            "sodUtc8": last}


@pytest.fixture
async def server():
    async with running() as srv:
        yield srv


def keyless(server, exchange_id: str, *, websocket: bool = False, **config):
    cfg = CcxtVenueConfig(exchange=exchange_id, symbols=["BTC/USDT:USDT", "ETH/USDT:USDT"], **config)
    exchange = server.attach(build_exchange(cfg, {}, websocket=websocket))
    serve_markets(server, exchange_id)
    return exchange


async def wait_for(predicate, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


async def test_polled_okx_tickers_feed_the_monitor_and_bad_data_is_caught(server):
    exchange = keyless(server, "okx")
    await exchange.load_markets()
    stamp = now_ms(-1)
    server.on("GET", "/api/v5/market/tickers", {"code": "0", "msg": "", "data": [
        okx_ticker("BTC-USDT-SWAP", "95500", "95500.2", "95500.1", stamp),
        okx_ticker("ETH-USDT-SWAP", "3000", "3000.1", "3000.05", stamp),
    ]})
    monitor = FeedMonitor(symbols=["BTC/USDT:USDT", "ETH/USDT:USDT"])
    feed = CcxtTickerFeed(exchange, ["BTC/USDT:USDT", "ETH/USDT:USDT"], monitor.on_tick,
                          poll_interval_sec=0.02, websocket=False)
    assert feed.mode == "polling"
    feed.start()
    await wait_for(lambda: monitor.ticks_seen >= 2)
    assert not monitor.is_corrupted()
    assert monitor.get_last_update_time().timestamp() == pytest.approx(stamp / 1000)
    assert server.calls("GET", "/api/v5/market/tickers")[0].params["instType"] == "SWAP"

    # the venue now sends a crossed book on ETH: the feed passes it on, the monitor catches it
    server.on("GET", "/api/v5/market/tickers", {"code": "0", "msg": "", "data": [
        okx_ticker("ETH-USDT-SWAP", "3001", "3000.1", "3000.05", now_ms())]})
    await wait_for(monitor.is_corrupted)
    assert "ETH/USDT:USDT: crossed book" in monitor.corruption_reason()
    await feed.stop()
    await exchange.close()


async def test_binance_futures_quote_is_assembled_from_ticker_and_book_ticker(server):
    exchange = keyless(server, "binanceusdm")
    await exchange.load_markets()
    last_at, book_at = now_ms(-2), now_ms(-1)
    server.on("GET", "/fapi/v1/ticker/24hr", [
        {"symbol": "BTCUSDT", "lastPrice": "95500.10", "openTime": last_at - 86_400_000,
         "closeTime": last_at, "volume": "1", "quoteVolume": "1"}])
    server.on("GET", "/fapi/v1/ticker/bookTicker", [
        {"symbol": "BTCUSDT", "bidPrice": "95500.00", "bidQty": "1", "askPrice": "95500.20",
         "askQty": "2", "time": book_at}])
    ticks = []
    feed = CcxtTickerFeed(exchange, ["BTC/USDT:USDT"], ticks.append, poll_interval_sec=0.02,
                          websocket=False)
    feed.start()
    await wait_for(lambda: ticks)
    await feed.stop()
    await exchange.close()

    tick = ticks[0]
    assert (tick.symbol, tick.bid, tick.ask, tick.last) == ("BTC/USDT:USDT", 95500.0, 95500.2, 95500.1)
    assert tick.timestamp.timestamp() == pytest.approx(book_at / 1000)  # the newer half
    assert feed.status()["split_book"] is True


async def test_websocket_stream_falls_back_to_polling_after_repeated_failures(server):
    exchange = keyless(server, "okx", websocket=True)
    assert exchange.has["watchTickers"] is True
    await exchange.load_markets()
    stamp = now_ms(-1)
    pushes = [{"BTC/USDT:USDT": {"symbol": "BTC/USDT:USDT", "bid": 1.0, "ask": 1.1, "last": 1.05,
                                 "timestamp": stamp}}]

    async def watch_tickers(symbols):  # the websocket layer, stubbed like the HTTP one
        await asyncio.sleep(0)
        if pushes:
            return pushes.pop()
        raise ccxt.NetworkError("okx websocket closed with code 1006")

    exchange.watch_tickers = watch_tickers
    server.on("GET", "/api/v5/market/tickers", {"code": "0", "msg": "", "data": [
        okx_ticker("BTC-USDT-SWAP", "2", "2.1", "2.05", now_ms())]})
    monitor = FeedMonitor()
    feed = CcxtTickerFeed(exchange, ["BTC/USDT:USDT"], monitor.on_tick, poll_interval_sec=0.02,
                          max_backoff_sec=0.01)
    assert feed.mode == "websocket"
    feed.start()
    await wait_for(lambda: feed.mode == "polling" and monitor.ticks_seen >= 2)
    await feed.stop()
    await exchange.close()
    assert not monitor.is_corrupted()
    assert "1006" in feed.status()["last_error"]


def test_for_config_builds_a_keyless_instance_of_the_same_environment():
    cfg = CcxtVenueConfig(exchange="bybit", symbols=["BTC/USDT:USDT"], demo_trading=True)
    feed = CcxtTickerFeed.for_config(cfg, lambda tick: None)
    assert not feed.exchange.apiKey and not feed.exchange.secret
    assert feed.mode == "websocket" and "https://api-demo." in str(feed.exchange.urls["api"])
