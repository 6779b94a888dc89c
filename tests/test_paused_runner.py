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
