"""The five evaluators: the seed's check() contract, proximity/readings, and faults never clear."""

from __future__ import annotations

import asyncio
import math
import threading
from datetime import datetime, timedelta, timezone
from enum import Enum

import pytest

from ess_tui.engine.evaluators import (
    DataFeedEmergencyEvaluator,
    DrawdownEmergencyEvaluator,
    EmergencyConditionEvaluator,
    EvaluatorFault,
    ExecutionErrorEmergencyEvaluator,
    ManualTriggerEmergencyEvaluator,
    SystemHealthEmergencyEvaluator,
    evaluate_any,
)
from ess_tui.engine.state import Band
from conftest import FakeClock

T0 = datetime(2025, 11, 30, 4, 3, 31, tzinfo=timezone.utc)


# --- fakes in the seed's shapes ---------------------------------------------------------------


class FakeMetricsRepository:
    """As the seed's tests use it: plain attributes, sync getters."""

    def __init__(self) -> None:
        self.daily_pnl_pct: object = 0.0
        self.equity_dd_pct: object = 0.0
        self.sl_hits: object = 0
        self.order_failures: object = 0
        self.asked_minutes: list[object] = []

    def get_daily_pnl_percent(self):
        return self.daily_pnl_pct

    def get_equity_drawdown_percent(self):
        return self.equity_dd_pct

    def get_recent_sl_hits(self, minutes):
        self.asked_minutes.append(minutes)
        return self.sl_hits

    def get_recent_order_failures(self, minutes):
        return self.order_failures


class AsyncMetricsRepository(FakeMetricsRepository):
    async def get_daily_pnl_percent(self):
        return self.daily_pnl_pct

    async def get_equity_drawdown_percent(self):
        return self.equity_dd_pct

    async def get_recent_sl_hits(self, minutes):
        return self.sl_hits


# --- the seed's protocol --------------------------------------------------------------------


def test_every_builtin_and_the_seeds_custom_evaluator_satisfy_the_protocol():
    class APIKeyEmergencyEvaluator:
        @property
        def name(self) -> str:
            return "API Key Emergency"

        async def check(self):
            return (False, None)

    repo = FakeMetricsRepository()
    evaluators = [
        DrawdownEmergencyEvaluator(metrics_repo=repo, max_daily_loss_percent=10.0,
                                   max_equity_drawdown_percent=25.0),
        SystemHealthEmergencyEvaluator(health_monitor=object()),
        ExecutionErrorEmergencyEvaluator(repo, 10, 15),
        DataFeedEmergencyEvaluator(object(), 5),
        ManualTriggerEmergencyEvaluator(),
        APIKeyEmergencyEvaluator(),
    ]
    assert all(isinstance(e, EmergencyConditionEvaluator) for e in evaluators)
    assert not isinstance(object(), EmergencyConditionEvaluator)
    assert [e.name for e in evaluators[:5]] == [
        "Drawdown Emergency", "System Health Emergency", "Execution Error Emergency",
        "Data Feed Emergency", "Manual Trigger",
    ]


# --- drawdown -------------------------------------------------------------------------------


async def test_seed_manual_testing_drawdown_example_runs_as_written():
    metrics = FakeMetricsRepository()
    metrics.daily_pnl_pct = -15.0  # Trigger

    evaluator = DrawdownEmergencyEvaluator(metrics)
    triggered, reason = await evaluator.check()

    assert triggered
    assert reason == "Daily PnL catastrophic: -15.00%"


@pytest.mark.parametrize("repo_cls", [FakeMetricsRepository, AsyncMetricsRepository])
async def test_drawdown_reading_and_proximity_below_the_limits(repo_cls):
    repo = repo_cls()
    repo.daily_pnl_pct, repo.equity_dd_pct = -4.2, 3.1
    clock = FakeClock(T0)
    evaluation = await DrawdownEmergencyEvaluator(repo, clock=clock).evaluate()
    assert not evaluation.triggered and evaluation.reason is None and evaluation.error is None
    assert evaluation.proximity == pytest.approx(0.42)
    assert evaluation.reading.startswith("daily PnL -4.20% of -10.00%")
    assert "drawdown 3.10% of 25.00%" in evaluation.reading
    assert evaluation.band is Band.OK
    assert evaluation.checked_at == T0
    assert await DrawdownEmergencyEvaluator(repo).check() == (False, None)


async def test_drawdown_proximity_takes_the_closer_limit_and_warns():
    repo = FakeMetricsRepository()
    repo.daily_pnl_pct, repo.equity_dd_pct = 2.0, 21.0  # a profitable day, deep below the peak
    evaluation = await DrawdownEmergencyEvaluator(repo).evaluate()
    assert evaluation.proximity == pytest.approx(21.0 / 25.0)
    assert evaluation.band is Band.WARN
    assert "daily PnL +2.00%" in evaluation.reading


async def test_drawdown_fires_at_the_limit_and_names_the_figure():
    repo = FakeMetricsRepository()
    evaluator = DrawdownEmergencyEvaluator(repo, 10.0, 25.0)
    repo.daily_pnl_pct = -9.99
    assert (await evaluator.check())[0] is False
    repo.daily_pnl_pct = -10.0
    evaluation = await evaluator.evaluate()
    assert evaluation.triggered and evaluation.reason == "Daily PnL catastrophic: -10.00%"
    assert evaluation.proximity == 1.0 and evaluation.band is Band.FIRE

    repo.daily_pnl_pct, repo.equity_dd_pct = -1.0, 30.0
    assert await evaluator.check() == (True, "Equity drawdown catastrophic: 30.00%")
    repo.daily_pnl_pct = -12.0
    triggered, reason = await evaluator.check()
    assert reason == "Daily PnL catastrophic: -12.00%; Equity drawdown catastrophic: 30.00%"


async def test_drawdown_limits_are_configurable_positionally():
    repo = FakeMetricsRepository()
    repo.daily_pnl_pct, repo.equity_dd_pct = -6.0, 0.0
    assert (await DrawdownEmergencyEvaluator(repo, 5.0, 20.0).check())[0] is True
    assert (await DrawdownEmergencyEvaluator(repo).check())[0] is False
    for bad in (0, -10.0, float("nan"), "10", None):
        with pytest.raises(ValueError, match="max_daily_loss_percent"):
            DrawdownEmergencyEvaluator(repo, bad)


@pytest.mark.parametrize(
    "pnl, dd, fragment",
    [
        (float("nan"), 0.0, "daily PnL % is not a finite number"),
        (None, 0.0, "daily PnL % is not a number: None"),
        ("-15", 0.0, "daily PnL % is not a number"),
        (True, 0.0, "daily PnL % is not a number"),
        (0.0, float("inf"), "equity drawdown % is not a finite number"),
        (0.0, -30.0, "drawdown is negative"),
    ],
)
async def test_garbage_metrics_are_faults_not_all_clear(pnl, dd, fragment):
    repo = FakeMetricsRepository()
    repo.daily_pnl_pct, repo.equity_dd_pct = pnl, dd
    evaluator = DrawdownEmergencyEvaluator(repo)
    evaluation = await evaluator.evaluate()
    assert evaluation.error is not None and fragment in evaluation.error
    assert evaluation.error.startswith("Drawdown Emergency:")
    assert evaluation.band is Band.ERROR and evaluation.proximity is None
    with pytest.raises(EvaluatorFault, match="Drawdown Emergency"):
        await evaluator.check()


async def test_metrics_repo_that_raises_is_a_fault_and_refresh_is_called_first():
    class Repo(AsyncMetricsRepository):
        refreshed = 0

        async def refresh(self):
            self.refreshed += 1
            if self.refreshed > 1:
                raise ConnectionError("venue timed out")

    repo = Repo()
    evaluator = DrawdownEmergencyEvaluator(repo)
    assert (await evaluator.evaluate()).error is None
    evaluation = await evaluator.evaluate()
    assert repo.refreshed == 2
    assert "ConnectionError: venue timed out" in evaluation.error
    with pytest.raises(EvaluatorFault):
        await evaluator.check()


# --- system health --------------------------------------------------------------------------


class HealthFake:
    def __init__(self, status: object) -> None:
        self.status = status

    def get_status(self):
        if isinstance(self.status, BaseException):
            raise self.status
        return self.status


class AsyncHealthFake(HealthFake):
    async def get_status(self):
        return super().get_status()


@pytest.mark.parametrize("cls", [HealthFake, AsyncHealthFake])
async def test_health_status_maps_to_proximity_and_critical_fires(cls):
    monitor = cls("HEALTHY")
    evaluator = SystemHealthEmergencyEvaluator(monitor)
    ok = await evaluator.evaluate()
    assert (ok.triggered, ok.proximity, ok.reading) == (False, 0.0, "HEALTHY")
    monitor.status = "DEGRADED"
    degraded = await evaluator.evaluate()
    assert (degraded.triggered, degraded.proximity) == (False, 0.5)
    monitor.status = "CRITICAL"
    assert await evaluator.check() == (True, "System health CRITICAL")
    assert (await evaluator.evaluate()).proximity == 1.0


async def test_health_accepts_enums_by_value_or_name():
    class Health(Enum):
        OK = "healthy"
        BAD = "CRITICAL"

    class Named(Enum):
        CRITICAL = 3

    assert (await SystemHealthEmergencyEvaluator(HealthFake(Health.OK)).check())[0] is False
    assert (await SystemHealthEmergencyEvaluator(HealthFake(Health.BAD)).check())[0] is True
    assert (await SystemHealthEmergencyEvaluator(HealthFake(Named.CRITICAL)).check())[0] is True


@pytest.mark.parametrize(
    "status, fragment",
    [
        (RuntimeError("monitor process gone"), "RuntimeError: monitor process gone"),
        ("SORT OF OK", "unknown status 'SORT OF OK'"),
        (None, "unknown status None"),
    ],
)
async def test_unavailable_health_monitor_triggers(status, fragment):
    triggered, reason = await SystemHealthEmergencyEvaluator(HealthFake(status)).check()
    assert triggered
    assert reason.startswith("System health monitor unavailable: ") and fragment in reason


async def test_health_monitor_without_get_status_triggers():
    triggered, reason = await SystemHealthEmergencyEvaluator(object()).check()
    assert triggered and "AttributeError" in reason


async def test_unresponsive_health_monitor_triggers_after_its_timeout():
    class Hung:
        async def get_status(self):
            await asyncio.sleep(10)

    triggered, reason = await SystemHealthEmergencyEvaluator(Hung(), timeout_sec=0.05).check()
    assert triggered and reason == "System health monitor unavailable: no answer within 0.05 s"


async def test_health_detail_and_proximity_from_a_richer_monitor_stay_in_band():
    class Rich(HealthFake):
        hint = 0.3

        def detail(self):
            return "event-loop lag 900 ms"

        def proximity(self):
            return self.hint

    monitor = Rich("DEGRADED")
    evaluation = await SystemHealthEmergencyEvaluator(monitor).evaluate()
    assert evaluation.proximity == 0.5  # a hint below DEGRADED's band is lifted into it
    assert evaluation.reading == "DEGRADED: event-loop lag 900 ms"
    monitor.hint = 0.9
    assert (await SystemHealthEmergencyEvaluator(monitor).evaluate()).band is Band.WARN
    monitor.status, monitor.hint = "HEALTHY", 0.9
    assert (await SystemHealthEmergencyEvaluator(monitor).evaluate()).proximity == 0.49
    monitor.status = "CRITICAL"
    assert (await SystemHealthEmergencyEvaluator(monitor).check())[1] == (
        "System health CRITICAL: event-loop lag 900 ms"
    )


# --- execution errors -----------------------------------------------------------------------


@pytest.mark.parametrize("repo_cls", [FakeMetricsRepository, AsyncMetricsRepository])
async def test_excessive_sl_hits_fire_above_the_limit(repo_cls):
    repo = repo_cls()
    evaluator = ExecutionErrorEmergencyEvaluator(repo)
    repo.sl_hits = 10
    at_limit = await evaluator.evaluate()
    assert not at_limit.triggered
    assert at_limit.proximity == pytest.approx(10 / 11) and at_limit.band is Band.WARN
    assert at_limit.reading == "10 SL hits in 15 min (fires above 10)"
    repo.sl_hits = 15
    assert await evaluator.check() == (True, "Excessive SL hits: 15 in 15 min")
    assert (await evaluator.evaluate()).proximity == 1.0


async def test_sl_window_and_limit_are_passed_through():
    repo = FakeMetricsRepository()
    repo.sl_hits = 4
    evaluator = ExecutionErrorEmergencyEvaluator(repo, 3, 5)
    assert await evaluator.check() == (True, "Excessive SL hits: 4 in 5 min")
    assert repo.asked_minutes == [5]
    repo.sl_hits = 1
    assert (await evaluator.evaluate()).reading == "1 SL hit in 5 min (fires above 3)"


async def test_zero_tolerance_limit_fires_on_the_first_hit():
    repo = FakeMetricsRepository()
    evaluator = ExecutionErrorEmergencyEvaluator(repo, 0, 15)
    assert (await evaluator.evaluate()).proximity == 0.0
    repo.sl_hits = 1
    assert (await evaluator.check())[0] is True


async def test_repeated_order_failures_fire_when_watched():
    repo = FakeMetricsRepository()
    repo.order_failures = 6
    assert (await ExecutionErrorEmergencyEvaluator(repo).check())[0] is False  # not watched
    evaluator = ExecutionErrorEmergencyEvaluator(repo, 10, 15, max_order_failures=5)
    evaluation = await evaluator.evaluate()
    assert evaluation.reason == "Repeated order failures: 6 in 15 min"
    assert "6 order failures (fires above 5)" in evaluation.reading

    class SeedRepo:
        def get_recent_sl_hits(self, minutes):
            return 0

    with pytest.raises(TypeError, match="get_recent_order_failures"):
        ExecutionErrorEmergencyEvaluator(SeedRepo(), max_order_failures=5)


@pytest.mark.parametrize("bad", [None, -1, 2.5, "15", float("nan")])
async def test_garbage_sl_counts_are_faults(bad):
    repo = FakeMetricsRepository()
    repo.sl_hits = bad
    evaluator = ExecutionErrorEmergencyEvaluator(repo)
    assert (await evaluator.evaluate()).band is Band.ERROR
    with pytest.raises(EvaluatorFault, match="stop-loss hits"):
        await evaluator.check()


# --- data feed ------------------------------------------------------------------------------


class FeedFake:
    def __init__(self, last: object, corrupted: object = False, detail: object = None) -> None:
        self.last, self.corrupted, self.detail = last, corrupted, detail

    def get_last_update_time(self):
        return self.last

    def is_corrupted(self):
        return self.corrupted

    def corruption_reason(self):
        return self.detail


class AsyncFeedFake(FeedFake):
    async def get_last_update_time(self):
        return self.last

    async def is_corrupted(self):
        return self.corrupted


@pytest.mark.parametrize("cls", [FeedFake, AsyncFeedFake])
async def test_stale_feed_fires_with_its_age_and_limit(cls):
    clock = FakeClock(T0)
    feed = cls(T0 - timedelta(minutes=2))
    evaluator = DataFeedEmergencyEvaluator(feed, 5, clock=clock)
    fresh = await evaluator.evaluate()
    assert not fresh.triggered and fresh.proximity == pytest.approx(0.4)
    assert fresh.reading == "last update 2.0 min ago (limit 5 min)"
    clock.advance(minutes=4, seconds=12)  # 6.2 min since the last update
    assert await evaluator.check() == (
        True, "Data feed stale: no update for 6.2 min (limit 5 min)"
    )


async def test_naive_last_update_means_utc():
    clock = FakeClock(T0)
    feed = FeedFake((T0 - timedelta(seconds=30)).replace(tzinfo=None))
    evaluation = await DataFeedEmergencyEvaluator(feed, clock=clock).evaluate()
    assert evaluation.proximity == pytest.approx(30 / 300)
    assert evaluation.reading == "last update 30 s ago (limit 5 min)"


async def test_corrupted_feed_fires_with_the_monitors_detail():
    feed = FeedFake(T0, corrupted=True, detail="BTC/USDT: crossed book: bid 101 > ask 100\x1b[31m")
    evaluator = DataFeedEmergencyEvaluator(feed, clock=FakeClock(T0))
    triggered, reason = await evaluator.check()
    assert triggered
    assert reason.startswith("Data feed corrupted: BTC/USDT: crossed book: bid 101 > ask 100")
    assert "\x1b" not in reason
    feed.detail = None
    assert await evaluator.check() == (
        True, "Data feed corrupted: the feed monitor reports corrupted data"
    )


async def test_last_update_in_the_future_is_corrupted():
    clock = FakeClock(T0)
    feed = FeedFake(T0 + timedelta(minutes=3))
    triggered, reason = await DataFeedEmergencyEvaluator(feed, clock=clock).check()
    assert triggered
    assert reason.startswith("Data feed corrupted: last update is 3.0 min in the future")
    feed.last = T0 + timedelta(seconds=2)  # within the clock-skew allowance
    assert (await DataFeedEmergencyEvaluator(feed, clock=clock).check()) == (False, None)


async def test_feed_that_never_updates_fires_one_period_after_watching_starts():
    clock = FakeClock(T0)
    evaluator = DataFeedEmergencyEvaluator(FeedFake(None), 5, clock=clock)
    first = await evaluator.evaluate()
    assert not first.triggered and first.reading.startswith("no update yet")
    clock.advance(minutes=5)
    triggered, reason = await evaluator.check()
    assert triggered and reason.startswith("Data feed stale: no update for 5.0 min (limit 5 min)")


@pytest.mark.parametrize(
    "last, corrupted, fragment",
    [("2025-11-30T04:00:00", False, "expected a datetime"),
     (T0, "no", "expected True/False"),
     (T0, None, "expected True/False")],
)
async def test_feed_monitor_garbage_is_a_fault(last, corrupted, fragment):
    evaluator = DataFeedEmergencyEvaluator(FeedFake(last, corrupted), clock=FakeClock(T0))
    evaluation = await evaluator.evaluate()
    assert evaluation.band is Band.ERROR and fragment in evaluation.error
    with pytest.raises(EvaluatorFault):
        await evaluator.check()


async def test_binding_the_feed_evaluator_binds_its_monitor():
    class WakingFeed(FeedFake):
        wake = None

        def bind_wake(self, callback):
            self.wake = callback

    feed = WakingFeed(T0)
    evaluator = DataFeedEmergencyEvaluator(feed)
    woken: list[str] = []
    evaluator.bind_wake(lambda: woken.append("now"))
    feed.wake()  # the monitor saw garbage
    assert woken == ["now"]


# --- manual trigger -------------------------------------------------------------------------


async def test_manual_trigger_is_sticky_until_reset():
    manual = ManualTriggerEmergencyEvaluator()
    assert await manual.check() == (False, None) and not manual.is_triggered
    manual.trigger("Admin emergency stop")
    assert await manual.check() == (True, "Admin emergency stop")
    assert await manual.check() == (True, "Admin emergency stop")
    assert manual.trigger("second thought") is False
    assert manual.reason == "Admin emergency stop"
    manual.reset()
    assert await manual.check() == (False, None)
    manual.trigger()
    assert await manual.check() == (True, "Manual emergency stop")


async def test_manual_trigger_from_another_thread_wakes_the_runner():
    loop = asyncio.get_running_loop()
    woke = asyncio.Event()
    manual = ManualTriggerEmergencyEvaluator(clock=FakeClock(T0))
    manual.bind_wake(lambda: loop.call_soon_threadsafe(woke.set))
    thread = threading.Thread(target=manual.trigger, args=("Security concern",))
    thread.start()
    await asyncio.wait_for(woke.wait(), timeout=2)
    thread.join()
    evaluation = await manual.evaluate()
    assert evaluation.triggered and evaluation.reason == "Security concern"
    assert evaluation.proximity == 1.0 and manual.triggered_at == T0


async def test_a_broken_wake_hook_does_not_break_trigger():
    manual = ManualTriggerEmergencyEvaluator()

    def boom():
        raise RuntimeError("runner gone")

    manual.bind_wake(boom)
    manual.trigger("still fires")
    assert await manual.check() == (True, "still fires")


# --- evaluate_any ---------------------------------------------------------------------------


async def test_evaluate_any_wraps_a_seed_style_check():
    class SeedStyle:
        name = "API Key Emergency"

        def __init__(self, answer):
            self.answer = answer

        async def check(self):
            if isinstance(self.answer, BaseException):
                raise self.answer
            return self.answer

    evaluation = await evaluate_any(SeedStyle((True, "API key invalid or revoked")),
                                    clock=FakeClock(T0))
    assert evaluation.triggered and evaluation.reason == "API key invalid or revoked"
    assert evaluation.proximity is None and evaluation.name == "API Key Emergency"
    assert evaluation.checked_at == T0
    assert (await evaluate_any(SeedStyle((False, None)))).band is Band.UNKNOWN
    with pytest.raises(PermissionError):
        await evaluate_any(SeedStyle(PermissionError("denied")))
    with pytest.raises(EvaluatorFault, match="expected \\(triggered, reason\\)"):
        await evaluate_any(SeedStyle("fine"))
    with pytest.raises(EvaluatorFault, match="expected a bool"):
        await evaluate_any(SeedStyle(("yes", None)))


async def test_evaluate_any_uses_evaluate_when_present():
    repo = FakeMetricsRepository()
    repo.daily_pnl_pct = -5.0
    evaluation = await evaluate_any(DrawdownEmergencyEvaluator(repo))
    assert evaluation.proximity == pytest.approx(0.5)
    repo.daily_pnl_pct = math.nan
    assert (await evaluate_any(DrawdownEmergencyEvaluator(repo))).band is Band.ERROR


async def test_an_unbound_evaluator_wakes_registered_runners_and_stops_when_bound():
    from ess_tui.engine.evaluators import add_unbound_wake

    runner_woken: list[str] = []
    remove = add_unbound_wake(lambda: runner_woken.append("runner"))
    try:
        manual = ManualTriggerEmergencyEvaluator()  # appended to a running ESS, not bound yet
        manual.trigger("Admin emergency stop")
        assert runner_woken == ["runner"]
        bound: list[str] = []
        manual.bind_wake(lambda: bound.append("bound"))
        manual.trigger("again")
        assert (runner_woken, bound) == (["runner"], ["bound"])
    finally:
        remove()
    ManualTriggerEmergencyEvaluator().trigger("nobody listens")
    assert runner_woken == ["runner"]
