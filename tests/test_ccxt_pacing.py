"""The venue's pacing on the real ccxt classes against the local stub: Retry-After after a 429 or
418 is honoured and shown, and Binance's -1021 (clock drift) is corrected and said so.
"""

from __future__ import annotations

import time

import pytest

from ccxt_stub import make_venue, running
from ess_tui.engine.venue import VenueRateLimited
from test_ccxt_binanceusdm import risk


async def test_binance_429_retry_after_is_honoured_and_shown():
    async with running() as server:
        server.on("GET", "/fapi/v3/positionRisk", [risk("BTCUSDT", "0.015")])
        server.on("GET", "/fapi/v3/positionRisk",
                  {"code": -1003, "msg": "Too many requests; current limit is 2400 per minute."},
                  status=429, headers={"Retry-After": "30"}, times=1)
        venue = make_venue(server, "binanceusdm")
        try:
            with pytest.raises(VenueRateLimited) as first:
                await venue.fetch_positions()
            assert "Retry-After" in str(first.value) and "30s" in str(first.value)
            sent = len(server.calls("GET", "/fapi/v3/positionRisk"))
            with pytest.raises(VenueRateLimited) as second:
                await venue.fetch_positions()  # the flatten retries; the venue is not asked again
            assert "backing off" in str(second.value)
            assert len(server.calls("GET", "/fapi/v3/positionRisk")) == sent == 1
            assert venue.status()["backing_off_sec"] > 25
        finally:
            await venue.exchange.close()


async def test_binance_418_ban_is_honoured_then_calls_resume_when_it_is_short():
    async with running() as server:
        server.on("GET", "/fapi/v3/positionRisk", [risk("BTCUSDT", "0.015")])
        server.on("GET", "/fapi/v3/positionRisk",
                  {"code": -1003, "msg": "Way too many requests; IP banned until 1767225900000."},
                  status=418, headers={"Retry-After": "1"}, times=1)
        venue = make_venue(server, "binanceusdm")
        try:
            with pytest.raises(VenueRateLimited, match="Retry-After"):
                await venue.fetch_positions()
            banned_at = time.monotonic()
            [position] = await venue.fetch_positions()  # waits the 1 s out, then asks
            assert time.monotonic() - banned_at >= 0.9
            assert position.amount == 0.015
        finally:
            await venue.exchange.close()


async def test_bybit_rate_limit_reset_header_is_honoured():
    async with running() as server:
        reset_ms = int((time.time() + 20) * 1000)
        server.on("GET", "/v5/position/list", {"retCode": 10006, "retMsg": "Too many visits!",
                                               "result": {}, "retExtInfo": {}, "time": 1},
                  headers={"X-Bapi-Limit-Reset-Timestamp": str(reset_ms)})
        venue = make_venue(server, "bybit")
        try:
            with pytest.raises(VenueRateLimited, match="Retry-After"):
                await venue.fetch_positions()
            sent = len(server.calls("GET", "/v5/position/list"))
            with pytest.raises(VenueRateLimited, match="backing off"):
                await venue.fetch_positions()
            assert len(server.calls("GET", "/v5/position/list")) == sent
        finally:
            await venue.exchange.close()


async def test_binance_clock_drift_is_corrected_and_said_so():
    async with running() as server:
        ahead_ms = 5000  # the venue's clock runs 5 s ahead of ours
        server.on("GET", "/fapi/v1/time", lambda r: {"serverTime": int(time.time() * 1000) + ahead_ms})

        def positions(request):
            stamp = int(request.params["timestamp"])
            if abs(stamp - (time.time() * 1000 + ahead_ms)) > 1000:
                return 400, {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}
            return [risk("BTCUSDT", "0.015")]

        venue = make_venue(server, "binanceusdm")
        server.on("GET", "/fapi/v1/time", lambda r: {"serverTime": int(time.time() * 1000) + ahead_ms})
        server.on("GET", "/fapi/v3/positionRisk", positions)
        try:
            await venue.call("load_markets")
            assert abs(venue.status()["clock_offset_ms"] + ahead_ms) < 1000  # loaded with the markets
            [position] = await venue.fetch_positions()
            assert position.amount == 0.015
            # the host clock jumps 3 s back (NTP step): -1021, corrected, resent, said so
            venue.exchange.options["timeDifference"] += 3000
            [position] = await venue.fetch_positions()
            assert position.amount == 0.015
            note = venue.status()["clock_note"]
            assert note and "-1021" in note and "corrected" in note
            assert abs(venue.status()["clock_offset_ms"] + ahead_ms) < 1000
            assert len(server.calls("GET", "/fapi/v3/positionRisk")) == 3  # ok, -1021, resent ok
        finally:
            await venue.exchange.close()
