"""The runner loop: first trigger wins, faults are never all-clear, manual triggers wake it."""

from __future__ import annotations

import asyncio
import time

import pytest

from ess_tui import (
    DrawdownEmergencyEvaluator,
    EmergencyStopController,
    EmergencyStopSystem,
    ManualTriggerEmergencyEvaluator,
    SQLiteStore,
)
from ess_tui.engine.flatten import RetryPolicy
from ess_tui.engine.state import Band
from ess_tui.testing.fakes import FakeMetricsRepository, FakeVenue

FAST = RetryPolicy(initial_sec=0.001, max_sec=0.005, jitter=0.0)


class Fixed:
    def __init__(self, name, triggered=False, reason=None, delay=0.0, error=None):
        self._name, self.triggered, self.reason, self.delay, self.error = name, triggered, reason, delay, error
        self.calls = 0

    @property
    def name(self):
        return self._name

    async def check(self):
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error:
            raise self.error
        return self.triggered, self.reason


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(tmp_path / "ess.db")
    yield s
    await s.close()


def make(store, evaluators, **kw):
    controller = EmergencyStopController(store, FakeVenue(), retry=FAST)
    return controller, EmergencyStopSystem(evaluators, controller, store, kw.pop("interval", 0.1), **kw)


async def test_first_triggered_evaluator_in_list_order_wins(store):
    controller, ess = make(store, [Fixed("a"), Fixed("b", True, "b fired"), Fixed("c", True, "c fired")])
    await ess.run_cycle()
    assert controller.state.reason == "b fired"


async def test_raising_evaluator_is_error_not_all_clear_and_latches_after_n_faults(store):
    broken = Fixed("broken", error=RuntimeError("metrics db gone"))
    controller, ess = make(store, [broken], fail_closed_after=3)
    for _ in range(2):
        [ev] = await ess.run_cycle()
        assert ev.band is Band.ERROR and "metrics db gone" in ev.error
        assert not controller.is_active
    await ess.run_cycle()
    assert controller.is_active
    assert "broken" in controller.state.reason and "metrics db gone" in controller.state.reason


async def test_timeout_is_an_error(store):
    controller, ess = make(store, [Fixed("slow", delay=1.0)], eval_timeout_sec=0.05, fail_closed_after=1)
    [ev] = await ess.run_cycle()
    assert ev.band is Band.ERROR and "0.05" in ev.error
    assert controller.is_active


async def test_faults_reset_when_evaluator_recovers(store):
    flaky = Fixed("flaky", error=RuntimeError("x"))
    controller, ess = make(store, [flaky], fail_closed_after=2)
    await ess.run_cycle()
    flaky.error = None
    await ess.run_cycle()
    flaky.error = RuntimeError("x")
    await ess.run_cycle()
    assert not controller.is_active


async def test_evaluators_run_concurrently(store):
    slow = [Fixed(f"s{i}", delay=0.1) for i in range(5)]
    _, ess = make(store, slow)
    started = time.perf_counter()
    await ess.run_cycle()
    assert time.perf_counter() - started < 0.35


async def test_while_latched_keeps_evaluating_but_never_reactivates(store):
    metrics = FakeMetricsRepository(daily_pnl_pct=-15.0)
    controller, ess = make(store, [DrawdownEmergencyEvaluator(metrics)])
    await ess.run_cycle()
    assert controller.state.activation_count == 1
    for _ in range(3):
        [ev] = await ess.run_cycle()
        assert ev.triggered
    assert controller.state.activation_count == 1
    actions = [r.action for r in await store.read_audit()]
    assert actions.count("activate") == 1 and "extra_trigger" not in actions


async def test_manual_trigger_wakes_the_loop_at_once(store):
    manual = ManualTriggerEmergencyEvaluator()
    controller, ess = make(store, [manual], interval=30.0)
    task = ess.start()
    await asyncio.sleep(0.05)  # first cycle done; next tick is 30 s away
    started = time.perf_counter()
    manual.trigger("Admin emergency stop")
    while not controller.is_active and time.perf_counter() - started < 2:
        await asyncio.sleep(0.001)
    assert controller.is_active and time.perf_counter() - started < 0.5
    assert controller.state.reason == "Admin emergency stop"
    await ess.stop()
    assert task.done() and not ess._running


async def test_reset_clears_the_manual_trigger_so_it_does_not_relatch(store):
    manual = ManualTriggerEmergencyEvaluator()
    controller, ess = make(store, [manual])
    manual.trigger("drill")
    await ess.run_cycle()
    assert controller.is_active
    await controller.reset("alice")
    await ess.run_cycle()
    assert not controller.is_active


async def test_interval_of_a_tenth_of_a_second_is_honoured(store):
    counter = Fixed("c")
    _, ess = make(store, [counter], interval=0.1)
    ess.start()
    await asyncio.sleep(0.55)
    await ess.stop()
    assert 4 <= counter.calls <= 7


def test_interval_below_a_tenth_is_refused(tmp_path):
    controller = EmergencyStopController()
    with pytest.raises(ValueError, match="0.1"):
        EmergencyStopSystem([], controller, None, 0.01)


async def test_runner_picks_up_a_latch_written_by_another_process(tmp_path):
    path = tmp_path / "ess.db"
    runner_store, cli_store = SQLiteStore(path), SQLiteStore(path)
    venue = FakeVenue(positions=[__import__("ess_tui.engine.venue", fromlist=["Position"]).Position("BTC/USDT", "long", 1.0)])
    controller = EmergencyStopController(runner_store, venue, retry=FAST)
    ess = EmergencyStopSystem([], controller, runner_store, 0.1)
    ess.start()
    await asyncio.sleep(0.05)
    viewer = EmergencyStopController(store=cli_store, acting=False)
    await viewer.latch("from the CLI")
    started = time.perf_counter()
    while venue.positions and time.perf_counter() - started < 2:
        await asyncio.sleep(0.01)
    assert venue.positions == [] and time.perf_counter() - started < 0.5
    await ess.stop()
    await runner_store.close()
    await cli_store.close()


async def test_a_trigger_while_the_store_is_unreadable_still_latches_and_flattens(tmp_path):
    from ess_tui.engine.store import StoreUnavailable
    from ess_tui.engine.venue import Position

    class Unreadable(SQLiteStore):
        broken = False

        async def load_state(self):
            if self.broken:
                raise StoreUnavailable("database is corrupt: file is not a database")
            return await super().load_state()

        async def latch(self, *a, **kw):
            if self.broken:
                raise StoreUnavailable("database is corrupt: file is not a database")
            return await super().latch(*a, **kw)

    store = Unreadable(tmp_path / "ess.db")
    venue = FakeVenue(positions=[Position("BTC/USDT", "long", 1.0)])
    controller = EmergencyStopController(store, venue, retry=FAST)
    metrics = FakeMetricsRepository()
    ess = EmergencyStopSystem([DrawdownEmergencyEvaluator(metrics)], controller, store, 0.1)
    await ess.run_cycle()
    store.broken = True
    await ess.run_cycle()
    assert controller.is_active and "unavailable" in controller.state.reason  # shown as latched
    assert venue.positions  # not knowing the state alone does not flatten
    metrics.daily_pnl_pct = -20.0
    await ess.run_cycle()
    await controller.wait_flattened(timeout=2)
    assert controller.not_durable and venue.positions == []
    await store.close()


async def test_a_reset_landing_mid_cycle_does_not_relatch_from_readings_taken_before_it(store):
    manual = ManualTriggerEmergencyEvaluator()

    class ResetsMidCycle:
        name = "operator resets while the cycle runs"
        armed = False

        async def check(self):
            if self.armed:
                await asyncio.sleep(0.01)  # the manual gauge has already read "triggered"
                await controller.reset("alice")
            return False, None

    resetter = ResetsMidCycle()
    controller, ess = make(store, [manual, resetter])
    manual.trigger("drill")
    await ess.run_cycle()
    assert controller.is_active
    resetter.armed = True
    await ess.run_cycle()
    assert not controller.is_active and controller.state.activation_count == 1
