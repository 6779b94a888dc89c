"""Regressions found by an adversarial review: each asserts the safe behaviour.

A store that refuses writes must not stop flattening; a bug in one evaluator must not end the loop;
a seed store that loses its key must not un-latch; two live runners must not pass the lease back
and forth; a reset must not un-latch an activation nobody reviewed.
"""
from __future__ import annotations

import asyncio

import pytest

from ess_tui.engine.controller import EmergencyStopController
from ess_tui.engine.evaluators.manual import ManualTriggerEmergencyEvaluator
from ess_tui.engine.flatten import RetryPolicy
from ess_tui.engine.store import StaleResetError, StoreUnavailable
from ess_tui.engine.system import EmergencyStopSystem
from ess_tui.engine.seed_store import MemoryPolicyStore
from ess_tui.store.sqlite import SQLiteStore
from ess_tui.venues.paper.exchange import PaperExchange

pytestmark = pytest.mark.asyncio

FAST = RetryPolicy(initial_sec=0.01, max_sec=0.02, jitter=0.0)


class BrokenWrites:
    """A SQLiteStore whose writes fail once `broken` is set (disk full / read-only / locked)."""

    def __init__(self, inner: SQLiteStore) -> None:
        self.inner = inner
        self.broken = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def _guard(self, name, *a, **k):
        if self.broken:
            raise StoreUnavailable("database or disk is full")
        return await getattr(self.inner, name)(*a, **k)

    async def latch(self, *a, **k):
        return await self._guard("latch", *a, **k)

    async def acquire_lease(self, *a, **k):
        return await self._guard("acquire_lease", *a, **k)

    async def audit(self, *a, **k):
        return await self._guard("audit", *a, **k)


# F1 ---------------------------------------------------------------------------------------------
async def test_store_write_failure_with_lease_still_flattens(tmp_path):
    """Controller docstring: 'If the store cannot be written the ESS still latches in memory and
    still flattens'. With a runner lease (the default in Runtime) it does not."""
    store = BrokenWrites(SQLiteStore(tmp_path / "ess.db"))
    venue = PaperExchange.demo(seed=1, latency_ms=0)
    assert (await venue.fetch_positions())
    manual = ManualTriggerEmergencyEvaluator()
    ctl = EmergencyStopController(store=store, exchange=venue, retry=FAST)
    ess = EmergencyStopSystem([manual], ctl, store, 0.1, lease_ttl_sec=5.0)
    await ess.run_cycle()                      # takes the lease, armed
    assert ctl.acting
    store.broken = True                        # disk fills up
    await asyncio.sleep(5.0 / 3 + 0.05)        # next cycle must renew the lease (and cannot)
    manual.trigger("desk head: stop now")
    await ess.run_cycle()
    assert ctl.known_latched                   # latched in memory...
    await asyncio.sleep(0.3)
    assert not (await venue.fetch_positions()), "latched, but nothing was flattened"
    await ctl.close(); await store.inner.close()


# F2 ---------------------------------------------------------------------------------------------
class CancelsItself:
    name = "flaky lib"

    async def check(self):
        raise asyncio.CancelledError()   # e.g. a library cancelling its own inner task


async def test_runner_survives_an_evaluator_raising_cancelled(tmp_path):
    store = SQLiteStore(tmp_path / "ess.db")
    manual = ManualTriggerEmergencyEvaluator()
    ctl = EmergencyStopController(store=store, exchange=None)
    ess = EmergencyStopSystem([manual, CancelsItself()], ctl, store, 0.1)
    task = ess.start()
    await asyncio.sleep(0.3)
    manual.trigger("operator stop")
    await asyncio.sleep(0.3)
    alive = not task.done()
    latched = (await store.load_state()).active
    if not task.done():
        await ess.stop()
    await store.close()
    assert alive, "the evaluator loop died: no trigger can fire any more, the gate still says allowed"
    assert latched


# F3 ---------------------------------------------------------------------------------------------
async def test_seed_store_losing_the_key_does_not_unlatch_silently():
    """A seed policy store that loses emergency_stop (eviction, restart of an in-memory store)
    un-latches the ESS on the next refresh with no audited reset."""
    ps = MemoryPolicyStore()
    ctl = EmergencyStopController(ps, exchange=None)
    await ctl.activate("Daily PnL catastrophic: -12.00%")
    assert ctl.is_active
    ps._data.clear()                          # the key is gone
    await ctl.refresh()
    resets = [r for r in await ctl.store.read_audit() if r.action == "reset"]
    assert ctl.is_active or resets, "un-latched without an audited reset"


# F4 ---------------------------------------------------------------------------------------------
async def test_lease_does_not_flap_between_two_live_runners(tmp_path):
    """Config allows check_interval > lease_ttl (defaults are equal: 5 s and 5 s). The lease is
    renewed only at the start of a cycle, so a live holder loses it to a standby every cycle."""
    db = tmp_path / "ess.db"
    a_store, b_store = SQLiteStore(db), SQLiteStore(db)
    a = EmergencyStopSystem([], EmergencyStopController(store=a_store), a_store, 1.5,
                            lease_ttl_sec=1.0, holder="A")
    b = EmergencyStopSystem([], EmergencyStopController(store=b_store), b_store, 1.5,
                            lease_ttl_sec=1.0, holder="B")
    a.start()
    await asyncio.sleep(1.2)   # B polls inside A's expired window
    b.start()
    await asyncio.sleep(4.0)
    await a.stop(); await b.stop()
    rows = [r for r in await a_store.read_audit() if r.action == "lease_acquired"]
    await a_store.close(); await b_store.close()
    holders = [r.actor for r in reversed(rows)]
    assert holders == ["A"], f"lease changed hands while both runners were alive: {holders}"


# F5 ---------------------------------------------------------------------------------------------
async def test_reset_cannot_unlatch_an_activation_nobody_reviewed(tmp_path):
    """The guided reset screen is built for the activation on screen (ResetScreen(view.state)) and
    stays open across a reset elsewhere + a new latch; host.reset() then un-latches the NEW one."""
    store = SQLiteStore(tmp_path / "ess.db")
    ctl = EmergencyStopController(store=store, exchange=None)
    reviewed = await ctl.latch("drill: manual stop")          # operator A opens the reset wizard
    other = EmergencyStopController(store=SQLiteStore(tmp_path / "ess.db"), acting=False)
    await other.reset("operator B", "drill over")               # B resets from the CLI
    await other.latch("Daily PnL catastrophic: -12.00%")        # a real trigger: activation #2
    await other.store.close()
    await ctl.refresh()
    # A finishes the wizard built for activation #1 and types RESET:
    try:
        await ctl.reset("operator A", "drill reviewed",
                        expected_activation=reviewed.activation_count)
    except StaleResetError:
        pass
    state = await store.load_state()
    await store.close()
    assert state.active, "activation #2 (-12% daily loss) was un-latched by a reset reviewing #1"

    async with SQLiteStore(tmp_path / "ess.db") as check:
        rows = await check.read_audit(5)
    assert rows[0].action == "reset_refused" and "reviewed #1" in rows[0].reason


async def test_a_position_that_appears_while_latched_is_flattened_again(tmp_path):
    """Once flat, a position opened by an ungated process is closed again, and it is audited."""
    from ess_tui.config import load_settings
    from ess_tui.runtime.assembly import Runtime

    settings = load_settings(None, db=str(tmp_path / "ess.db"), check_interval=0.1,
                             paper={"latency_ms": 0.0, "drift": False})
    rt = await Runtime.build(settings)
    await rt.start()
    try:
        await rt.manual_stop("drill", actor="alice")
        assert (await rt.controller.wait_flattened(timeout=5)).flat
        await rt.paper.place_order("BTC/USDT", "buy", 0.5)  # a strategy that ignored the gate
        for _ in range(500):
            if not rt.paper.snapshot().positions and not rt.controller.flattening:
                break
            await asyncio.sleep(0.01)
        assert not rt.paper.snapshot().positions
        actions = [r.action for r in await rt.store.read_audit()]
        assert "reflatten" in actions
    finally:
        await rt.stop()


async def test_the_seed_event_bus_gets_one_stop_event_per_activation_however_often_it_flattens():
    from ess_tui.engine.venue import Position
    from ess_tui.testing.fakes import FakeVenue, RecordingEventBus

    venue = FakeVenue(positions=[Position("BTC/USDT", "long", 1.0)])
    bus = RecordingEventBus()
    ctl = EmergencyStopController(MemoryPolicyStore(), venue, bus, retry=FAST)
    await ctl.activate("x")
    venue.positions = [Position("ETH/USDT", "short", 2.0)]
    assert await ctl.flatten_again("appeared while latched")
    await ctl.wait_flattened(timeout=2)
    assert venue.positions == [] and len(bus.of_type("emergency.stop")) == 1
