"""The control room a desk lives in (issue 11): keys inert in the wizard, STOP while latched,
every size, a rehearsal that ends armed, the re-baseline reset and the refused reset."""

from __future__ import annotations

from pathlib import Path

from ess_tui.tui.scenarios import build_app, settle
from ess_tui.tui.screens.audit import AuditScreen
from ess_tui.tui.screens.reset import ResetScreen
from ess_tui.tui.screens.stop import StopModal
from ess_tui.tui.widgets.gauge import Gauge
from tests.test_tui_operator import SIZE, engine_up, make_app, press_button, stored, until


class TestKeysWhereTheyBelong:
    async def test_drill_and_audit_keys_are_inert_in_the_wizard(self, tmp_path: Path) -> None:
        app = build_app("latched", prefs_path=tmp_path / "p.json")
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("r")
            await settle(pilot)
            assert isinstance(app.screen, ResetScreen)
            app.screen.query_one("#reset-next").focus()  # a button focused, as seen on a desk
            await pilot.press("1", "a", "question_mark", "5")
            await settle(pilot)
            assert isinstance(app.screen, ResetScreen)
            assert not [r for r in app.host.audit_rows if r.action == "drill" and r.at.hour == 4
                        and r.at.minute == 7]
            await pilot.press("f9")  # only STOP works everywhere
            await settle(pilot)
            assert isinstance(app.screen, StopModal)

    async def test_stop_while_latched_says_since_when_and_is_audited(self, tmp_path: Path) -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await engine_up(pilot)
            await app.host.manual_stop("first stop", "maria")
            await until(pilot, lambda: app.dashboard.banner.mode == "latched")
            app.action_stop()
            await until(pilot, lambda: isinstance(app.screen, StopModal))
            app.screen.query_one("#stop-reason").value = "second look: still bad"
            app.screen.query_one("#stop-confirm").value = "STOP"
            await app.screen.query_one("#stop-confirm").action_submit()
            await until(pilot, lambda: any("already latched since" in m
                                           for _, _, m in app.dashboard.log_widget.entries))
            text = next(m for _, _, m in app.dashboard.log_widget.entries if "already latched" in m)
            assert "activation #1" in text
        _, rows = await stored(tmp_path / "ess.db")
        extra = [r for r in rows if r.action == "extra_trigger"]
        assert extra and "second look" in (extra[0].reason or "")


class TestEverySize:
    async def test_80x24_shows_every_gauge_with_its_band_word(self, tmp_path: Path) -> None:
        for world in ("armed", "warning", "latched"):
            app = build_app(world, prefs_path=tmp_path / "p.json")
            async with app.run_test(size=(80, 24)) as pilot:
                await settle(pilot)
                gauges = list(app.dashboard.query(Gauge))
                assert len(gauges) == 6
                screen = app.screen.region
                for gauge in gauges:
                    band = gauge.query_one(".gauge-band")
                    assert screen.contains_region(band.region), (world, gauge.evaluation.name)
                    assert band.region.width >= 4
                assert app.dashboard.venue_line.region.height == 1
                await pilot.press("l")  # the log, reachable by key
                await settle(pilot)
                assert app.dashboard.log_widget.display and app.dashboard.log_widget.region.height > 3


class TestRehearsalEndsArmed:
    async def _reset_through_wizard(self, pilot, app, *, rebaseline: bool) -> ResetScreen:
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ResetScreen))
        screen = app.screen
        await press_button(pilot, "#reset-next")
        await until(pilot, lambda: screen.step_name == "checks" and bool(screen.checks), timeout=10)
        if rebaseline:
            await until(pilot, lambda: bool(screen.query(".rebase")), timeout=5)
            screen._rebaseline("loss")
            await until(pilot, lambda: bool(screen.rebaselined) and not screen.refires, timeout=15,
                        why=lambda: str(screen.checks))
        return screen

    async def test_crash_then_refused_then_rebaseline_reset_stays_armed(self, tmp_path: Path) -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await engine_up(pilot)
            await app.host.drill("crash", "maria")
            await until(pilot, lambda: app.dashboard.banner.mode == "latched", timeout=10)
            await until(pilot, lambda: app.host.view().last_report is not None, timeout=10)
            screen = await self._reset_through_wizard(pilot, app, rebaseline=False)
            await until(pilot, lambda: "Drawdown" in screen.refires, timeout=10)
            await press_button(pilot, "#reset-next")
            await pilot.pause(0.3)
            assert screen.step_name == "checks"  # refused: it would fire again once armed
            assert "Drawdown" in str(screen.query_one("#reset-error").render())
            screen._rebaseline("loss")
            await until(pilot, lambda: bool(screen.rebaselined) and not screen.refires, timeout=15,
                        why=lambda: str(screen.checks))
            app.exit()
        _, rows = await stored(tmp_path / "ess.db")
        rebase = [r for r in rows if r.action == "rebaseline"]
        assert rebase and rebase[0].details["kind"] == "loss"
        old, new = rebase[0].details["old"], rebase[0].details["new"]
        assert new["day_start_equity"] < old["day_start_equity"]  # the loss was accepted

    async def test_drill_then_0_resets_and_stays_armed(self, tmp_path: Path) -> None:
        for drill in ("crash", "sl_burst", "sick_health"):
            folder = tmp_path / drill
            folder.mkdir()
            app = make_app(folder)
            async with app.run_test(size=SIZE) as pilot:
                await engine_up(pilot)
                await app.host.drill(drill, "maria")
                await until(pilot, lambda: app.dashboard.banner.mode == "latched", timeout=10)
                await until(pilot, lambda: app.host.view().last_report is not None, timeout=10)
                await app.host.drill("recover", "maria")
                await pilot.pause(1.5)  # a runner cycle (0.5 s) on the recovered world
                checks = await app.host.live_checks()
                assert all(c.ok for c in checks), (drill, checks)
                await app.host.reset("maria", "rehearsal over", venue_flat=True)
                await until(pilot, lambda: app.dashboard.banner.mode == "armed", timeout=5)
                await pilot.pause(2.0)  # four runner cycles: nothing re-latches
                assert app.dashboard.banner.mode == "armed", drill
                assert app.host.view().state.activation_count == 1, drill


class TestFasterStop:
    async def test_one_key_reason_then_stop_in_full_latches(self, tmp_path: Path) -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await engine_up(pilot)
            await pilot.press("f9")
            await until(pilot, lambda: isinstance(app.screen, StopModal))
            await pilot.press("2")  # security concern; focus moves to the confirmation
            await pilot.pause()
            assert app.screen.query_one("#stop-reason").value == "security concern"
            await pilot.press("S", "T", "O")
            await pilot.press("enter")
            await pilot.pause(0.3)
            assert isinstance(app.screen, StopModal)  # "STO" cannot confirm
            await pilot.press("P", "enter")
            await until(pilot, lambda: app.host.view().state.active and not app._latching)
        state, _ = await stored(tmp_path / "ess.db")
        assert state.active and state.reason == "security concern"

    async def test_a_reason_typed_at_once_is_kept_and_digits_in_it_type(self, tmp_path: Path) -> None:
        """A newcomer presses F9 and types straight away: the text lands in the reason field
        (a focused preset button swallowed it before), and a digit inside the text types."""
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await engine_up(pilot)
            await pilot.press("f9")
            await until(pilot, lambda: isinstance(app.screen, StopModal))
            await pilot.press(*"desk halt 1")
            await pilot.pause()
            assert app.screen.query_one("#stop-reason").value == "desk halt 1"
            await pilot.press("enter")  # to the confirmation field
            await pilot.press("S", "T", "O", "P", "enter")
            await until(pilot, lambda: app.host.view().state.active and not app._latching)
        state, _ = await stored(tmp_path / "ess.db")
        assert state.active and state.reason == "desk halt 1"


class TestQuitting:
    async def test_the_acting_runner_asks_before_q_quits(self, tmp_path: Path) -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await engine_up(pilot)
            await until(pilot, lambda: app.host.acting_here())
            await pilot.press("q")
            await pilot.pause(0.3)
            assert app.is_running, "q quit the acting runner without asking"
            await pilot.press("q")
            await until(pilot, lambda: not app.is_running)

    async def test_quitting_mid_reset_audits_the_abandoned_reset(self, tmp_path: Path) -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await engine_up(pilot)
            await app.host.manual_stop("quit drill", "ops")
            await until(pilot, lambda: app.host.view().state.active)
            await pilot.press("r")
            await until(pilot, lambda: isinstance(app.screen, ResetScreen))
            app.screen.query_one("#reset-next").focus()
            await pilot.press("q", "q")
            await until(pilot, lambda: not app.is_running)
        _, rows = await stored(tmp_path / "ess.db")
        assert [r for r in rows if r.action == "reset_abandoned"], [r.action for r in rows]
