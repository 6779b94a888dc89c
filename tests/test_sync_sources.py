"""F3: a SYNCHRONOUS evaluator source that blocks is a fault, and one that never returns does not
hang the runner. A blocking call on the event loop froze it, so no timeout could fire: a seed-style
``check()`` sleeping past ``eval_timeout_sec`` was never a fault and never latched."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from ess_tui import DrawdownEmergencyEvaluator, EmergencyStopController, EmergencyStopSystem
from ess_tui.engine.seed_store import MemoryPolicyStore
from ess_tui.testing.fakes import RecordingEventBus


class SlowSeedCheck:
    """The seed's evaluator shape, with a sync check() that blocks."""

    name = "Slow seed check"

    def __init__(self, sleep_sec: float) -> None:
        self.sleep_sec = sleep_sec

    def check(self):
        time.sleep(self.sleep_sec)
        return (False, None)


class SlowRepo:
    def __init__(self, sleep_sec: float) -> None:
        self.sleep_sec = sleep_sec

    def get_daily_pnl_percent(self):
        time.sleep(self.sleep_sec)
        return 0.0

    def get_equity_drawdown_percent(self):
        return 0.0


class SyncTrigger:
    name = "Sync trigger"

    def __init__(self) -> None:
        self.fire = False

    def check(self):
        return (self.fire, "sync trigger fired" if self.fire else None)


def runner(evaluators):
    controller = EmergencyStopController(MemoryPolicyStore(), None, RecordingEventBus())
    system = EmergencyStopSystem(evaluators, controller, None, check_interval_sec=0.1,
                                 eval_timeout_sec=0.3, fail_closed_after=3)
    return controller, system


@pytest.mark.parametrize("make", [lambda: SlowSeedCheck(0.6),
                                  lambda: DrawdownEmergencyEvaluator(SlowRepo(1.0))],
                         ids=["seed sync check", "sync metrics repo"])
async def test_a_sync_source_slower_than_the_timeout_is_a_fault_and_latches(make):
    controller, system = runner([make()])
    for cycle in (1, 2):
        [evaluation] = await system.run_cycle()
        assert evaluation.error and ("no answer within" in evaluation.error
                                     or "has not returned" in evaluation.error), (cycle, evaluation)
        assert not controller.is_active
    await system.run_cycle()
    assert controller.is_active, "3 timeouts of a sync source must latch"
    assert "failed 3 times in a row" in (controller.state.reason or "")


async def test_a_hung_sync_source_does_not_freeze_the_loop_or_the_other_evaluators():
    release = threading.Event()

    class Hung:
        name = "Hung"

        def check(self):
            release.wait(30)
            return (False, None)

    trigger = SyncTrigger()
    controller, system = runner([Hung(), trigger])
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.ensure_future(ticker())
    try:
        started = time.monotonic()
        evaluations = await system.run_cycle()
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, f"one cycle took {elapsed:.1f}s with a hung sync source"
        assert evaluations[0].error and evaluations[1].error is None
        assert ticks >= 5, f"the loop was frozen: {ticks} ticks in {elapsed:.2f}s"
        trigger.fire = True
        await system.run_cycle()
        assert controller.is_active and "sync trigger fired" in (controller.state.reason or "")
    finally:
        release.set()
        tick_task.cancel()


async def test_a_hung_sync_source_keeps_one_thread_not_one_per_cycle():
    release = threading.Event()
    calls = []

    class Hung:
        name = "Hung"

        def check(self):
            calls.append(1)
            release.wait(30)
            return (False, None)

    controller, system = runner([Hung()])
    try:
        for _ in range(4):
            await system.run_cycle()
        assert len(calls) == 1, f"{len(calls)} threads stuck in one hung source"
        assert "has not returned" in (controller.state.reason or ""), controller.state
        assert controller.is_active
    finally:
        release.set()


async def test_sync_and_async_seed_sources_still_answer():
    class AsyncCheck:
        name = "Async"

        async def check(self):
            return (False, None)

    controller, system = runner([SyncTrigger(), AsyncCheck(),
                                 DrawdownEmergencyEvaluator(SlowRepo(0.0))])
    evaluations = await system.run_cycle()
    assert [e.error for e in evaluations] == [None, None, None]
    assert not controller.is_active


HUNG_RUNNER = textwrap.dedent("""
    import asyncio, json, time
    from ess_tui import EmergencyStopController, EmergencyStopSystem
    from ess_tui.engine.seed_store import MemoryPolicyStore

    class Hung:
        name = "Hung forever"
        def check(self):
            time.sleep(3600)
            return (False, None)

    async def main():
        store = MemoryPolicyStore()
        controller = EmergencyStopController(store, None, None)
        system = EmergencyStopSystem([Hung()], controller, store, 0.1,
                                     eval_timeout_sec=0.3, fail_closed_after=3)
        system.start()
        for _ in range(200):
            await asyncio.sleep(0.05)
            if controller.is_active:
                break
        await system.stop()
        print(json.dumps(store.get("emergency_stop")))

    asyncio.run(main())
""")


def test_a_runner_process_with_a_hung_sync_source_latches_and_exits(tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(HUNG_RUNNER)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    value = json.loads(done.stdout.strip().splitlines()[-1])
    assert value["active"] is True and "failed 3 times" in value["reason"], value
