"""The paper exchange: the reduce-only rule, flattening, the account, the wire, faults and drills."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ess_tui.engine.venue import (
    Position,
    ReduceOnlyViolation,
    Venue,
    VenueRateLimited,
    VenueRejected,
    VenueTimeout,
    VenueUnavailable,
)
from ess_tui.market.ticks import Tick
from ess_tui.venues.paper.exchange import FaultConfig, PaperExchange
from conftest import FakeClock

T0 = datetime(2025, 11, 30, 4, 0, tzinfo=timezone.utc)


class FakeTimer:
    """Monotonic time that only moves when the venue sleeps; records every sleep."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


def book(ex: PaperExchange) -> tuple:
    """Everything a refused order must leave unchanged."""
    positions = {s: (n.qty, n.entry) for s, n in ex.book.positions.items()}
    return positions, dict(ex.book.orders), ex.book.cash


def venue(**kw) -> PaperExchange:
    kw.setdefault("volatility", 0.0)
    return PaperExchange(**kw)


# --- the reduce-only rule ---------------------------------------------------------------------


class TestReduceOnly:
    async def test_refused_when_there_is_no_position(self) -> None:
        ex = venue()
        before = book(ex)
        for kind, price in (("market", None), ("limit", 90_000.0), ("stop", 90_000.0)):
            with pytest.raises(ReduceOnlyViolation, match="no BTC/USDT position"):
                await ex.place_order("BTC/USDT", "sell", 1.0, kind, price, reduce_only=True)
        assert book(ex) == before
        assert await ex.fetch_positions() == []

    async def test_refused_on_the_side_that_grows_the_position(self) -> None:
        ex = venue()
        ex.seed_position("BTC/USDT", "long", 1.0, 97_000.0)
        ex.seed_position("ETH/USDT", "short", 5.0, 3_400.0)
        before = book(ex)
        with pytest.raises(ReduceOnlyViolation, match="increase the long"):
            await ex.place_order("BTC/USDT", "buy", 0.5, reduce_only=True)
        with pytest.raises(ReduceOnlyViolation, match="increase the short"):
            await ex.place_order("ETH/USDT", "sell", 1.0, "stop", 3_000.0, reduce_only=True)
        with pytest.raises(ReduceOnlyViolation):
            await ex.close_position(Position("BTC/USDT", "short", 1.0))  # stale view: wrong side
        assert book(ex) == before

    async def test_oversize_market_close_is_clipped_and_never_flips(self) -> None:
        ex = venue()
        ex.seed_position("BTC/USDT", "long", 0.5, 97_000.0)
        ack = await ex.place_order("BTC/USDT", "sell", 2.0, reduce_only=True)
        assert ack.filled == pytest.approx(0.5)
        assert ack.status == "filled"
        assert await ex.fetch_positions() == []
        ex.seed_position("ETH/USDT", "short", 3.0, 3_400.0)
        filled = await ex.close_position(Position("ETH/USDT", "short", 10.0))  # stale, too big
        assert filled == pytest.approx(3.0)
        assert await ex.fetch_positions() == []

    async def test_oversize_resting_reduce_only_order_is_refused(self) -> None:
        ex = venue()
        ex.seed_position("BTC/USDT", "long", 0.5, 97_000.0)
        before = book(ex)
        with pytest.raises(ReduceOnlyViolation, match="flip"):
            await ex.place_order("BTC/USDT", "sell", 0.6, "stop", 90_000.0, reduce_only=True)
        assert book(ex) == before

    async def test_without_reduce_only_an_order_may_flip(self) -> None:
        ex = venue()
        ex.seed_position("BTC/USDT", "long", 0.5, 97_000.0)
        await ex.place_order("BTC/USDT", "sell", 2.0)
        [pos] = await ex.fetch_positions()
        assert (pos.side, pos.amount) == ("short", pytest.approx(1.5))

    @settings(max_examples=150, deadline=None)
    @given(
        start=st.floats(-5, 5).filter(lambda q: abs(q) > 1e-3),
        orders=st.lists(
            st.tuples(st.sampled_from(["buy", "sell"]), st.floats(0.001, 10), st.booleans()),
            max_size=8,
        ),
    )
    def test_reduce_only_never_opens_grows_or_flips(self, start, orders) -> None:
        ex = venue()
        ex.seed_position("BTC/USDT", "long" if start > 0 else "short", abs(start), 97_000.0)
        for side, amount, market in orders:
            net = ex.book.positions.get("BTC/USDT")
            before = 0.0 if net is None else net.qty
            try:
                if market:
                    ex.seed_order("BTC/USDT", side, amount, "market", reduce_only=True)
                else:
                    ex.seed_order("BTC/USDT", side, amount, "limit", 150_000.0 if side == "buy" else 1.0,
                                  reduce_only=True)
            except ReduceOnlyViolation:
                pass
            net = ex.book.positions.get("BTC/USDT")
            after = 0.0 if net is None else net.qty
            assert abs(after) <= abs(before) + 1e-12
            assert after == 0.0 or math.copysign(1, after) == math.copysign(1, before)


# --- flattening -------------------------------------------------------------------------------


class TestFlatten:
    async def test_cancel_all_cancels_stops_too(self) -> None:
        ex = PaperExchange.demo(latency_ms=0, rate_limit=None)
        orders = await ex.fetch_open_orders()
        assert {o.kind for o in orders} == {"limit", "stop"}
        assert await ex.cancel_all_orders() == len(orders)
        assert await ex.fetch_open_orders() == []

    async def test_close_position_flattens_and_realises_pnl(self) -> None:
        ex = venue(spread_bps=0)
        ex.seed_position("BTC/USDT", "long", 1.0, 95_000.0)
        [pos] = await ex.fetch_positions()
        assert await ex.close_position(pos) == pytest.approx(1.0)
        assert await ex.fetch_positions() == []
        assert ex.book.cash == pytest.approx(100_000 + 2_000)
        assert await ex.get_account_balance() == pytest.approx(102_000)

    async def test_close_all_positions_closes_concurrently(self) -> None:
        ex = PaperExchange.demo(latency_ms=40, rate_limit=None)
        assert await ex.close_all_positions() == 4
        assert ex.snapshot().positions == ()
        closes = [t for t, name, _ in ex.calls if name == "close_position"]
        assert len(closes) == 4
        assert max(closes) - min(closes) < 0.02  # all four left before the first answer came back

    async def test_close_all_skips_a_position_its_stop_already_closed(self) -> None:
        ex = venue()
        ex.seed_position("BTC/USDT", "long", 1.0, 97_000.0)
        positions = await ex.fetch_positions()
        ex.seed_order("BTC/USDT", "sell", 1.0, "stop", 96_000.0, reduce_only=True)
        ex.set_price("BTC/USDT", 95_000.0)  # the stop fires between fetch and close
        with pytest.raises(ReduceOnlyViolation):
            await ex.close_position(positions[0])
        assert await ex.close_all_positions() == 0

    async def test_close_all_reports_what_failed(self) -> None:
        ex = PaperExchange.demo(latency_ms=0, rate_limit=None)
        real = ex._close

        def flaky(position: Position) -> float:
            if position.symbol == "SOL/USDT":
                raise VenueUnavailable("boom", venue="paper", call="close_position")
            return real(position)

        ex._close = flaky  # type: ignore[method-assign]
        with pytest.raises(VenueUnavailable, match=r"closed 3 of 4 positions; 1 failed \(SOL/USDT: boom"):
            await ex.close_all_positions()
        assert [p.symbol for p in await ex.fetch_positions()] == ["SOL/USDT"]


# --- the account and the market ---------------------------------------------------------------


class TestAccount:
    async def test_equity_follows_price_moves(self) -> None:
        ex = venue()
        ex.seed_position("BTC/USDT", "long", 0.5, 97_000.0)
        ex.seed_position("ETH/USDT", "short", 10.0, 3_400.0)
        assert await ex.get_account_balance() == pytest.approx(100_000)
        ex.set_price("BTC/USDT", 99_000.0)
        assert await ex.get_account_balance() == pytest.approx(101_000)
        ex.set_price("ETH/USDT", 3_500.0)
        assert await ex.get_account_balance() == pytest.approx(100_000)

    async def test_market_orders_pay_the_spread(self) -> None:
        ex = venue(spread_bps=10)
        buy = await ex.place_order("BTC/USDT", "buy", 1.0)
        sell = await ex.place_order("BTC/USDT", "sell", 1.0)
        assert buy.fill_price > 97_000 > sell.fill_price
        assert ex.equity == pytest.approx(100_000 - 97_000 * 10 / 10_000)

    async def test_limit_order_rests_then_fills_when_crossed(self) -> None:
        ex = venue()
        ack = await ex.place_order("ETH/USDT", "buy", 2.0, "limit", 3_300.0)
        assert ack.status == "open"
        ex.set_price("ETH/USDT", 3_350.0)
        assert await ex.fetch_positions() == []
        ex.set_price("ETH/USDT", 3_250.0)
        [pos] = await ex.fetch_positions()
        assert (pos.side, pos.amount, pos.entry_price) == ("long", 2.0, 3_300.0)
        assert await ex.fetch_open_orders() == []

    async def test_stop_that_would_trigger_at_once_is_rejected(self) -> None:
        ex = venue()
        with pytest.raises(VenueRejected, match="would trigger at once"):
            await ex.place_order("BTC/USDT", "sell", 1.0, "stop", 98_000.0)
        assert ex.order_failures(T0 - timedelta(days=3650)) == 1

    async def test_stop_loss_hit_is_recorded_with_the_clock(self) -> None:
        clock = FakeClock(T0)
        ex = venue(clock=clock)
        ex.seed_position("BTC/USDT", "long", 1.0, 97_000.0)
        ex.seed_order("BTC/USDT", "sell", 1.0, "stop", 95_000.0, reduce_only=True)
        ex.seed_order("ETH/USDT", "buy", 1.0, "stop", 3_500.0)  # entry stop, not a stop-loss
        clock.advance(minutes=5)
        ex.set_price("BTC/USDT", 96_000.0)
        assert ex.stop_loss_hits(T0) == 0
        fills = ex.set_price("BTC/USDT", 94_900.0)
        ex.set_price("ETH/USDT", 3_600.0)
        assert [f.kind for f in fills] == ["stop"]
        assert [p.symbol for p in await ex.fetch_positions()] == ["ETH/USDT"]
        assert ex.stop_loss_hits(T0) == 1
        assert ex.stop_loss_hits(clock.now) == 1
        assert ex.stop_loss_hits(clock.now + timedelta(seconds=1)) == 0
        assert ex.stop_loss_hits(T0.replace(tzinfo=None)) == 1  # naive means UTC

    def test_same_seed_same_prices(self) -> None:
        a, b, c = PaperExchange.demo(seed=3), PaperExchange.demo(seed=3), PaperExchange.demo(seed=4)
        for ex in (a, b, c):
            for _ in range(200):
                ex.tick()
        assert a.equity == b.equity
        assert a.equity != c.equity
        assert a.last_tick("SOL/USDT").last == b.last_tick("SOL/USDT").last


# --- the wire: latency, rate limit, call log --------------------------------------------------


class TestWire:
    async def test_latency_is_one_round_trip_per_call(self) -> None:
        timer = FakeTimer()
        ex = venue(latency_ms=40, monotonic=timer.monotonic, sleep=timer.sleep)
        await ex.fetch_positions()
        await ex.get_account_balance()
        assert timer.t == pytest.approx(0.080)
        assert ex.round_trips == 2

    async def test_latency_really_waits(self) -> None:
        ex = venue(latency_ms=30)
        start = time.monotonic()
        await ex.fetch_open_orders()
        assert time.monotonic() - start >= 0.029

    async def test_rate_limit_spaces_calls(self) -> None:
        timer = FakeTimer()
        ex = venue(rate_limit=10, monotonic=timer.monotonic, sleep=timer.sleep)
        await asyncio.gather(*(ex.fetch_positions() for _ in range(5)))
        sent = [t for t, _, _ in ex.calls]
        assert sent == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])

    async def test_rate_limit_burst_then_refill(self) -> None:
        timer = FakeTimer()
        ex = venue(rate_limit=5, rate_limit_burst=3, monotonic=timer.monotonic, sleep=timer.sleep)
        for _ in range(5):
            await ex.get_account_balance()
        assert [t for t, _, _ in ex.calls] == pytest.approx([0.0, 0.0, 0.0, 0.2, 0.4])

    async def test_call_log_shows_cancel_before_close(self) -> None:
        ex = PaperExchange.demo(latency_ms=0, rate_limit=None)
        await ex.cancel_all_orders()
        await ex.close_all_positions()
        names = [name for _, name, _ in ex.calls]
        assert names == ["cancel_all_orders", "fetch_positions"] + ["close_position"] * 4
        assert ex.round_trips == 6
        times = [t for t, _, _ in ex.calls]
        assert times == sorted(times)
        assert ex.calls[2][2] == {"symbol": "BTC/USDT", "side": "sell", "amount": 0.8}

    async def test_call_log_is_bounded_but_round_trips_count_all(self) -> None:
        ex = venue(call_log_limit=3)
        for _ in range(5):
            await ex.fetch_positions()
        assert len(ex.calls) == 3
        assert ex.round_trips == 5


# --- fault injection --------------------------------------------------------------------------


class TestFaults:
    async def test_call_failures_come_at_the_configured_rates(self) -> None:
        faults = FaultConfig(timeout_rate=0.10, rate_limit_rate=0.05, server_error_rate=0.05, seed=42)
        ex = venue(faults=faults)
        seen: dict[str, int] = {"ok": 0, "timeout": 0, "429": 0, "5xx": 0}
        outcomes = []
        for _ in range(2000):
            try:
                await ex.get_account_balance()
                outcome = "ok"
            except VenueTimeout:
                outcome = "timeout"
            except VenueRateLimited:
                outcome = "429"
            except VenueUnavailable:
                outcome = "5xx"
            seen[outcome] += 1
            outcomes.append(outcome)
        assert 160 <= seen["timeout"] <= 240
        assert 70 <= seen["429"] <= 130
        assert 70 <= seen["5xx"] <= 130
        ex.set_faults(FaultConfig(timeout_rate=0.10, rate_limit_rate=0.05, server_error_rate=0.05, seed=42))
        again = []
        for _ in range(50):
            try:
                await ex.get_account_balance()
                again.append("ok")
            except VenueTimeout:
                again.append("timeout")
            except VenueRateLimited:
                again.append("429")
            except VenueUnavailable:
                again.append("5xx")
        assert again == outcomes[:50]

    async def test_a_failed_call_changes_nothing(self) -> None:
        ex = PaperExchange.demo(latency_ms=0, rate_limit=None, faults=FaultConfig(timeout_rate=1.0))
        before = book(ex)
        with pytest.raises(VenueTimeout, match="timed out"):
            await ex.cancel_all_orders()
        with pytest.raises(VenueTimeout):
            await ex.close_all_positions()
        assert book(ex) == before

    async def test_rejected_cancels_leave_orders_open(self) -> None:
        ex = PaperExchange.demo(latency_ms=0, rate_limit=None)
        for _ in range(5):
            ex.seed_order("XRP/USDT", "buy", 100.0, "limit", 1.0)
        ex.set_faults(FaultConfig(reject_cancel_rate=0.5, seed=1))
        total = len(ex.book.orders)
        cancelled = await ex.cancel_all_orders()
        left = await ex.fetch_open_orders()
        assert 0 < cancelled < total
        assert len(left) == total - cancelled
        assert ex.order_failures(T0 - timedelta(days=3650)) == len(left)

    async def test_partial_fill_leaves_the_remainder(self) -> None:
        ex = venue(faults=FaultConfig(partial_fill_rate=1.0, seed=5))
        ex.seed_position("SOL/USDT", "long", 100.0, 180.0)
        [pos] = await ex.fetch_positions()
        filled = await ex.close_position(pos)
        assert 0 < filled < 100
        [rest] = await ex.fetch_positions()
        assert (rest.side, rest.amount) == ("long", pytest.approx(100 - filled))
        assert await ex.close_all_positions() == 0  # partial again: nothing fully closed

    async def test_down_fails_every_call(self) -> None:
        ex = PaperExchange.demo(latency_ms=0, rate_limit=None, faults=FaultConfig(down=True))
        before = book(ex)
        [pos] = [p for p in ex.snapshot().positions if p.symbol == "BTC/USDT"]
        calls = [
            ex.fetch_positions(),
            ex.fetch_open_orders(),
            ex.get_account_balance(),
            ex.cancel_all_orders(),
            ex.cancel_order("paper-1"),
            ex.close_position(pos),
            ex.close_all_positions(),
            ex.place_order("BTC/USDT", "buy", 0.1),
        ]
        for call in calls:
            with pytest.raises(VenueUnavailable, match="down"):
                await call
        assert book(ex) == before
        stamp = ex.last_tick("BTC/USDT").timestamp
        ex.step(60)
        assert ex.feed_state == "stalled"
        assert ex.last_tick("BTC/USDT").timestamp == stamp
        ex.faults.down = False
        assert len(await ex.fetch_positions()) == 4

    def test_bad_rates_are_refused(self) -> None:
        with pytest.raises(ValueError, match="timeout_rate"):
            FaultConfig(timeout_rate=1.5)
        with pytest.raises(ValueError, match="must not exceed 1"):
            FaultConfig(timeout_rate=0.6, server_error_rate=0.6)


# --- the feed and the drills ------------------------------------------------------------------


class TestFeedAndDrills:
    def test_demo_world(self) -> None:
        ex = PaperExchange.demo()
        snap = ex.snapshot()
        assert isinstance(ex, Venue)
        assert ex.latency_ms == 20
        assert {p.symbol for p in snap.positions} == {"BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"}
        assert {p.side for p in snap.positions} == {"long", "short"}
        stops = {o.symbol for o in snap.orders if o.kind == "stop" and o.reduce_only}
        assert stops == {p.symbol for p in snap.positions}  # every position is protected
        assert any(o.kind == "limit" for o in snap.orders)
        assert not snap.flat and snap.feed == "live"
        assert snap.equity == pytest.approx(snap.cash + snap.unrealised_pnl)

    def test_pnl_drifts(self) -> None:
        ex = PaperExchange.demo()
        start = ex.equity
        moves = set()
        for _ in range(60):
            ex.drift(1.0)
            moves.add(round(ex.equity, 2))
        assert len(moves) > 50
        assert abs(ex.equity - start) > 10

    def test_crash_drill_moves_prices_against_the_book(self) -> None:
        clock = FakeClock(T0)
        ex = PaperExchange.demo(clock=clock)
        start = ex.equity
        fills = ex.drill_crash(10)
        assert ex.equity < start * 0.85
        assert ex.last_tick("BTC/USDT").last == pytest.approx(97_000 * 0.9)
        assert ex.last_tick("ETH/USDT").last == pytest.approx(3_400 * 1.1)
        assert ex.stop_loss_hits(T0) == 4 == sum(f.stop_loss for f in fills)
        with pytest.raises(ValueError):
            ex.drill_crash(150)

    def test_stop_hit_drill(self) -> None:
        clock = FakeClock(T0)
        ex = PaperExchange.demo(clock=clock)
        ex.drill_stop_hits(11)
        clock.advance(minutes=20)
        ex.drill_stop_hits(2)
        assert ex.stop_loss_hits(clock.now - timedelta(minutes=15)) == 2
        assert ex.stop_loss_hits(T0) == 13
        assert len(ex.snapshot().positions) == 4

    def test_stalled_feed_keeps_old_timestamps(self) -> None:
        clock = FakeClock(T0)
        ex = PaperExchange.demo(clock=clock)
        received: list[Tick] = []
        ex.subscribe_ticks(received.append)
        ex.drill_stall_feed()
        clock.advance(minutes=6)
        ex.step(360)
        assert ex.last_tick("ETH/USDT").timestamp == T0
        assert received == []
        assert ex.feed_state == "stalled"
        ex.drill_recover_feed()
        assert ex.last_tick("ETH/USDT").timestamp == clock.now
        assert len(received) == 4 and ex.feed_state == "live"

    def test_garbage_ticks(self) -> None:
        clock = FakeClock(T0)
        ex = PaperExchange.demo(clock=clock)
        received: list[Tick] = []
        ex.subscribe_ticks(received.append)
        ex.drill_garbage_tick("nan", "BTC/USDT")
        assert math.isnan(ex.last_tick("BTC/USDT").last)
        assert ex.last_tick("ETH/USDT").last == 3_400
        ex.tick()  # garbage keeps coming until recovered
        assert math.isnan(ex.last_tick("BTC/USDT").bid)
        assert sum(math.isnan(t.last) for t in received) == 2
        ex.drill_garbage_tick("crossed")
        assert all(ex.last_tick(s).bid > ex.last_tick(s).ask for s in ex.symbols)
        ex.drill_garbage_tick("future", "SOL/USDT")
        assert ex.last_tick("SOL/USDT").timestamp > clock.now + timedelta(minutes=30)
        assert ex.feed_state == "garbage"
        assert all(math.isfinite(p.mark_price) for p in ex.snapshot().positions)  # book unaffected
        ex.drill_recover_feed()
        tick = ex.last_tick("BTC/USDT")
        assert tick.bid < tick.ask and math.isfinite(tick.last)
        with pytest.raises(ValueError, match="nan, crossed, future"):
            ex.drill_garbage_tick("zero")

    async def test_snapshot_counts_and_close(self) -> None:
        ex = PaperExchange.demo(latency_ms=0, rate_limit=None)
        await ex.cancel_all_orders()
        await ex.close_all_positions()
        snap = ex.snapshot()
        assert snap.flat
        assert snap.equity == pytest.approx(snap.cash)
        assert snap.round_trips == 6
        assert len(snap.recent_fills) == 4
        await ex.close()
