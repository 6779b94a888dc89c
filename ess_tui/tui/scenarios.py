"""Deterministic scenarios of the control room, shared by the snapshot tests and the screenshots.

Each scenario is a world (armed, warning, latched), a theme and the keys an operator presses to
reach a screen. The world is a :class:`ScenarioHost`: an in-memory engine with a fixed clock, fixed
evaluations, the embedded demo book and a small audit trail, so a picture never depends on timing.

    python -m ess_tui.tui.screenshots        # writes screenshots/*.svg from these scenarios
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from ess_tui.engine.state import (
    EmergencyState,
    ESSStatus,
    Evaluation,
    FlattenProgressEvent,
    FlattenReport,
)
from ess_tui.engine.store import AuditRecord, AuditVerification, NotLatchedError
from ess_tui.engine.venue import Order, Position
from ess_tui.tui import messages
from ess_tui.runtime.drills import DRILLS
from ess_tui.runtime.panel import VenueSnapshot
from ess_tui.tui.engine_host import EngineHost, EngineView

if TYPE_CHECKING:
    from textual.app import App
    from textual.pilot import Pilot

    from ess_tui.tui.app import ControlRoomApp

SIZE = (120, 40)
#: The scenario clock: the moment every picture is taken.
NOW = datetime(2025, 11, 30, 4, 7, 43, tzinfo=timezone.utc)
#: When the latched scenario latched.
LATCHED_AT = datetime(2025, 11, 30, 4, 3, 31, tzinfo=timezone.utc)

MARKS = {"BTC/USDT": 96_350.0, "ETH/USDT": 3_431.5, "SOL/USDT": 176.2, "XRP/USDT": 2.418}


def fixed_clock() -> datetime:
    return NOW


def demo_book() -> tuple[tuple[Position, ...], tuple[Order, ...]]:
    """The embedded default's book (see ``ess_tui.venues.paper.demo``) at fixed marks."""
    from ess_tui.venues.paper.demo import DEMO_ORDERS, DEMO_POSITIONS

    positions = tuple(
        Position(symbol, side, amount, entry, MARKS[symbol])  # type: ignore[arg-type]
        for symbol, side, amount, entry in DEMO_POSITIONS
    )
    orders = tuple(
        Order(f"paper-{i}", symbol, side, amount, price, kind, reduce_only)  # type: ignore[arg-type]
        for i, (symbol, side, amount, kind, price, reduce_only) in enumerate(DEMO_ORDERS, 1)
    )
    return positions, orders


def _ev(name: str, proximity: float | None, reading: str, *, ago: float = 1.2,
        triggered: bool = False, reason: str | None = None, error: str | None = None) -> Evaluation:
    return Evaluation(name=name, triggered=triggered, reason=reason, proximity=proximity,
                      reading=reading, checked_at=NOW - timedelta(seconds=ago), error=error)


def evaluations(world: str) -> tuple[Evaluation, ...]:
    """The gauges of a world: the five built-in triggers and one custom evaluator."""
    if world == "latched":
        drawdown = _ev("Drawdown", 1.0, "daily PnL -12.04% of -10.00% · drawdown 14.10% of 25.00%",
                       triggered=True, reason="Daily PnL catastrophic: -12.04%")
        execution = _ev("Execution", 0.7, "7 SL hits in 15 min (fires above 10)")
        feed = _ev("Data feed", 0.01, "last update 2 s ago (limit 5 min)")
    elif world == "warning":
        drawdown = _ev("Drawdown", 0.86, "daily PnL -8.60% of -10.00% · drawdown 9.80% of 25.00%")
        execution = _ev("Execution", 0.5, "5 SL hits in 15 min (fires above 10)")
        feed = _ev("Data feed", 0.01, "last update 1 s ago (limit 5 min)")
    else:
        drawdown = _ev("Drawdown", 0.42, "daily PnL -4.20% of -10.00% · drawdown 5.10% of 25.00%")
        execution = _ev("Execution", 0.1, "1 SL hits in 15 min (fires above 10)")
        feed = _ev("Data feed", 0.0, "last update 0 s ago (limit 5 min)")
    return (
        _ev("Manual", 0.0, "not triggered"),
        drawdown,
        _ev("System health", 0.12,
            "HEALTHY: event-loop lag 2 ms · venue last answered 1 s ago · store write 1 ms"),
        execution,
        feed,
        _ev("API Key", None, "not triggered (custom check, no proximity)", ago=3.4),
    )


def _hash(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


class ScenarioHost(EngineHost):
    """An in-memory engine with a fixed clock: same answers every run."""

    def __init__(self, world: str = "armed", *, two_person: bool = False) -> None:
        self.world = world
        self.clock = fixed_clock
        self.venue_name = "paper"
        self.is_paper = True
        self.manual_name = "Manual"
        self.two_person = two_person
        self._app: App[Any] | None = None
        self.evaluations = evaluations(world)
        self.version = 1
        positions, orders = demo_book()
        self.audit_rows: list[AuditRecord] = []
        self._audit(LATCHED_AT - timedelta(days=1, hours=3), "activate", "ess",
                    "Data feed stale: no update for 5.2 min", {"activation_count": 1})
        self._audit(LATCHED_AT - timedelta(days=1, hours=2), "reset", "maria",
                    "feed provider failover fixed", {"via": "control-room"})
        self._audit(LATCHED_AT - timedelta(hours=2), "drill", "maria",
                    "prices fall 12% against the book", {"drill": "crash"})
        self.report: FlattenReport | None = None
        if world == "latched":
            self.state = EmergencyState(ESSStatus.ACTIVE, "Daily PnL catastrophic: -12.04%",
                                        LATCHED_AT, 2, "maria", LATCHED_AT - timedelta(days=1, hours=2))
            self._audit(LATCHED_AT, "activate", "ess", self.state.reason,
                        {"activation_count": 2, "source": "Drawdown"})
            self.report = FlattenReport(orders_canceled=7, positions_closed=4, flat=True, attempts=1,
                                        venue_calls=12)
            self._audit(LATCHED_AT + timedelta(seconds=1), "flattened", "ess", None,
                        {"orders_canceled": 7, "positions_closed": 4, "flat": True, "attempts": 1})
            self.venue = VenueSnapshot("paper", (), (), 87_960.12, NOW)
        else:
            self.state = EmergencyState(ESSStatus.INACTIVE, None, None, 1, "maria",
                                        LATCHED_AT - timedelta(days=1, hours=2))
            equity = 95_800.0 if world == "armed" else 91_400.0
            self.venue = VenueSnapshot("paper", positions, orders, equity, NOW)

    def _audit(self, at: datetime, action: str, actor: str, reason: str | None,
               details: dict[str, Any] | None = None) -> None:
        prev = self.audit_rows[-1].hash if self.audit_rows else ""
        seq = len(self.audit_rows) + 1
        self.audit_rows.append(AuditRecord(seq, at, action, actor, reason, dict(details or {}),
                                           prev, _hash(seq, at, action, actor, reason, prev)))

    # --- EngineHost ------------------------------------------------------------------------------

    def attach(self, app: App[Any]) -> None:
        self._app = app
        app.post_message(messages.EngineReady("paper", True))
        if self.world == "latched":
            for offset, step, text in ((0.2, "cancel", "cancelled 7 order(s)"),
                                       (0.6, "close", "closed 4 position(s) reduce-only"),
                                       (0.9, "verify", "venue is flat")):
                app.post_message(messages.FlattenProgress(FlattenProgressEvent(
                    step, text, 1, None, LATCHED_AT + timedelta(seconds=offset))))
            assert self.report is not None
            app.post_message(messages.FlattenDone(self.report, LATCHED_AT + timedelta(seconds=1)))

    def view(self) -> EngineView:
        return EngineView(state=self.state, evaluations=self.evaluations, version=self.version,
                          last_report=self.report)

    async def rebaseline(self, kind: str, actor: str, reason: str) -> dict[str, Any]:
        if kind == "loss":
            details: dict[str, Any] = {
                "kind": kind, "old": {"day_start_equity": 100_000.0, "peak_equity": 102_400.0},
                "new": {"day_start_equity": 87_960.12, "peak_equity": 87_960.12}}
            self.evaluations = tuple(
                _ev("Drawdown", 0.0, "daily PnL 0.00% of -10.00% · drawdown 0.00% of 25.00%")
                if e.name == "Drawdown" else e for e in self.evaluations)
        else:
            details = {"kind": kind, "old": None, "new": NOW.isoformat()}
        self.version += 1
        self._audit(NOW, "rebaseline", actor, reason, details)
        return details

    async def manual_stop(self, reason: str, actor: str) -> EmergencyState:
        if not self.state.active:
            self.state = replace(self.state, status=ESSStatus.ACTIVE, reason=reason, timestamp=NOW,
                                 activation_count=self.state.activation_count + 1)
            self._audit(NOW, "activate", "ess", reason, {"operator": actor, "source": "manual"})
            if self._app is not None:
                self._app.post_message(messages.Latched(self.state, True))
        return self.state

    async def reset(
        self, reset_by: str, note: str | None, *, approver: str | None = None,
        override: str | None = None, expected_activation: int | None = None,
        venue_flat: bool | None = None, details: dict[str, Any] | None = None,
    ) -> EmergencyState:
        if not self.state.active:
            raise NotLatchedError("the ESS is not latched")
        self.state = replace(self.state, status=ESSStatus.INACTIVE, reason=None,
                             last_reset_by=reset_by, last_reset_at=NOW)
        self._audit(NOW, "reset", reset_by, note, {
            **(details or {}), "via": "tui", **({"approver": approver} if approver else {}),
            **({"override": override} if override else {})})
        if self._app is not None:
            self._app.post_message(messages.Reset(self.state, reset_by, note))
        return self.state

    async def audit(self, action: str, actor: str, reason: str | None = None,
                    details: dict[str, Any] | None = None) -> None:
        self._audit(NOW, action, actor, reason, details)

    async def read_audit(self, limit: int = 500) -> list[AuditRecord]:
        return list(reversed(self.audit_rows))[:limit]

    async def verify_audit(self) -> AuditVerification:
        return AuditVerification(ok=True, rows=len(self.audit_rows))

    async def venue_view(self, fresh: bool = False) -> VenueSnapshot:
        return self.venue

    async def drill(self, name: str, actor: str | None = None) -> str:
        self._audit(NOW, "drill", actor or "maria", DRILLS[name], {"drill": name})
        return DRILLS[name]


# --- scenarios -------------------------------------------------------------------------------------

Steps = Callable[["Pilot[Any]"], Awaitable[None]]


async def settle(pilot: Pilot[Any]) -> None:
    """Let messages, workers and layout finish."""
    await pilot.pause()
    # the STOP flow's worker waits on its modal: not part of settling
    waiting = [w for w in pilot.app.workers if w.group != "manual-stop"]
    if waiting:  # (an empty list would mean "every worker")
        await pilot.app.workers.wait_for_complete(waiting)
    await pilot.pause()


async def type_text(pilot: Pilot[Any], text: str) -> None:
    await pilot.press(*("space" if ch == " " else ch for ch in text))


async def _nothing(pilot: Pilot[Any]) -> None:
    await settle(pilot)


async def _quiet(pilot: Pilot[Any]) -> None:
    await settle(pilot)
    pilot.app.clear_notifications()
    await settle(pilot)


async def _stop_modal(pilot: Pilot[Any]) -> None:
    await settle(pilot)
    await pilot.press("f9")
    await settle(pilot)
    await type_into(pilot, "#stop-reason", "suspicious fills on BTC/USDT")
    await type_into(pilot, "#stop-confirm", "STOP")


async def press_on(pilot: Pilot[Any], selector: str, *keys: str) -> None:
    """Focus ``selector`` on the current screen and press ``keys`` (no mouse: toasts can't eat it)."""
    pilot.app.screen.query_one(selector).focus()
    await pilot.pause()
    await pilot.press(*keys)
    await settle(pilot)


async def type_into(pilot: Pilot[Any], selector: str, text: str) -> None:
    """Fill an Input as if typed (whole text at once: key-by-key typing is slow under Pilot)."""
    from textual.widgets import Input

    field = pilot.app.screen.query_one(selector, Input)
    field.focus()
    field.value = text
    field.cursor_position = len(text)
    await settle(pilot)


async def next_step(pilot: Pilot[Any]) -> None:
    """The reset's Next (called directly: Pilot key presses cost ~0.2 s each)."""
    pilot.app.screen.action_next()  # type: ignore[attr-defined]
    await settle(pilot)


async def _reset_to(step: int, pilot: Pilot[Any]) -> None:
    from textual.widgets import Checkbox

    await _quiet(pilot)
    await pilot.press("r")
    await settle(pilot)
    if step >= 2:
        await next_step(pilot)
        await type_into(pilot, "#override", "loss realised and accepted by the desk head")
    if step >= 3:
        pilot.app.screen._rebaseline("loss")  # type: ignore[attr-defined]
        await settle(pilot)
        await next_step(pilot)
        for box in pilot.app.screen.query(Checkbox):
            box.value = True
        await settle(pilot)
    if step >= 4:
        await next_step(pilot)
        await type_into(pilot, "#operator-note", "limit breach after CPI print, strategy paused")
    if step >= 5:
        await next_step(pilot)
        await type_into(pilot, "#confirm-word", "RESET")


def _reset_step(step: int) -> Steps:
    async def steps(pilot: Pilot[Any]) -> None:
        await _reset_to(step, pilot)

    return steps


async def _audit_screen(pilot: Pilot[Any]) -> None:
    await _quiet(pilot)
    await pilot.press("a")
    await settle(pilot)


async def _help_screen(pilot: Pilot[Any]) -> None:
    await _quiet(pilot)
    await pilot.press("question_mark")
    await settle(pilot)


@dataclass(frozen=True)
class Scenario:
    """One picture: a world, a theme and the operator's keys to reach the screen."""

    name: str
    world: str
    steps: Steps
    theme: str = "dark"
    caption: str = ""
    size: tuple[int, int] = SIZE


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("armed", "armed", _nothing, caption="Armed: every trigger well below its limit"),
    Scenario("warning", "warning", _nothing, caption="Daily loss at 86% of its limit: WARN band"),
    Scenario("latched", "latched", _nothing, caption="Latched by the daily-loss trigger; venue flat"),
    Scenario("stop-modal", "armed", _stop_modal, caption="Manual stop: a reason and STOP in full"),
    Scenario("reset-1-review", "latched", _reset_step(1), caption="Guided reset (a): what happened"),
    Scenario("reset-2-checks", "latched", _reset_step(2),
             caption="Guided reset (b): live checks name what would fire again; re-baseline offered"),
    Scenario("reset-3-attest", "latched", _reset_step(3), caption="Guided reset (c): attestations"),
    Scenario("reset-4-operator", "latched", _reset_step(4), caption="Guided reset (d): operator and note"),
    Scenario("reset-5-confirm", "latched", _reset_step(5), caption="Guided reset (e): RESET in full"),
    Scenario("audit", "latched", _audit_screen, caption="Audit trail, newest first, chain verified"),
    Scenario("help", "armed", _help_screen, caption="Keys (remappable) and drills"),
    Scenario("theme-light", "latched", _nothing, theme="light", caption="Light theme"),
    Scenario("theme-high-contrast", "latched", _nothing, theme="high-contrast",
             caption="High-contrast theme"),
    Scenario("theme-colour-blind-safe", "warning", _nothing, theme="colour-blind-safe",
             caption="Colour-blind-safe theme (no red/green pair carries meaning)"),
)

#: The same worlds on the desk's other terminals: 80×24 (narrow) and 200×50 (wide).
SIZED: tuple[Scenario, ...] = tuple(
    Scenario(f"{name}-{w}x{h}", world, steps, caption=f"{caption} ({w}×{h})", size=(w, h))
    for w, h in ((80, 24), (200, 50))
    for name, world, steps, caption in (
        ("armed", "armed", _nothing, "Armed"),
        ("warning", "warning", _nothing, "WARN band"),
        ("latched", "latched", _nothing, "Latched"),
        ("reset", "latched", _reset_step(2), "Guided reset: live checks"),
    )
)
SCENARIOS = SCENARIOS + SIZED

BY_NAME = {s.name: s for s in SCENARIOS}


def build_app(scenario: Scenario | str, *, prefs_path: Any = None) -> ControlRoomApp:
    """A frozen control room over the scenario's world, ready for ``run_test`` or a snapshot."""
    from pathlib import Path

    from ess_tui.tui.app import ControlRoomApp

    if isinstance(scenario, str):
        scenario = BY_NAME[scenario]
    return ControlRoomApp(
        None,
        host=ScenarioHost(scenario.world),
        clock=fixed_clock,
        frozen=True,
        user_theme_dir=Path("/nonexistent-ess-tui-themes"),
        prefs_path=prefs_path,
        theme=scenario.theme,
        operator="maria",
    )
