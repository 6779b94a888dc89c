"""Equity and the execution record from the venue, through the real ccxt classes, into the
market engineer's AccountMetrics and the lead's evaluators."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from ccxt_stub import running, make_venue
from ess_tui.engine.evaluators import DrawdownEmergencyEvaluator, ExecutionErrorEmergencyEvaluator
from ess_tui.engine.venue import VenueUnavailable
from ess_tui.market.metrics import AccountMetrics
from ess_tui.venues.ccxt.account import CcxtAccount


def ms(minutes_ago: float) -> int:
    return int((time.time() - minutes_ago * 60) * 1000)


def binance_order(order_id: int, symbol: str, orig: str, status: str, filled: str, minutes_ago: float,
                  side: str = "SELL") -> dict:
    return {
        "orderId": order_id, "symbol": symbol, "status": status, "clientOrderId": f"c{order_id}",
        "price": "0", "avgPrice": "95000", "origQty": "0.010", "executedQty": filled,
        "cumQuote": "950", "timeInForce": "GTC", "type": "MARKET" if status == "FILLED" else "LIMIT",
        "reduceOnly": orig != "LIMIT", "closePosition": False, "side": side, "positionSide": "BOTH",
        "stopPrice": "80000" if orig != "LIMIT" else "0", "workingType": "CONTRACT_PRICE",
        "priceProtect": False, "origType": orig, "time": ms(minutes_ago), "updateTime": ms(minutes_ago),
    }


class MemoryPolicies:
    def __init__(self) -> None:
        self.data: dict = {}

    async def get_policy(self, key):
        return self.data.get(key)

    async def set_policy(self, key, value):
        self.data[key] = value


@pytest.fixture
async def server():
    async with running() as srv:
        yield srv


async def test_binance_stop_fills_and_rejections_are_counted_once_in_their_window(server):
    venue = make_venue(server, "binanceusdm")
    server.on("GET", "/fapi/v1/allOrders", lambda r: {
        "BTCUSDT": [
            binance_order(1, "BTCUSDT", "STOP_MARKET", "FILLED", "0.010", minutes_ago=3),
            binance_order(2, "BTCUSDT", "TAKE_PROFIT_MARKET", "FILLED", "0.010", minutes_ago=4),
            binance_order(3, "BTCUSDT", "LIMIT", "REJECTED", "0", minutes_ago=5),
            binance_order(4, "BTCUSDT", "STOP_MARKET", "FILLED", "0.010", minutes_ago=40),
        ],
        "ETHUSDT": [binance_order(5, "ETHUSDT", "TRAILING_STOP_MARKET", "FILLED", "1", minutes_ago=1)],
    }[r.params["symbol"]])
    account = CcxtAccount(venue, poll_interval_sec=60)
    since = datetime.now(timezone.utc) - timedelta(minutes=15)

    assert await account.stop_loss_hits(since) == 2  # the take-profit and the old one are not
    assert await account.order_failures(since) == 1
    assert await account.stop_loss_hits(since - timedelta(hours=1)) == 3
    # one read per poll interval, each symbol's history asked from a start time
    reads = server.calls("GET", "/fapi/v1/allOrders")
    assert sorted(r.params["symbol"] for r in reads) == ["BTCUSDT", "ETHUSDT"]
    assert all(int(r.params["startTime"]) < ms(60 * 23) for r in reads)

    await account.refresh(force=True)  # the same orders again: still counted once
    assert await account.stop_loss_hits(since) == 2
    await venue.close()


async def test_bybit_conditional_stop_loss_fill_is_a_hit(server):
    venue = make_venue(server, "bybit")
    base = {"orderLinkId": "", "price": "0", "qty": "0.01", "side": "Sell", "positionIdx": 0,
            "avgPrice": "95000", "leavesQty": "0", "cumExecValue": "950", "cumExecFee": "0.5",
            "timeInForce": "IOC", "orderType": "Market", "triggerPrice": "80000",
            "reduceOnly": True, "closeOnTrigger": True, "createdTime": str(ms(2)),
            "updatedTime": str(ms(2))}
    server.on("GET", "/v5/order/history", lambda r: {"retCode": 0, "retMsg": "OK", "result": {
        "category": "linear", "nextPageCursor": "",
        "list": [{**base, "orderId": "sl1", "symbol": r.params["symbol"], "orderStatus": "Filled",
                  "stopOrderType": "StopLoss", "cumExecQty": "0.01"},
                 {**base, "orderId": "tp1", "symbol": r.params["symbol"], "orderStatus": "Filled",
                  "stopOrderType": "TakeProfit", "cumExecQty": "0.01"}]
        if r.params["symbol"] == "BTCUSDT" else []}})
    account = CcxtAccount(venue)

    assert await account.stop_loss_hits(datetime.now(timezone.utc) - timedelta(minutes=15)) == 1
    await venue.close()


async def test_account_feeds_metrics_and_evaluators(server):
    venue = make_venue(server, "okx")
    equity = {"eq": "10000"}
    server.on("GET", "/api/v5/account/balance", lambda r: {"code": "0", "msg": "", "data": [{
        "totalEq": equity["eq"], "uTime": str(ms(0)),
        "details": [{"ccy": "USDT", "eq": equity["eq"], "cashBal": "10000", "uTime": str(ms(0))}]}]})
    server.on("GET", "/api/v5/trade/orders-history", lambda r: {"code": "0", "msg": "", "data": [
        {"instType": "SWAP", "instId": r.params["instId"], "ordId": f"{r.params['instId']}-{i}",
         "ordType": "market", "side": "sell", "sz": "1", "accFillSz": "1", "fillSz": "1",
         "avgPx": "95000", "state": "filled", "source": "7", "pnl": "-12.5", "reduceOnly": "true",
         "tdMode": "cross", "posSide": "net", "cTime": str(ms(2)), "uTime": str(ms(2))}
        for i in range(2)]})
    account = CcxtAccount(venue)
    metrics = AccountMetrics(account.equity, account, MemoryPolicies())
    drawdown = DrawdownEmergencyEvaluator(metrics, max_daily_loss_percent=5, max_equity_drawdown_percent=8)
    execution = ExecutionErrorEmergencyEvaluator(metrics, max_sl_hits_per_period=3, period_minutes=15)

    assert await drawdown.check() == (False, None)
    equity["eq"] = "9000"  # -10% from the peak and the day's open
    fired, reason = await drawdown.check()
    assert fired and "Daily PnL catastrophic: -10.00%" in reason
    fired, reason = await execution.check()  # 2 symbols × 2 stop-loss fills at a loss
    assert fired and reason == "Excessive SL hits: 4 in 15 min"
    await venue.close()


async def test_a_failed_read_is_an_error_not_an_all_clear(server):
    venue = make_venue(server, "binanceusdm")
    server.on("GET", "/fapi/v1/allOrders", "<html>503 Service Unavailable</html>", status=503)
    account = CcxtAccount(venue)

    with pytest.raises(VenueUnavailable):
        await account.stop_loss_hits(datetime.now(timezone.utc) - timedelta(minutes=15))
    await venue.close()
