"""F5: a runner paused mid-flatten (SIGSTOP past its lease) and resumed after another runner took
over must not (a) call the venue, (b) write a flatten row or the seed event for the activation, or
(c) latch the desk on its own event-loop lag."""

from __future__ import annotations

import asyncio

from ess_tui import EmergencyStopController, EmergencyStopSystem
from ess_tui.engine.flatten import RetryPolicy
from ess_tui.engine.seed_store import MemoryPolicyStore, SeedPolicyStoreAdapter
from ess_tui.engine.store import FencedOut
from ess_tui.engine.venue import Order, Position
from ess_tui.testing.fakes import FakeVenue

FAST = RetryPolicy(initial_sec=0.001, max_sec=0.005, jitter=0.0)


class SwitchStore(SeedPolicyStoreAdapter):
    """A store whose fence the test turns off: "another runner took the lease over"."""

    def __init__(self):
        super().__init__(MemoryPolicyStore())
        self.taken_over = False

    async def check_fence(self, holder, epoch, activation):
        if self.taken_over:
            raise FencedOut("runner lease taken over at epoch 2")


class Venue(FakeVenue):
    """Logs every call; ``after`` is called once the named call has been sent."""

    def __init__(self, *a, on=None, after=None, **k):
        super().__init__(*a, **k)
        self.on, self.after = on, after

    def _enter(self, method):
        super()._enter(method)  # logs it in self.calls
        if method == self.on and self.after is not None:
            self.after()


def book():
    return dict(positions=[Position(f"C{i}/USDT", "long", 1.0) for i in range(3)],
                orders=[Order("1", "BTC/USDT", "buy", 0.1, 50_000, "limit")])


class Bus:
    def __init__(self):
        self.events = []

    def publish(self, event):
        self.events.append(event)


async def run(store, venue):
    bus = Bus()
    controller = EmergencyStopController(store=store, exchange=venue, event_bus=bus, retry=FAST)
    system = EmergencyStopSystem([], controller, None, check_interval_sec=0.1, lease_ttl_sec=5.0)
    await system._take_lease()
    await controller.activate("x")
    await controller.wait_flattened(5)
    rows = [r.action for r in await store.read_audit()]
    return controller, rows, bus


async def test_lease_lost_after_the_closes_sends_no_verify_and_writes_no_flatten_row():
    store = SwitchStore()
    venue = Venue(**book())
    closes = []

    def closed():
        closes.append(1)
        if len(closes) == 3:
            store.taken_over = True

    venue.on, venue.after = "close_position", closed
    controller, rows, bus = await run(store, venue)
    after = venue.calls[[i for i, c in enumerate(venue.calls) if c == "close_position"][-1] + 1:]
    assert after == [], f"venue calls after the lease was lost: {after}"
    assert "flattened" not in rows and "flatten_failed" not in rows, rows
    assert not [e for e in bus.events if getattr(e, "type", "") == "emergency.stop"]


async def test_lease_lost_during_the_verify_writes_no_flatten_row_or_seed_event():
    store = SwitchStore()
    venue = Venue(**book(), on="fetch_open_orders")
    calls_at_loss = []

    def lost():
        if venue.calls.count("fetch_open_orders") == 1:  # the verify's read (the first pass)
            if "close_position" in venue.calls:
                store.taken_over = True
                calls_at_loss.append(len(venue.calls))

    venue.after = lost
    controller, rows, bus = await run(store, venue)
    assert calls_at_loss, venue.calls
    assert "flattened" not in rows and "flatten_failed" not in rows, rows
    assert not [e for e in bus.events if getattr(e, "type", "") == "emergency.stop"]
    assert len(venue.calls) == calls_at_loss[0], venue.calls


async def test_a_runner_that_keeps_its_lease_still_records_its_flatten():
    store = SwitchStore()
    controller, rows, bus = await run(store, Venue(**book()))
    assert "flattened" in rows, rows
    assert [e for e in bus.events if getattr(e, "type", "") == "emergency.stop"]


# --- (c) a paused runner's own readings -------------------------------------------------------

import time  # noqa: E402


class FreezeThenTrigger:
    """Freezes the event loop past the lease ttl (as SIGSTOP does), lets another runner take the
    lease meanwhile (if ``takeover``), then triggers once as a loop-lag reading would."""

    name = "System health"

    def __init__(self, store, ttl, takeover):
        self.store, self.ttl, self.takeover, self.armed = store, ttl, takeover, False
        self.fired = 0

    async def check(self):
        if not self.armed:
            return (False, None)
        self.armed = False
        from ess_tui.engine.text import utcnow

        if self.takeover:  # runner B watches the lease (its beat), as a standby does
            await self.store.acquire_lease("runner-B", ttl_sec=60, at=utcnow())
        time.sleep(self.ttl + 0.4)  # the whole process stops: A neither renews nor runs
        for _ in range(3 if self.takeover else 0):  # A's beat did not move for a ttl: B takes over
            lease = await self.store.acquire_lease("runner-B", ttl_sec=60, at=utcnow())
            if lease.holder == "runner-B":
                break
            time.sleep(self.ttl + 0.2)  # (A renewed just as B looked: B watches one more ttl)
        else:
            assert not self.takeover, "runner B could not take the lease over"
        self.fired += 1
        return (True, "System health CRITICAL: event-loop lag 1.4 s")


async def paused_runner(db, takeover):
    from ess_tui.store.sqlite import SQLiteStore

    store, other = SQLiteStore(db, audit_key=None), SQLiteStore(db, audit_key=None)
    ttl = 0.6
    evaluator = FreezeThenTrigger(other, ttl, takeover)
    controller = EmergencyStopController(store=store, exchange=None, retry=FAST)
    system = EmergencyStopSystem([evaluator], controller, None, check_interval_sec=0.1,
                                 lease_ttl_sec=ttl, eval_timeout_sec=5.0, holder="runner-A")
    system.start()
    try:
        for _ in range(100):
            await asyncio.sleep(0.02)
            if system.cycles >= 2 and controller.acting:
                break
        assert controller.acting
        evaluator.armed = True
        for _ in range(150):
            await asyncio.sleep(0.02)
            if evaluator.fired and system.cycles >= 3 and (controller.is_active or takeover):
                break
        await asyncio.sleep(0.3)  # a few more cycles
        return controller, system, evaluator
    finally:
        await system.stop()
        await store.close()
        await other.close()


async def test_a_runner_paused_past_its_lease_and_taken_over_does_not_latch_on_its_readings(tmp_path):
    controller, system, evaluator = await paused_runner(tmp_path / "ess.db", takeover=True)
    assert evaluator.fired == 1
    assert system.pauses >= 1 or not controller.acting
    assert not controller.acting, "runner-B holds the lease"
    assert not controller.is_active, f"the paused standby latched: {controller.state.reason}"


async def test_a_runner_paused_but_still_holding_its_lease_latches_as_usual(tmp_path):
    controller, system, evaluator = await paused_runner(tmp_path / "ess.db", takeover=False)
    assert evaluator.fired == 1 and controller.acting
    assert controller.is_active and "event-loop lag" in (controller.state.reason or "")


async def test_a_standbys_own_loop_lag_is_never_critical_the_holders_is():
    from ess_tui.market.health import HealthMonitor

    now = [1000.0]
    monitor = HealthMonitor(monotonic=lambda: now[0])
    monitor.start()
    try:
        now[0] += 13.4  # the process was stopped for 13.4 s (the probe is overdue by that much)
        assert monitor.get_status() == "CRITICAL"  # no acting hook: as before
        monitor.acting = lambda: True
        assert monitor.get_status() == "CRITICAL"  # the lease holder's own stall is the desk's
        monitor.acting = lambda: False
        assert monitor.get_status() == "DEGRADED" and "standby" in monitor.detail()

        def broken():
            raise RuntimeError("no controller")

        monitor.acting = broken
        assert monitor.get_status() == "CRITICAL"  # unknown: judged as acting
    finally:
        await monitor.stop()
