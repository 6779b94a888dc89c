"""Error paths on the three venues: 401, 429, 503 and timeouts, mapped onto the VenueError family,
retried (or not) by the engine's flatten loop, and never carrying key material anywhere."""

from __future__ import annotations

import logging

import pytest

from ccxt_stub import running, ENV, make_venue
from ess_tui.engine.flatten import Flattener, RetryPolicy
from ess_tui.engine.venue import (
    VenueAuthError,
    VenueRateLimited,
    VenueRejected,
    VenueTimeout,
    VenueUnavailable,
)

#: Per venue: the private endpoint fetch_positions calls, its empty answer, and the venue's own
#: error bodies for a rejected key, a rate limit and an outage.
VENUES = {
    "binanceusdm": {
        "path": "/fapi/v3/positionRisk",
        "empty": [],
        "401": {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."},
        "429": {"code": -1003, "msg": "Too many requests; current limit is 2400 requests per minute."},
        "503": "<html><body>Service Unavailable</body></html>",
    },
    "bybit": {
        "path": "/v5/position/list",
        "empty": {"retCode": 0, "retMsg": "OK", "result": {"list": []}},
        "401": {"retCode": 10003, "retMsg": "API key is invalid.", "result": {}},
        "429": {"retCode": 10006, "retMsg": "Too many visits!", "result": {}},
        "503": "<html><body>503 Service Temporarily Unavailable</body></html>",
    },
    "okx": {
        "path": "/api/v5/account/positions",
        "empty": {"code": "0", "msg": "", "data": []},
        "401": {"code": "50111", "msg": "Invalid OK-ACCESS-KEY", "data": []},
        "429": {"code": "50011", "msg": "Too Many Requests", "data": []},
        "503": {"code": "50001", "msg": "Service temporarily unavailable. Please try again later.", "data": []},
    },
}

EXPECTED = {"401": VenueAuthError, "429": VenueRateLimited, "503": VenueUnavailable}


@pytest.fixture
async def server():
    async with running(strict=False) as srv:
        yield srv


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for value in ENV.values():
            assert value not in text
        assert "signature=" not in text and "sign=" not in text


@pytest.mark.parametrize("exchange_id", sorted(VENUES))
@pytest.mark.parametrize("status", ["401", "429", "503"])
async def test_http_errors_map_onto_venue_errors(server, exchange_id, status, caplog):
    spec = VENUES[exchange_id]
    venue = make_venue(server, exchange_id)
    server.on("GET", spec["path"], spec[status], status=int(status))
    caplog.set_level(logging.DEBUG)

    with pytest.raises(EXPECTED[status]) as info:
        await venue.fetch_positions()
    await venue.close()

    err = info.value
    assert err.retryable is (status != "401") and err.venue == exchange_id
    assert err.call == "fetch_positions" and str(err).startswith(
        "cannot flatten: API key rejected (" if status == "401" else f"{exchange_id} fetch_positions:")
    assert err.__cause__ is None and err.__suppress_context__
    status_panel = venue.status()
    assert status_panel["last_error"] == str(err) and status_panel["auth_failed"] is (status == "401")
    assert_no_secrets(str(err), repr(err), repr(status_panel), repr(venue), repr(venue.config), caplog.text)


@pytest.mark.parametrize("exchange_id", sorted(VENUES))
async def test_auth_error_in_the_body_of_a_200_is_still_an_auth_error(server, exchange_id, caplog):
    spec = VENUES[exchange_id]
    venue = make_venue(server, exchange_id)
    server.on("GET", spec["path"], spec["401"], status=200 if exchange_id != "binanceusdm" else 401)

    with pytest.raises(VenueAuthError, match="cannot flatten: API key rejected"):
        await venue.fetch_positions()
    await venue.close()
    loud = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert loud and "cannot flatten: API key rejected" in loud[0].getMessage()


@pytest.mark.parametrize("exchange_id", sorted(VENUES))
async def test_a_venue_that_does_not_answer_in_time_is_a_timeout(server, exchange_id):
    spec = VENUES[exchange_id]
    venue = make_venue(server, exchange_id)
    venue.exchange.timeout = 150  # ms
    server.on("GET", spec["path"], spec["empty"], delay=2.0)

    with pytest.raises(VenueTimeout, match="timed out") as info:
        await venue.fetch_positions()
    await venue.close()
    assert info.value.retryable
    assert_no_secrets(str(info.value))


async def test_flatten_loop_stops_on_a_rejected_key_and_says_so(server):
    venue = make_venue(server, "okx")
    server.on("GET", "/api/v5/account/positions", VENUES["okx"]["401"], status=401)
    server.on("GET", "/api/v5/trade/orders-pending", VENUES["okx"]["401"], status=401)
    server.on("GET", "/api/v5/trade/orders-algo-pending", VENUES["okx"]["401"], status=401)

    report = await Flattener(venue, retry=RetryPolicy(initial_sec=0.01, max_attempts=5)).run()
    await venue.close()

    assert report.fatal and report.flat is False and report.attempts == 1
    assert "cannot flatten: API key rejected" in report.last_error


async def test_flatten_loop_rides_out_a_rate_limit_and_an_outage(server):
    venue = make_venue(server, "binanceusdm")
    positions = [{"symbol": "BTCUSDT", "positionSide": "BOTH", "positionAmt": "0.015",
                  "entryPrice": "95000", "markPrice": "95500", "notional": "1432.5",
                  "unRealizedProfit": "0", "updateTime": 1767225600000}]
    server.on("GET", "/fapi/v3/positionRisk", lambda r: positions)
    server.on("GET", "/fapi/v1/openOrders", [])
    server.on("GET", "/fapi/v1/openAlgoOrders", [])
    server.on("DELETE", "/fapi/v1/allOpenOrders", {"code": 200, "msg": "done"})
    server.on("DELETE", "/fapi/v1/algoOpenOrders", {"code": 200, "msg": "done"})

    def fill(request):
        positions.clear()
        return {"orderId": 1, "symbol": "BTCUSDT", "status": "FILLED", "executedQty": "0.015",
                "origQty": "0.015", "type": "MARKET", "side": "SELL", "positionSide": "BOTH",
                "cumQuote": "1", "updateTime": 1767225600000}

    server.on("POST", "/fapi/v1/order", fill)
    server.on("POST", "/fapi/v1/order", "Service Unavailable", status=503, times=1)
    server.on("POST", "/fapi/v1/order", VENUES["binanceusdm"]["429"], status=429, times=1)

    report = await Flattener(venue, retry=RetryPolicy(initial_sec=0.01, max_attempts=5)).run()
    await venue.close()

    assert report.flat is True and report.attempts == 3 and not report.fatal
    assert len(server.calls("POST", "/fapi/v1/order")) == 3
    # the two refused orders are on the execution record, the accepted one is not
    assert len(venue.order_failures(since=venue.last_ok_at.replace(year=2000))) == 2


async def test_reduce_only_refusal_is_its_own_error(server):
    from ess_tui.engine.venue import ReduceOnlyViolation

    venue = make_venue(server, "binanceusdm")
    server.on("GET", "/fapi/v3/positionRisk", [{
        "symbol": "BTCUSDT", "positionSide": "BOTH", "positionAmt": "0.015", "entryPrice": "1",
        "markPrice": "1", "notional": "0.015", "updateTime": 1767225600000}])
    server.on("POST", "/fapi/v1/order", {"code": -2022, "msg": "ReduceOnly Order is rejected."}, status=400)

    [position] = await venue.fetch_positions()
    with pytest.raises(ReduceOnlyViolation) as info:
        await venue.close_position(position)
    await venue.close()
    assert isinstance(info.value, VenueRejected) and info.value.retryable


def test_redact_cuts_keys_signatures_and_signed_query_strings():
    from ess_tui.venues.ccxt.errors import redact

    text = redact(
        "bybit GET https://api.bybit.com/v5/position/list?category=linear&sign=abc 401 "
        "{'X-BAPI-API-KEY': 'k123', 'X-BAPI-SIGN': 's456'} secret=topsecret\n\x1b[31mred",
        secrets=["topsecret"],
    )
    assert text == (
        "bybit GET https://api.bybit.com/v5/position/list?… 401 "
        "{'X-BAPI-API-KEY': '***', 'X-BAPI-SIGN': '***'} secret=*** ?[31mred"
    )
