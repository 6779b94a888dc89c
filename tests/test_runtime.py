"""The assembled ESS on the embedded paper world, and the ccxt world's config checks."""

from __future__ import annotations

import asyncio
import time

import pytest

from ess_tui.config import ConfigError, load_settings
from ess_tui.runtime.assembly import Runtime


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return load_settings(None, db=str(tmp_path / "ess.db"), check_interval=0.1,
                         paper={"latency_ms": 1.0, "tick_interval": 0.05})


async def wait_for(predicate, timeout=5.0):
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_crash_drill_fires_the_drawdown_trigger_and_flattens_the_paper_book(settings):
    rt = await Runtime.build(settings)
    await rt.start()
    try:
        assert await wait_for(lambda: len(rt.system.last_evaluations) == 5)
        assert not rt.controller.is_active
        assert rt.paper.snapshot().positions  # the demo book is open
        await rt.drill("crash", actor="drill-operator")
        assert await wait_for(lambda: rt.controller.is_active)
        assert rt.controller.state.reason.startswith("Daily PnL catastrophic")
        report = await rt.controller.wait_flattened(timeout=5)
        assert report is not None and report.flat is True
        snap = rt.paper.snapshot()
        assert not snap.positions and not snap.orders
        actions = [r.action for r in await rt.store.read_audit(newest_first=False)]
        assert actions.index("drill") < actions.index("activate") < actions.index("flattened")
        drill = next(r for r in await rt.store.read_audit() if r.action == "drill")
        assert drill.details == {"drill": "crash"} and drill.actor == "drill-operator"
    finally:
        await rt.stop()


async def test_manual_stop_is_durable_when_it_returns(settings):
    import sqlite3

    rt = await Runtime.build(settings)
    await rt.start()
    try:
        state = await rt.manual_stop("operator saw a runaway algo", actor="alice")
        with sqlite3.connect(settings.db_path) as conn:
            active, reason = conn.execute("SELECT active, reason FROM state").fetchone()
        assert state.active and active == 1 and reason == "operator saw a runaway algo"
        latch_row = next(r for r in await rt.store.read_audit() if r.action == "activate")
        assert latch_row.actor == "alice"  # the operator, not the engine, is on the record
        # The controller enforces the reset policy now: the venue must be verified flat first.
        assert (await rt.controller.wait_flattened(timeout=5)).flat
        await rt.reset("alice", note="algo disabled")
        await asyncio.sleep(0.3)  # several cycles: the manual trigger must not re-latch
        assert not rt.controller.is_active
    finally:
        await rt.stop()


@pytest.mark.parametrize(
    "venue, fragment",
    [
        ({"kind": "ccxt", "exchange": "no-such-exchange", "symbols": ["BTC/USDT:USDT"]}, "no-such-exchange"),
        ({"kind": "ccxt", "exchange": "okx", "symbols": ["BTC/USDT:USDT"], "bogus": 1}, "bogus"),
    ],
)
async def test_bad_ccxt_config_is_one_line_before_anything_runs(tmp_path, monkeypatch, venue, fragment):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, db=str(tmp_path / "ess.db"), venue=venue)
    with pytest.raises(ConfigError) as err:
        await Runtime.build(settings)
    assert fragment in str(err.value) and "\n" not in str(err.value)
