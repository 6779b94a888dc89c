"""The seed's usage blocks, run as written with the import path changed to ``ess_tui``."""

from __future__ import annotations

import asyncio
from typing import Optional

import pytest

from ess_tui.testing.fakes import FakeExchange, FakeHealthMonitor, FakeMetricsRepository, RecordingEventBus


class SyncPolicyStore:
    """A seed-world policy store with sync methods."""

    def __init__(self):
        self.data = {}

    def get(self, key):
        return self.data.get(key, {})

    def set(self, key, value):
        self.data[key] = value


class AsyncHealth:
    async def get_status(self):
        return "HEALTHY"


@pytest.mark.parametrize("health_monitor", [FakeHealthMonitor(), AsyncHealth()])
async def test_basic_setup_manual_activation_and_reset(health_monitor):
    from ess_tui import (
        DrawdownEmergencyEvaluator,
        EmergencyStopController,
        EmergencyStopSystem,
        ManualTriggerEmergencyEvaluator,
        SystemHealthEmergencyEvaluator,
    )

    metrics_repo = FakeMetricsRepository()
    policy_store = SyncPolicyStore()
    exchange_client = FakeExchange()
    event_bus = RecordingEventBus()

    # --- Basic Setup -------------------------------------------------------------------------
    evaluators = [
        DrawdownEmergencyEvaluator(
            metrics_repo=metrics_repo,
            max_daily_loss_percent=10.0,
            max_equity_drawdown_percent=25.0,
        ),
        SystemHealthEmergencyEvaluator(
            health_monitor=health_monitor,
        ),
    ]
    controller = EmergencyStopController(
        policy_store=policy_store,
        exchange=exchange_client,
        event_bus=event_bus,
    )
    ess = EmergencyStopSystem(
        evaluators=evaluators,
        controller=controller,
        policy_store=policy_store,
        check_interval_sec=5,
    )
    ess_task = ess.start()
    await asyncio.sleep(0.05)
    assert ess._running and not controller.is_active

    # --- Manual Activation, via the manual trigger evaluator ---------------------------------
    manual_trigger = ManualTriggerEmergencyEvaluator()
    evaluators.append(manual_trigger)
    manual_trigger.trigger("Admin emergency stop")
    for _ in range(200):  # woken at once, not after the 5 s tick
        if controller.is_active:
            break
        await asyncio.sleep(0.005)
    assert controller.is_active
    assert policy_store.get("emergency_stop")["active"] is True
    assert policy_store.get("emergency_stop")["reason"] == "Admin emergency stop"

    # Other components check the key before trading, as the seed shows.
    ess_state = policy_store.get("emergency_stop")
    assert ess_state.get("active")

    # --- Manual Reset ------------------------------------------------------------------------
    await controller.reset("admin")
    print(f"ESS Active: {controller.is_active}")
    print(f"Status: {controller.state.status}")
    from ess_tui import ESSStatus

    assert controller.is_active is False and controller.state.status is ESSStatus.INACTIVE
    assert policy_store.get("emergency_stop")["active"] is False

    # --- Direct activation -------------------------------------------------------------------
    await controller.activate("Suspicious activity detected")
    assert controller.state.activation_count == 2
    stops = event_bus.of_type("emergency.stop")
    assert [e.reason for e in stops] == ["Admin emergency stop", "Suspicious activity detected"]
    assert event_bus.of_type("emergency.reset")[0].reset_by == "admin"

    ess.stop()
    await asyncio.wait_for(ess_task, 2)


async def test_custom_evaluator_from_the_seed():
    from ess_tui import EmergencyConditionEvaluator, EmergencyStopController, EmergencyStopSystem

    class AuthenticationError(Exception):
        pass

    class Client:
        ok = True

        async def get_account_balance(self):
            if not self.ok:
                raise AuthenticationError("revoked")
            return 1.0

    class APIKeyEmergencyEvaluator(EmergencyConditionEvaluator):
        """Triggers ESS if API key becomes invalid."""

        def __init__(self, exchange_client):
            self.exchange_client = exchange_client

        @property
        def name(self) -> str:
            return "API Key Emergency"

        async def check(self) -> tuple[bool, Optional[str]]:
            try:
                await self.exchange_client.get_account_balance()
                return (False, None)
            except AuthenticationError:
                return (True, "API key invalid or revoked")
            except Exception:
                return (False, None)

    client = Client()
    evaluator = APIKeyEmergencyEvaluator(client)
    assert isinstance(evaluator, EmergencyConditionEvaluator)
    controller = EmergencyStopController(exchange=FakeExchange())
    ess = EmergencyStopSystem([evaluator], controller, None, 1)
    [ev] = await ess.run_cycle()
    assert ev.proximity is None and not ev.triggered  # no proximity: shown without a bar
    client.ok = False
    await ess.run_cycle()
    assert controller.state.reason == "API key invalid or revoked"


async def test_manual_testing_drawdown_example():
    from ess_tui import DrawdownEmergencyEvaluator

    async def test_drawdown():
        metrics = FakeMetricsRepository()
        metrics.daily_pnl_pct = -15.0  # Trigger

        evaluator = DrawdownEmergencyEvaluator(metrics)
        triggered, reason = await evaluator.check()

        assert triggered
        print(f"Triggered: {reason}")
        return reason

    assert await test_drawdown() == "Daily PnL catastrophic: -15.00%"


def test_seed_names_import_without_ccxt_or_textual():
    import subprocess
    import sys

    code = (
        "import sys, ess_tui\n"
        "from ess_tui import (EmergencyStopSystem, EmergencyStopController, EmergencyState, ESSStatus,"
        " EmergencyStopEvent, EmergencyResetEvent, DrawdownEmergencyEvaluator,"
        " SystemHealthEmergencyEvaluator, ExecutionErrorEmergencyEvaluator,"
        " DataFeedEmergencyEvaluator, ManualTriggerEmergencyEvaluator, EmergencyConditionEvaluator)\n"
        "import ess_tui.gate\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('ccxt', 'textual')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_gate_import_is_light():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import ess_tui.gate"],
        capture_output=True, text=True, check=True,
    ).stderr
    modules = {line.split("|")[-1].strip().split(".")[0] for line in out.splitlines() if "|" in line}
    assert not modules & {"ccxt", "textual", "aiosqlite", "pydantic"}, modules & {"ccxt", "textual", "aiosqlite", "pydantic"}


def test_seed_event_shapes():
    from datetime import datetime, timezone

    from ess_tui import EmergencyResetEvent, EmergencyStopEvent

    now = datetime.now(timezone.utc)
    stop = EmergencyStopEvent(reason="r", timestamp=now, positions_closed=2, orders_canceled=3)
    reset = EmergencyResetEvent(timestamp=now, reset_by="admin")
    assert (stop.type, reset.type) == ("emergency.stop", "emergency.reset")
