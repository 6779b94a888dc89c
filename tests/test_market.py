"""Market-side sources: tick validation, the feed monitor, account metrics, the health monitor."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest

from ess_tui.engine.evaluators import (
    DataFeedEmergencyEvaluator,
    DrawdownEmergencyEvaluator,
    EvaluatorFault,
    ExecutionErrorEmergencyEvaluator,
    SystemHealthEmergencyEvaluator,
)
from ess_tui.engine.state import Band
from ess_tui.market.feed import FeedMonitor, Tick, validate_tick
from ess_tui.market.health import HealthMonitor, HealthThresholds
from ess_tui.market.metrics import AccountMetrics, AccountMetricsError
from conftest import FakeClock

T0 = datetime(2025, 11, 30, 23, 50, tzinfo=timezone.utc)
NAN = float("nan")


def tick(symbol="BTC/USDT", bid=100.0, ask=100.5, last=100.2, at=T0) -> Tick:
    return Tick(symbol=symbol, bid=bid, ask=ask, last=last, timestamp=at)


# --- validate_tick --------------------------------------------------------------------------


def test_a_good_tick_passes():
    assert validate_tick(tick(), None, T0) is None
    assert validate_tick(tick(at=T0.replace(tzinfo=None)), None, T0) is None  # naive = UTC
    assert validate_tick(tick(at=T0 + timedelta(seconds=1)), None, T0) is None  # small skew


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (tick(bid=NAN), "bid is not a finite number"),
        (tick(last=float("inf")), "last is not a finite number"),
        (tick(ask=0.0), "ask is not a positive price: 0"),
        (tick(bid=-3.0), "bid is not a positive price: -3"),
        (tick(bid="100"), "bid is not a number: '100'"),
        (tick(last=None), "last is not a number: None"),
        (tick(bid=True), "bid is not a number: True"),
        (tick(bid=101.0, ask=100.0), "crossed book: bid 101 > ask 100"),
        (tick(at=T0 + timedelta(minutes=10)), "600.0 s in the future"),
        (tick(at="2025-11-30"), "timestamp is not a datetime"),
        (tick(symbol=""), "symbol is ''"),
        (None, "received None instead of a tick"),
        ({"symbol": "BTC/USDT", "bid": "abc"}, "malformed tick: a dict without symbol"),
        ("BTC 100", "malformed tick: a str without"),
    ],
)
def test_each_kind_of_corruption_is_named(bad, fragment):
    reason = validate_tick(bad, None, T0)
    assert reason is not None and fragment in reason


def test_time_going_backwards_and_absurd_jumps_are_corrupt():
    previous = tick(at=T0)
    assert "went backwards by 1.000 s" in validate_tick(
        tick(at=T0 - timedelta(seconds=1)), previous, T0
    )
    assert validate_tick(tick(at=T0), previous, T0) is None  # same instant is fine
    jumped = tick(bid=150, ask=150.5, last=150.2, at=T0 + timedelta(seconds=1))
    assert validate_tick(jumped, previous, T0 + timedelta(seconds=1)) is None  # no jump limit
    reason = validate_tick(jumped, previous, T0 + timedelta(seconds=1), max_jump_pct=20)
    assert reason is not None and "price jumped 49.9%" in reason and "limit 20%" in reason


def test_a_tick_whose_attributes_explode_does_not_crash_validation():
    class Exploding:
        symbol = "BTC/USDT"
        ask = last = 1.0
        timestamp = T0

        @property
        def bid(self):
            raise RuntimeError("decoder bug")

    reason = validate_tick(Exploding(), None, T0)
    assert "could not be checked (RuntimeError: decoder bug)" in reason


# --- FeedMonitor ----------------------------------------------------------------------------


def test_feed_monitor_reports_the_last_good_tick_time():
    clock = FakeClock(T0)
    monitor = FeedMonitor(clock=clock)
    assert monitor.get_last_update_time() is None and not monitor.is_corrupted()
    monitor.on_tick(tick(at=T0 - timedelta(seconds=3)))
    monitor.on_tick(tick(symbol="ETH/USDT", at=T0 - timedelta(seconds=1)))
    assert monitor.get_last_update_time() == T0 - timedelta(seconds=1)
    monitor.on_tick(tick(bid=NAN, at=T0))  # a bad tick is not an update
    assert monitor.get_last_update_time() == T0 - timedelta(seconds=1)


def test_garbage_input_latches_corruption_and_wakes_once():
    woken: list[int] = []
    monitor = FeedMonitor(clock=FakeClock(T0), on_corruption=lambda: woken.append(1))
    for garbage in ({"symbol": "BTC/USDT", "bid": "abc", "ask": None}, None, 42):
        assert monitor.on_tick(garbage) is not None  # never raises
    assert monitor.is_corrupted()
    assert monitor.corruption_reason().startswith("feed: malformed tick: a dict without")
    assert woken == [1]
    assert (monitor.ticks_seen, monitor.ticks_rejected) == (3, 3)


def test_corruption_recovers_after_consecutive_good_ticks_of_that_symbol():
    clock = FakeClock(T0)
    monitor = FeedMonitor(clock=clock, good_ticks_to_recover=3)
    monitor.on_tick(tick(bid=101.0, ask=100.0))
    assert monitor.corruption_reason() == "BTC/USDT: crossed book: bid 101 > ask 100"
    for i in range(2):
        monitor.on_tick(tick(at=T0 + timedelta(seconds=i)))
    monitor.on_tick(tick(symbol="ETH/USDT"))  # another symbol's good ticks do not count
    assert monitor.is_corrupted()
    monitor.on_tick(tick(last=NAN, at=T0 + timedelta(seconds=2)))  # a bad tick restarts the count
    for i in range(2):
        monitor.on_tick(tick(at=T0 + timedelta(seconds=3 + i)))
    assert monitor.is_corrupted()
    monitor.on_tick(tick(at=T0 + timedelta(seconds=5)))
    assert not monitor.is_corrupted() and monitor.corruption_reason() is None


def test_with_recovery_disabled_only_clear_clears():
    monitor = FeedMonitor(clock=FakeClock(T0), good_ticks_to_recover=0)
    monitor.on_tick(tick(ask=-1.0))
    for _ in range(10):
        monitor.on_tick(tick())
    assert monitor.is_corrupted()
    monitor.clear("ETH/USDT")
    assert monitor.is_corrupted()
    monitor.clear("BTC/USDT")
    assert not monitor.is_corrupted()


def test_a_real_move_flags_once_then_the_new_level_is_the_reference():
    clock = FakeClock(T0)
    monitor = FeedMonitor(clock=clock, max_jump_pct=20, good_ticks_to_recover=2)
    monitor.on_tick(tick(bid=100, ask=100.5, last=100.2))
    assert "price jumped" in monitor.on_tick(tick(bid=60, ask=60.2, last=60.1))
    assert monitor.on_tick(tick(bid=60.1, ask=60.3, last=60.2)) is None
    assert monitor.on_tick(tick(bid=60.0, ask=60.2, last=60.1)) is None
    assert not monitor.is_corrupted()


def test_expected_symbols_make_the_stalest_one_count():
    monitor = FeedMonitor(symbols=["BTC/USDT", "ETH/USDT"], clock=FakeClock(T0))
    monitor.on_tick(tick(at=T0))
    assert monitor.get_last_update_time() is None  # ETH has never updated
    monitor.on_tick(tick(symbol="ETH/USDT", at=T0 - timedelta(minutes=4)))
    assert monitor.get_last_update_time() == T0 - timedelta(minutes=4)
    name, age = monitor.stalest_symbol()
    assert name == "ETH/USDT" and age == timedelta(minutes=4)


async def test_feed_monitor_drives_the_data_feed_evaluator_and_wakes_the_runner():
    clock = FakeClock(T0)
    monitor = FeedMonitor(clock=clock)
    evaluator = DataFeedEmergencyEvaluator(monitor, 5, clock=clock)
    loop = asyncio.get_running_loop()
    woke = asyncio.Event()
    evaluator.bind_wake(lambda: loop.call_soon_threadsafe(woke.set))
    monitor.on_tick(tick(at=T0 - timedelta(seconds=20)))
    assert await evaluator.check() == (False, None)
    await asyncio.to_thread(monitor.on_tick, tick(bid=101.0, ask=100.0))  # from a feed thread
    await asyncio.wait_for(woke.wait(), timeout=2)
    assert await evaluator.check() == (
        True, "Data feed corrupted: BTC/USDT: crossed book: bid 101 > ask 100"
    )
    monitor.clear()
    clock.advance(minutes=6)
    triggered, reason = await evaluator.check()
    assert triggered and reason == "Data feed stale: no update for 6.3 min (limit 5 min)"


# --- AccountMetrics -------------------------------------------------------------------------


class MemoryKV:
    """A tiny in-memory stand-in for the store's policy keys."""

    def __init__(self) -> None:
        self.data: dict[str, dict] = {}
        self.writes = 0
        self.fail_writes = False

    async def get_policy(self, key):
        return self.data.get(key)

    async def set_policy(self, key, value):
        if self.fail_writes:
            raise OSError("disk full")
        self.writes += 1
        self.data[key] = dict(value)


class Equity:
    def __init__(self, value: object = 10_000.0) -> None:
        self.value = value

    async def __call__(self):
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value


class Executions:
    def __init__(self) -> None:
        self.sl: list[datetime] = []
        self.failures: list[datetime] = []

    def stop_loss_hits(self, since):
        return sum(1 for t in self.sl if t >= since)

    async def order_failures(self, since):
        return sum(1 for t in self.failures if t >= since)


def make_metrics(kv=None, equity=None, clock=None, executions=None, **kwargs):
    return AccountMetrics(equity or Equity(), executions or Executions(), kv or MemoryKV(),
                          clock=clock or FakeClock(T0), **kwargs)


async def test_pnl_and_drawdown_from_equity_with_the_peak_ratcheting():
    kv, equity, clock = MemoryKV(), Equity(10_000.0), FakeClock(T0)
    metrics = make_metrics(kv, equity, clock)
    await metrics.refresh()
    assert metrics.get_daily_pnl_percent() == 0.0 and metrics.get_equity_drawdown_percent() == 0.0
    assert kv.data["account_metrics"]["peak_equity"] == 10_000.0
    equity.value = 11_000.0
    await metrics.refresh()
    equity.value = 9_900.0
    await metrics.refresh()
    assert metrics.get_daily_pnl_percent() == pytest.approx(-1.0)
    assert metrics.get_equity_drawdown_percent() == pytest.approx(10.0)
    assert kv.data["account_metrics"]["peak_equity"] == 11_000.0
    assert kv.writes == 2  # only when the baseline changed


async def test_peak_and_day_start_survive_a_restart():
    kv, clock = MemoryKV(), FakeClock(T0)
    await make_metrics(kv, Equity(12_000.0), clock).refresh()
    restarted = make_metrics(kv, Equity(9_000.0), clock)
    await restarted.refresh()
    assert restarted.get_equity_drawdown_percent() == pytest.approx(25.0)
    assert restarted.get_daily_pnl_percent() == pytest.approx(-25.0)


async def test_the_utc_day_boundary_resets_the_day_start_but_not_the_peak():
    kv, equity, clock = MemoryKV(), Equity(10_000.0), FakeClock(T0)  # 23:50 UTC
    metrics = make_metrics(kv, equity, clock)
    await metrics.refresh()
    equity.value = 9_000.0
    clock.advance(minutes=5)
    await metrics.refresh()
    assert metrics.get_daily_pnl_percent() == pytest.approx(-10.0)
    clock.advance(minutes=10)  # 00:05 the next UTC day
    equity.value = 8_900.0
    await metrics.refresh()
    assert metrics.get_daily_pnl_percent() == 0.0
    assert metrics.get_equity_drawdown_percent() == pytest.approx(11.0)
    assert kv.data["account_metrics"]["day"] == "2025-12-01"
    assert kv.data["account_metrics"]["day_start_equity"] == 8_900.0


@pytest.mark.parametrize("bad", [NAN, 0.0, -50.0, "10000", None, True, ConnectionError("timeout")])
async def test_unusable_equity_is_a_clear_error_and_getters_refuse(bad):
    equity = Equity(10_000.0)
    metrics = make_metrics(equity=equity)
    await metrics.refresh()
    equity.value = bad
    with pytest.raises(AccountMetricsError, match="account equity"):
        await metrics.refresh()
    with pytest.raises(AccountMetricsError, match="the last equity refresh failed"):
        metrics.get_daily_pnl_percent()


async def test_getters_refuse_before_a_refresh_and_when_the_reading_is_old():
    clock = FakeClock(T0)
    metrics = make_metrics(clock=clock, max_reading_age_sec=60)
    with pytest.raises(AccountMetricsError, match="no equity reading yet"):
        metrics.get_equity_drawdown_percent()
    await metrics.refresh()
    clock.advance(seconds=61)
    with pytest.raises(AccountMetricsError, match="61 s old"):
        metrics.get_equity_drawdown_percent()


async def test_an_unreadable_stored_baseline_is_an_error_until_rebased():
    kv = MemoryKV()
    kv.data["account_metrics"] = {"day": "2025-11-30", "day_start_equity": 10_000.0,
                                  "peak_equity": "lots"}
    metrics = make_metrics(kv, Equity(9_000.0))
    with pytest.raises(AccountMetricsError, match="unreadable.*bad peak_equity.*rebase"):
        await metrics.refresh()
    baseline = await metrics.rebase()
    assert baseline.peak_equity == 9_000.0
    assert metrics.get_equity_drawdown_percent() == 0.0


async def test_a_failed_save_is_reported_and_retried():
    kv, equity = MemoryKV(), Equity(10_000.0)
    metrics = make_metrics(kv, equity)
    kv.fail_writes = True
    with pytest.raises(AccountMetricsError, match="could not save.*disk full"):
        await metrics.refresh()
    kv.fail_writes = False
    await metrics.refresh()  # nothing changed, but the unsaved baseline is written now
    assert kv.data["account_metrics"]["peak_equity"] == 10_000.0


async def test_recent_sl_hits_and_order_failures_use_the_clock_window():
    clock, executions = FakeClock(T0), Executions()
    executions.sl = [T0 - timedelta(minutes=m) for m in (1, 5, 14, 16, 30)]
    executions.failures = [T0 - timedelta(minutes=2)]
    metrics = make_metrics(clock=clock, executions=executions)
    assert await metrics.get_recent_sl_hits(15) == 3
    assert await metrics.get_recent_order_failures(15) == 1
    evaluator = ExecutionErrorEmergencyEvaluator(metrics, 2, 15, max_order_failures=0)
    triggered, reason = await evaluator.check()
    assert reason == "Excessive SL hits: 3 in 15 min; Repeated order failures: 1 in 15 min"


async def test_account_metrics_drive_the_drawdown_evaluator():
    kv, equity, clock = MemoryKV(), Equity(10_000.0), FakeClock(T0)
    evaluator = DrawdownEmergencyEvaluator(make_metrics(kv, equity, clock), clock=clock)
    assert (await evaluator.evaluate()).proximity == 0.0  # the evaluator refreshes the equity
    equity.value = 8_800.0
    assert await evaluator.check() == (True, "Daily PnL catastrophic: -12.00%")
    equity.value = NAN
    evaluation = await evaluator.evaluate()
    assert evaluation.band is Band.ERROR and "account equity" in evaluation.error
    with pytest.raises(EvaluatorFault):
        await evaluator.check()


# --- HealthMonitor --------------------------------------------------------------------------


async def test_venue_silence_grades_healthy_degraded_critical():
    clock = FakeClock(T0)
    last_ok: list[datetime | None] = [T0 - timedelta(seconds=30)]
    monitor = HealthMonitor(last_venue_ok=lambda: last_ok[0], clock=clock)
    assert monitor.get_status() == "HEALTHY"
    assert monitor.proximity() == pytest.approx(0.25)
    clock.advance(seconds=60)  # 90 s silent
    assert monitor.get_status() == "DEGRADED"
    assert monitor.detail() == "venue last answered 90 s ago (degraded)"
    clock.advance(seconds=300)
    assert monitor.get_status() == "CRITICAL" and monitor.proximity() == 1.0
    last_ok[0] = None  # "no answer yet" counts from when the monitor was created
    assert monitor.get_status() == "CRITICAL"
    assert "no venue answer yet" in monitor.detail()


def test_store_write_latency_grades_and_a_missing_sample_is_ignored():
    latency: list[object] = [None]
    monitor = HealthMonitor(store_write_ms=lambda: latency[0], clock=FakeClock(T0))
    assert monitor.get_status() == "HEALTHY" and monitor.detail() == "nothing measured yet"
    for value, status in ((12.0, "HEALTHY"), (600.0, "DEGRADED"), (5000.0, "CRITICAL")):
        latency[0] = value
        assert monitor.get_status() == status
    latency[0] = NAN
    assert monitor.get_status() == "CRITICAL"
    assert "store latency probe answered nan" in monitor.detail()


def test_a_probe_that_raises_makes_the_monitor_critical():
    def broken():
        raise RuntimeError("db handle closed")

    monitor = HealthMonitor(last_venue_ok=broken, clock=FakeClock(T0))
    assert monitor.get_status() == "CRITICAL"
    assert "venue probe failed: RuntimeError: db handle closed" in monitor.detail()


def test_force_and_clear_force_for_drills():
    monitor = HealthMonitor(clock=FakeClock(T0))
    monitor.force("critical")
    assert monitor.get_status() == "CRITICAL" and monitor.detail() == "forced CRITICAL (drill)"
    monitor.clear_force()
    assert monitor.get_status() == "HEALTHY"
    with pytest.raises(ValueError, match="HEALTHY, DEGRADED or CRITICAL"):
        monitor.force("PANIC")
    with pytest.raises(ValueError, match="degraded < critical"):
        HealthThresholds(loop_lag_degraded_ms=3000)


async def test_a_frozen_event_loop_reads_as_lag():
    thresholds = HealthThresholds(loop_lag_degraded_ms=60, loop_lag_critical_ms=5000)
    monitor = HealthMonitor(thresholds=thresholds, lag_interval_sec=0.01, clock=FakeClock(T0))
    monitor.start()
    await asyncio.sleep(0.03)
    assert monitor.get_status() == "HEALTHY"
    time.sleep(0.1)  # the loop is blocked: the monitor sees it even before the probe runs
    assert monitor.get_status() == "DEGRADED"
    await asyncio.sleep(0.02)
    assert monitor.loop_lag_ms() >= 60  # and the probe recorded it
    await monitor.stop()
    assert monitor.loop_lag_ms() is None and not monitor.running


async def test_overdue_lag_probe_with_a_fake_monotonic_clock():
    mono = [100.0]
    monitor = HealthMonitor(lag_interval_sec=0.5, clock=FakeClock(T0), monotonic=lambda: mono[0])
    monitor.start()
    mono[0] += 3.0  # the probe should have run 2.5 s ago
    assert monitor.loop_lag_ms() == pytest.approx(2500.0)
    assert monitor.get_status() == "CRITICAL"
    await monitor.stop()


async def test_health_monitor_drives_the_health_evaluator():
    clock = FakeClock(T0)
    last_ok = [T0 - timedelta(seconds=240)]
    monitor = HealthMonitor(last_venue_ok=lambda: last_ok[0], clock=clock)
    evaluator = SystemHealthEmergencyEvaluator(monitor, clock=clock)
    evaluation = await evaluator.evaluate()
    assert not evaluation.triggered and evaluation.band is Band.WARN
    assert evaluation.proximity == pytest.approx(0.5 + 0.5 * 180 / 240)
    assert evaluation.reading == "DEGRADED: venue last answered 4.0 min ago (degraded)"
    monitor.force("CRITICAL")
    assert await evaluator.check() == (True, "System health CRITICAL: forced CRITICAL (drill)")
