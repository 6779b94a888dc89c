"""The operator's paths through the control room, on the real engine over a temporary database.

Each test runs the app with Pilot; the engine runs on its own thread as in production. What the
store says is read through a second connection, as another process would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.widgets import Button, Input

from ess_tui.config import Settings
from ess_tui.engine.state import utcnow
from ess_tui.store.sqlite import SQLiteStore
from ess_tui.tui.app import ControlRoomApp
from ess_tui.tui.screens.reset import ResetScreen
from ess_tui.tui.screens.stop import StopModal

SIZE = (120, 40)


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "db": tmp_path / "ess.db",
        "check_interval": 0.5,
        "paper": {"latency_ms": 0.0, "drift": False},
    }
    base.update(overrides)
    return Settings(**base)


def make_app(tmp_path: Path, **overrides: Any) -> ControlRoomApp:
    return ControlRoomApp(settings(tmp_path, **overrides), frozen=True, operator="maria",
                          user_theme_dir=tmp_path / "no-themes")


async def until(pilot: Any, predicate: Callable[[], bool], timeout: float = 10.0,
                why: Callable[[], str] | None = None) -> None:
    """Pause the pilot until ``predicate()`` holds (fails the test after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in time; {why() if why else ''}")
        await pilot.pause(0.02)


async def engine_up(pilot: Any) -> ControlRoomApp:
    app: ControlRoomApp = pilot.app
    await until(pilot, lambda: app._engine_ready and bool(app.host.view().evaluations))
    return app


async def stored(db: Path) -> tuple[Any, list[Any]]:
    """The latch and the audit trail as another process sees them."""
    store = SQLiteStore(db, create=False)
    try:
        return await store.load_state(), await store.read_audit(500)
    finally:
        await store.close()


def fill(app: ControlRoomApp, selector: str, text: str) -> None:
    field = app.screen.query_one(selector, Input)
    field.focus()
    field.value = text


async def press_button(pilot: Any, selector: str) -> None:
    """Tab to a button and press Enter, as an operator at the keyboard would."""
    button = pilot.app.screen.query_one(selector, Button)
    button.focus()
    await until(pilot, lambda: not button.has_class("-active"))  # a button ignores presses 0.2 s
    await pilot.press("enter")


async def open_stop(pilot: Any, reason: str = "suspicious fills") -> ControlRoomApp:
    app = await engine_up(pilot)
    await pilot.press("f9")
    await until(pilot, lambda: isinstance(app.screen, StopModal))
    fill(app, "#stop-reason", reason)
    app.screen.query_one("#stop-confirm", Input).focus()
    await pilot.pause()
    return app


class TestManualStop:
    async def test_wrong_confirmation_cannot_latch(self, tmp_path: Path) -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await open_stop(pilot)
            await pilot.press("s", "t", "o", "p", "enter")  # lower case is not STOP
            await pilot.pause(0.2)
            assert isinstance(app.screen, StopModal)
            assert app.screen.query_one("#stop-go", Button).disabled
            assert "exactly" in str(app.screen.query_one("#stop-error").render())
            fill(app, "#stop-confirm", "STOP now")
            await pilot.press("enter")
            await pilot.pause(0.2)
            assert isinstance(app.screen, StopModal)
        state, rows = await stored(tmp_path / "ess.db")
        assert not state.active
        assert not [r for r in rows if r.action == "activate"]

    async def test_escape_cancels_and_writes_nothing(self, tmp_path: Path) -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await open_stop(pilot)
            await pilot.press("S", "T", "O", "P")
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, StopModal))
            await pilot.pause(0.3)
            assert app.dashboard.banner.mode == "armed"
        state, rows = await stored(tmp_path / "ess.db")
        assert not state.active
        assert not [r for r in rows if r.action in ("activate", "extra_trigger")]

    async def test_stop_latches_durably_before_the_banner_says_latched(self, tmp_path: Path) -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await open_stop(pilot, "fat finger on ETH")
            await pilot.press("S", "T", "O", "P", "enter")
            # The modal closes with the reason; the app latches, and only a durable latch
            # finishes the stop.
            await until(pilot, lambda: not isinstance(app.screen, StopModal))
            await until(pilot, lambda: not app._latching and app.host.view().state.active)
            state, rows = await stored(tmp_path / "ess.db")
            assert state.active and state.reason == "fat finger on ETH"
            activate = [r for r in rows if r.action == "activate"]
            assert activate and activate[0].actor == "maria"
            await until(pilot, lambda: app.dashboard.banner.mode == "latched")
            assert "fat finger on ETH" in str(app.dashboard.banner.render())
            assert any(kind == "LATCH" for _, kind, _ in app.dashboard.log_widget.entries)

    async def test_stop_key_works_from_the_audit_screen(self, tmp_path: Path) -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await engine_up(pilot)
            await pilot.press("a")
            await pilot.pause(0.1)
            await pilot.press("f9")
            await until(pilot, lambda: isinstance(app.screen, StopModal))


async def latch_via_ui(pilot: Any, reason: str = "drill: rehearse reset") -> ControlRoomApp:
    app = await engine_up(pilot)
    await app.host.manual_stop(reason, "maria")
    await until(pilot, lambda: app.dashboard.banner.mode == "latched")
    deadline = time.monotonic() + 5
    while not (await app.host.venue_view()).flat:  # flattened, and the book read since
        assert time.monotonic() < deadline, "the paper venue did not go flat"
        await pilot.pause(0.1)
    return app


class TestGuidedReset:
    async def test_reset_is_refused_while_armed(self, tmp_path: Path) -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await engine_up(pilot)
            assert app.check_action("reset", ()) is None  # greyed out in the footer
            await pilot.press("r")
            await pilot.pause(0.2)
            assert not isinstance(app.screen, ResetScreen)

    async def test_full_reset_clears_the_latch_and_audits_each_step(self, tmp_path: Path) -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await latch_via_ui(pilot)
            assert app.check_action("reset", ()) is True
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, ResetScreen))
            screen = app.screen
            assert isinstance(screen, ResetScreen)
            # (a) review → (b) checks: the manual trigger is cleared by the reset itself, so the
            # checks pass on a flat paper venue.
            await press_button(pilot, "#reset-next")
            await until(pilot, lambda: screen.step_name == "checks" and bool(screen.checks))
            assert all(c.ok for c in screen.checks), screen.checks
            await press_button(pilot, "#reset-next")
            await until(pilot, lambda: screen.step_name == "attest",
                        why=lambda: str(screen.query_one("#reset-error").render()))
            # (c) Next without the attestations is refused.
            await press_button(pilot, "#reset-next")
            await pilot.pause(0.2)
            assert screen.step_name == "attest"
            assert "Not attested" in str(screen.query_one("#reset-error").render())
            for key in ("root_cause", "fix_in_place", "paper_checked"):
                screen.query_one(f"#attest-{key}").focus()
                await pilot.press("space")
            await press_button(pilot, "#reset-next")
            await until(pilot, lambda: screen.step_name == "operator")
            fill(app, "#operator-note", "rehearsal done")
            await press_button(pilot, "#reset-next")
            await until(pilot, lambda: screen.step_name == "confirm")
            # (e) anything but RESET cannot confirm.
            fill(app, "#confirm-word", "reset")
            await pilot.pause()
            assert screen.query_one("#reset-go", Button).disabled
            await pilot.press("enter")
            await pilot.pause(0.2)
            assert isinstance(app.screen, ResetScreen)
            fill(app, "#confirm-word", "RESET")
            await pilot.press("enter")
            await until(pilot, lambda: not isinstance(app.screen, ResetScreen))
            await until(pilot, lambda: app.dashboard.banner.mode == "armed")
        state, rows = await stored(tmp_path / "ess.db")
        assert not state.active and state.last_reset_by == "maria"
        actions = [r.action for r in reversed(rows)]
        assert "reset_started" in actions
        steps = [r.details.get("step") for r in rows if r.action == "reset_step"]
        assert sorted(steps) == ["attest", "checks", "operator", "review"]
        reset_row = next(r for r in rows if r.action == "reset")
        assert reset_row.details.get("attested") == ["root_cause", "fix_in_place", "paper_checked"]

    async def test_abandoned_reset_stays_latched_and_is_audited(self, tmp_path: Path) -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await latch_via_ui(pilot)
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, ResetScreen))
            await pilot.pause(0.2)
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, ResetScreen))
            assert app.dashboard.banner.mode == "latched"
        state, rows = await stored(tmp_path / "ess.db")
        assert state.active
        abandoned = [r for r in rows if r.action == "reset_abandoned"]
        assert abandoned and abandoned[0].details.get("step") == "review"

    async def test_a_trigger_that_still_fires_refuses_the_reset_by_name(self, tmp_path: Path) -> None:
        # Changed with issue 11: a trigger that would fire again once armed can no longer be
        # overridden with a reason (it re-latched 4 s after the reset); it is named and refused.
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await engine_up(pilot)
            await app.host.drill("sick_health")  # health CRITICAL: latches and stays hot
            await until(pilot, lambda: app.dashboard.banner.mode == "latched", timeout=5)
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, ResetScreen))
            screen = app.screen
            assert isinstance(screen, ResetScreen)
            await press_button(pilot, "#reset-next")
            await until(pilot, lambda: screen.step_name == "checks" and bool(screen.checks))
            assert "System health" in screen.refires
            fill(app, "#override", "health probe flapping, verified by hand")
            await press_button(pilot, "#reset-next")
            await pilot.pause(0.3)
            assert screen.step_name == "checks"
            error = str(screen.query_one("#reset-error").render())
            assert "System health" in error and "would fire again" in error
            await app.host.drill("recover")
            await pilot.pause(1.2)  # a runner cycle on the recovered world
            screen._run_checks()
            await until(pilot, lambda: bool(screen.checks) and not screen.refires, timeout=10,
                        why=lambda: str(screen.checks))
            await press_button(pilot, "#reset-next")
            await until(pilot, lambda: screen.step_name == "attest")
        _, rows = await stored(tmp_path / "ess.db")
        drills = [r for r in rows if r.action == "drill"]
        assert drills and {d.details.get("drill") for d in drills} == {"sick_health", "recover"}
        assert [r for r in rows if r.action == "rebaseline"]  # drill 0 re-baselined the account


class TestViewer:
    async def test_banner_reacts_to_a_latch_from_another_process(self, tmp_path: Path) -> None:
        app = make_app(tmp_path, check_interval=60.0)  # only the store poll can notice in time
        async with app.run_test(size=SIZE) as pilot:
            await engine_up(pilot)
            await until(pilot, lambda: app.dashboard.banner.mode == "armed")
            other = SQLiteStore(tmp_path / "ess.db")
            try:
                await other.latch("latched from the CLI", at=utcnow(), actor="ops-cli")
            finally:
                await other.close()
            started = time.monotonic()
            await until(pilot, lambda: app.dashboard.banner.mode == "latched", timeout=3)
            assert time.monotonic() - started < 1.5
            assert "latched from the CLI" in str(app.dashboard.banner.render())


class TestKeysAndThemes:
    async def test_keys_are_remappable_from_config(self, tmp_path: Path) -> None:
        app = make_app(tmp_path, tui={"keys": {"stop": "f12"}})
        async with app.run_test(size=SIZE) as pilot:
            await engine_up(pilot)
            await pilot.press("f9")
            await pilot.pause(0.1)
            assert not isinstance(app.screen, StopModal)
            await pilot.press("f12")
            await until(pilot, lambda: isinstance(app.screen, StopModal))

    async def test_theme_switch_from_the_palette_is_remembered(self, tmp_path: Path) -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            assert app.theme == "dark"
            assert set(app.available_themes) >= {"dark", "light", "high-contrast", "colour-blind-safe"}
            app.action_change_theme()
            await pilot.pause(0.2)
            await pilot.press("h", "i", "g", "h")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await until(pilot, lambda: app.theme == "high-contrast")
        again = make_app(tmp_path)
        async with again.run_test(size=SIZE):
            assert again.theme == "high-contrast"

