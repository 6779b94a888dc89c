"""Scoped halts flatten what they cover and only that (issue 15): a venue halt flattens that venue,
a strategy halt cancels only orders tagged with the strategy, reduce-only flattens nothing; the
runner does it on its cycle for a latch written by the real CLI in another process."""

from __future__ import annotations

import os
import subprocess
import sys

from ess_tui import EmergencyStopController, EmergencyStopSystem
from ess_tui.engine.flatten import RetryPolicy
from ess_tui.engine.scoped_flatten import ScopeActor
from ess_tui.engine.scopes import HALT, REDUCE_ONLY, Scope
from ess_tui.gate import TradeGate
from ess_tui.store.sqlite import SQLiteStore
from ess_tui.testing.fakes import FakeVenue
from ess_tui.venues.paper import PaperExchange

FAST = RetryPolicy(initial_sec=0.001, max_sec=0.005, jitter=0.0)


def venue(name: str) -> PaperExchange:
    ex = PaperExchange(name=name, volatility=0.0)
    ex.seed_position("BTC/USDT", "long", 1.0)
    mid = ex.market.mid("BTC/USDT")
    ex.seed_order("BTC/USDT", "buy", 0.1, "limit", mid * 0.5, client_order_id="mm-btc-1")
    ex.seed_order("BTC/USDT", "buy", 0.1, "limit", mid * 0.5, client_order_id="mm-btc-2")
    ex.seed_order("BTC/USDT", "buy", 0.1, "limit", mid * 0.5, client_order_id="arb-1")
    ex.seed_order("BTC/USDT", "buy", 0.1, "limit", mid * 0.5)
    return ex


async def test_venue_halt_flattens_that_venue_only_and_the_gate_stays_open_elsewhere(tmp_path):
    db = tmp_path / "ess.db"
    store = SQLiteStore(db)
    okx, bybit = venue("okx"), venue("bybit")
    await store.latch_scope(Scope("venue", "okx"), HALT, "okx misbehaves", actor="al")
    (on_okx,) = await ScopeActor(store, okx).act()
    (on_bybit,) = await ScopeActor(store, bybit).act()
    assert okx.snapshot().flat and on_okx.canceled == 4 and on_okx.closed == 1
    assert len(bybit.snapshot().orders) == 4 and len(bybit.snapshot().positions) == 1
    assert "not this venue" in on_bybit.notes[0]
    gate = TradeGate(db)
    assert not gate.check(venue="okx").allowed and gate.check(venue="bybit").allowed
    assert not (await store.load_state()).active  # the desk is not halted
    assert (await store.verify_audit()).ok
    actions = [r.action for r in await store.read_audit()]
    assert actions.count("scope_flattened") == 2
    await store.close()


async def test_strategy_halt_cancels_only_that_strategys_tagged_orders_and_says_what_it_cannot(tmp_path):
    store = SQLiteStore(tmp_path / "ess.db")
    ex = venue("okx")
    await store.latch_scope(Scope("strategy", "mm-btc"), HALT, "mm runaway")
    (report,) = await ScopeActor(store, ex).act()
    left = sorted(o.client_order_id or "-" for o in ex.snapshot().orders)
    assert left == ["-", "arb-1"] and report.canceled == 2
    assert len(ex.snapshot().positions) == 1 and report.closed == 0  # netted: not closed
    assert any("nets positions" in note for note in report.notes)
    # a venue that cannot tell strategies apart: nothing flattened, and it says so
    fake = FakeVenue()
    (plain,) = await ScopeActor(store, fake).act()
    assert plain.canceled == plain.closed == 0
    assert any("cannot tell strategies' orders apart" in note for note in plain.notes)
    await store.close()


async def test_reduce_only_flattens_nothing(tmp_path):
    store = SQLiteStore(tmp_path / "ess.db")
    ex = venue("okx")
    await store.latch_scope(Scope("venue", "okx"), REDUCE_ONLY, "soft")
    await store.latch_scope(Scope(), REDUCE_ONLY, "desk soft")
    assert await ScopeActor(store, ex).act() == []
    assert len(ex.snapshot().orders) == 4 and len(ex.snapshot().positions) == 1
    await store.close()


async def test_the_runner_flattens_a_venue_halt_written_by_the_cli_and_escalation_flattens(tmp_path):
    db = tmp_path / "ess.db"
    store = SQLiteStore(db)
    ex = venue("okx")
    controller = EmergencyStopController(store, ex, retry=FAST)
    ess = EmergencyStopSystem([], controller, store, 0.1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
    env.update(XDG_STATE_HOME=str(tmp_path / "s"), XDG_CONFIG_HOME=str(tmp_path / "c"))

    def cli(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "ess_tui", "activate", "--db", str(db),
                               "--scope", "venue=okx", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr

    cli("--reason", "soft", "--level", "reduce-only")
    await ess.run_cycle()
    assert len(ex.snapshot().orders) == 4  # reduce-only: nothing flattened
    cli("--reason", "hard")  # escalation reduce-only -> halt flattens
    await ess.run_cycle()
    assert ex.snapshot().flat
    assert not controller.is_active  # a scoped halt is not the seed's active
    await store.close()


async def test_daily_loss_latches_reduce_only_at_7_then_halt_at_10_flattens(tmp_path):
    from ess_tui.config import load_settings
    from ess_tui.engine.evaluators import DrawdownEmergencyEvaluator
    from ess_tui.runtime.levels import level_triggers
    from ess_tui.testing.fakes import FakeMetricsRepository

    db = tmp_path / "ess.db"
    settings = load_settings(None, levels={"reduce_only_daily_loss": 7.0})
    metrics = FakeMetricsRepository()
    store = SQLiteStore(db)
    ex = venue("okx")
    controller = EmergencyStopController(store, ex, retry=FAST)
    ess = EmergencyStopSystem([DrawdownEmergencyEvaluator(metrics, settings.max_daily_loss, 25.0)],
                              controller, store, 0.1)
    ess.level_triggers = level_triggers(settings, metrics, None)
    gate = TradeGate(db)
    metrics.daily_pnl_pct = -5.0
    await ess.run_cycle()
    assert gate.check().allowed
    metrics.daily_pnl_pct = -8.0
    await ess.run_cycle()
    await ess.run_cycle()  # latched once, not again each cycle
    blocked, reducing = gate.check(), gate.check(reduce_only=True)
    assert not blocked.allowed and blocked.level == REDUCE_ONLY and "-8.00%" in blocked.reason
    assert reducing.allowed
    assert not controller.is_active and len(ex.snapshot().orders) == 4  # no flatten
    metrics.daily_pnl_pct = 0.0
    await ess.run_cycle()
    assert not gate.check().allowed  # never cleared by itself
    metrics.daily_pnl_pct = -11.0
    await ess.run_cycle()
    assert controller.is_active
    await controller.wait_flat() if hasattr(controller, "wait_flat") else None
    for _ in range(200):
        if ex.snapshot().flat:
            break
        await __import__("asyncio").sleep(0.01)
    assert ex.snapshot().flat and gate.check(reduce_only=True).level == HALT
    actions = [r.action for r in await store.read_audit(None, newest_first=False)]
    assert actions.count("scope_latch") == 1 and "activate" in actions
    await store.close()


def test_reduce_only_threshold_must_be_below_the_halt_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
    env.update(QT_ESS_LEVELS__REDUCE_ONLY_DAILY_LOSS="12", QT_ESS_MAX_DAILY_LOSS="10")
    done = subprocess.run([sys.executable, "-m", "ess_tui", "status", "--db", str(tmp_path / "x")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and "must be below max_daily_loss" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_scoped_halt_resets_without_override_once_the_runner_reported_it_flat(tmp_path,
                                                                                 capsys):
    import asyncio

    from ess_tui.cli import main

    db = tmp_path / "ess.db"
    ex = venue("okx")

    async def latch() -> None:
        store = SQLiteStore(db)
        await store.latch_scope(Scope("venue", "okx"), HALT, "okx")
        await store.close()

    async def act() -> None:
        store = SQLiteStore(db)
        await ScopeActor(store, ex).act()
        await store.close()

    asyncio.run(latch())
    args = ["reset", "--db", str(db), "--by", "bob", "--yes", "--scope", "venue=okx"]
    assert main(args) == 1
    assert "not reported done" in capsys.readouterr().err
    asyncio.run(act())
    assert ex.snapshot().flat
    assert main(args) == 0
    assert TradeGate(db).check(venue="okx").allowed
