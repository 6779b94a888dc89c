"""gate (USDT-settled perpetuals) through the real ccxt class against the local stub.

Gate keeps price-triggered orders (stop loss / take profit) in a book of their own; cancel-all is
per contract in each book; amounts are contracts; a close is a reduce-only IOC order at price 0
(Gate's market order). ccxt has no dead-man switch for Gate, so none is claimed.
"""

from __future__ import annotations

import pytest

from ccxt_stub import make_venue, running
from ess_tui.engine.flatten import Flattener, RetryPolicy

API = "/api/v4/futures/usdt"


def position(contract: str, size: int, entry: str = "95000") -> dict:
    return {"user": 1, "contract": contract, "size": size, "leverage": "10", "risk_limit": "1000000",
            "leverage_max": "100", "maintenance_rate": "0.005", "value": "100", "margin": "10",
            "entry_price": entry, "liq_price": "0", "mark_price": entry, "unrealised_pnl": "1",
            "realised_pnl": "0", "history_pnl": "0", "last_close_pnl": "0", "realised_point": "0",
            "history_point": "0", "adl_ranking": 5, "pending_orders": 0, "close_order": None,
            "mode": "single", "cross_leverage_limit": "0", "update_time": 1767225600}


def order(order_id: int, contract: str, size: int, price: str = "90000") -> dict:
    return {"id": order_id, "user": 1, "contract": contract, "create_time": 1767225600, "size": size,
            "left": size, "price": price, "fill_price": "0", "status": "open", "tif": "gtc",
            "is_reduce_only": False, "is_close": False, "is_liq": False, "text": "api",
            "finish_as": "", "iceberg": 0}


def trigger(order_id: int, contract: str, size: int, price: str) -> dict:
    return {"id": order_id, "user": 1, "create_time": 1767225600, "status": "open",
            "initial": {"contract": contract, "size": size, "price": "0", "tif": "ioc", "text": "api",
                        "iceberg": 0, "is_close": False, "is_reduce_only": True},
            "trigger": {"strategy_type": 0, "price_type": 0, "price": price, "rule": 1, "expiration": 0}}


def filled(request) -> dict:
    b = request.body
    return {"id": 99, "contract": b["contract"], "size": b["size"], "left": 0, "price": "0",
            "status": "finished", "finish_as": "filled", "tif": "ioc", "create_time": 1767225600,
            "is_reduce_only": True, "fill_price": "95000", "text": "api"}


@pytest.fixture
async def server():
    async with running() as srv:
        srv.on("GET", "/api/v4/account/detail", {"user_id": 1, "key": {"mode": 1}})
        srv.on("GET", f"{API}/positions", [])
        srv.on("GET", f"{API}/orders", [])
        srv.on("GET", f"{API}/price_orders", [])
        yield srv


@pytest.fixture
async def venue(server):
    v = make_venue(server, "gate")
    yield v
    await v.close()


async def test_price_triggered_orders_are_listed_and_each_book_cancelled(server, venue):
    server.on("GET", f"{API}/orders", [order(11, "BTC_USDT", 10)])
    server.on("GET", f"{API}/price_orders", [trigger(21, "ETH_USDT", -30, "3500")])
    server.on("DELETE", f"{API}/orders", [])
    server.on("DELETE", f"{API}/price_orders", [])

    orders = {o.id: o for o in await venue.fetch_open_orders()}
    assert orders["21"].kind == "stop" and orders["21"].symbol == "ETH/USDT:USDT"
    assert await venue.cancel_all_orders() == 2

    cancels = sorted((r.path, r.params["contract"]) for r in server.requests if r.method == "DELETE")
    assert cancels == [(f"{API}/orders", "BTC_USDT"), (f"{API}/orders", "ETH_USDT"),
                       (f"{API}/price_orders", "BTC_USDT"), (f"{API}/price_orders", "ETH_USDT")]


async def test_open_orders_past_the_first_page_of_100_are_read(server, venue):
    many = [order(1000 + i, "BTC_USDT", 1) for i in range(230)]
    server.on("GET", f"{API}/orders", lambda r: many[int(r.params.get("offset", 0)):][:int(r.params["limit"])])
    assert len(await venue.fetch_open_orders()) == 230
    offsets = [r.params.get("offset") for r in server.calls("GET", f"{API}/orders")]
    assert offsets == [None, "100", "200"]


async def test_close_is_a_reduce_only_ioc_market_order_in_contracts(server, venue):
    server.on("GET", f"{API}/positions", [position("BTC_USDT", 50), position("ETH_USDT", -30, "3000")])
    server.on("POST", f"{API}/orders", filled)

    for p in await venue.fetch_positions():
        await venue.close_position(p)

    sent = sorted((r.body["contract"], r.body["size"], r.body["price"], r.body["tif"], r.body["reduce_only"])
                  for r in server.calls("POST", f"{API}/orders"))
    assert sent == [("BTC_USDT", -50, "0", "ioc", True), ("ETH_USDT", 30, "0", "ioc", True)]


async def test_no_dead_man_switch_is_claimed(server, venue):
    assert not venue.dead_man_supported
    assert "not used" in venue.status()["dead_man"]["note"]


async def test_engine_flatten_loop_goes_flat_on_gate(server, venue):
    state = {"positions": [position("BTC_USDT", 50)], "orders": [order(11, "BTC_USDT", 10)],
             "triggers": [trigger(21, "BTC_USDT", -50, "80000")]}

    def cancel(book):
        def handler(request):
            state[book] = []
            return []
        return handler

    def place(request):
        state["positions"] = []
        return filled(request)

    server.on("GET", f"{API}/positions", lambda r: state["positions"])
    server.on("GET", f"{API}/orders", lambda r: state["orders"])
    server.on("GET", f"{API}/price_orders", lambda r: state["triggers"])
    server.on("DELETE", f"{API}/orders", cancel("orders"))
    server.on("DELETE", f"{API}/price_orders", cancel("triggers"))
    server.on("POST", f"{API}/orders", place)

    report = await Flattener(venue, retry=RetryPolicy(initial_sec=0.01, max_attempts=3)).run()

    assert (report.flat, report.orders_canceled, report.positions_closed) == (True, 2, 1)
