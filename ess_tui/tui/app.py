"""The control room app: ``ess-tui`` with no arguments.

The engine runs on its own thread (see :mod:`ess_tui.tui.engine_host`); this app only draws what
the engine reports and submits the operator's actions to it. Gauges redraw at most
``tui.refresh_hz`` times a second from the newest evaluations; the latch, resets, flatten steps
and warnings arrive as messages. The store is re-read every 0.5 s, so a latch made by another
process through the same database shows within a second.

For tests and screenshots the app takes an injected clock and ``frozen=True``, which stops the
banner's flash (it stays in its "on" phase) and the cursor blink.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from ess_tui.engine.state import Band, EmergencyState, utcnow
from ess_tui.tui import format as fmt
from ess_tui.tui import messages
from ess_tui.runtime.drills import DRILLS
from ess_tui.tui.engine_events import EngineEvents
from ess_tui.tui.engine_host import EngineHost
from ess_tui.tui.keys import DASHBOARD_ONLY, binding_ids, drill_bindings, help_rows
from ess_tui.tui.runtime_host import RuntimeHost
from ess_tui.tui.screens.audit import AuditScreen
from ess_tui.tui.screens.dashboard import DashboardScreen
from ess_tui.tui.screens.help import HelpScreen
from ess_tui.tui.screens.reset import ResetScreen
from ess_tui.tui.screens.stop import StopModal
from ess_tui.tui.widgets.banner import Banner
from ess_tui.tui.widgets.venue_panel import one_line as venue_line
from ess_tui.runtime.panel import VenueSnapshot
from ess_tui.tui.themes import (
    CSS_VARIABLE_DEFAULTS,
    ThemeMemory,
    choose_theme,
    contrast_problems,
    load_themes,
)

log = logging.getLogger(__name__)

class ControlRoomApp(EngineEvents, App[int]):
    """The ESS control room."""

    TITLE = "ess-tui control room"
    CSS_PATH = str(Path(__file__).with_name("control_room.tcss"))  # absolute: subclasses work anywhere
    ENABLE_COMMAND_PALETTE = True

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f9", "stop", "STOP", id="stop", priority=True,
                tooltip="Emergency stop: latch now (asks for a reason and STOP typed in full)"),
        Binding("exclamation_mark", "stop", "STOP", id="stop-alt", show=False,
                tooltip="Emergency stop (second key; not while typing in a field)"),
        Binding("r", "reset", "Reset", id="reset",
                tooltip="Guided reset (only while latched)"),
        Binding("a", "audit", "Audit", id="audit", tooltip="The audit trail and its verification"),
        Binding("question_mark,f1", "help", "Help", id="help", tooltip="Keys and drills"),
        Binding("ctrl+t", "change_theme", "Theme", id="theme", show=False,
                tooltip="Choose a theme (remembered)"),
        Binding("l", "toggle_log", "Log", id="log", show=False,
                tooltip="Narrow terminal: the event log in place of the gauges, and back"),
        Binding("q", "quit", "Quit", id="quit", tooltip="Close the control room"),
        *drill_bindings(),
    ]

    def __init__(
        self,
        settings: Any = None,
        *,
        host: EngineHost | None = None,
        clock: Callable[[], datetime] | None = None,
        frozen: bool = False,
        user_theme_dir: Path | None = None,
        prefs_path: Path | None = None,
        theme: str | None = None,
        operator: str | None = None,
    ) -> None:
        super().__init__()
        from ess_tui.engine.controller import os_user

        #: Who is at the desk: the default name for manual stops and resets (the OS user).
        self.operator = operator or os_user()
        self._quit_asked_at = -1e9  # when q last asked "really quit?" (monotonic)
        if settings is None and host is None:
            from ess_tui.config import Settings

            settings = Settings()
        self.settings = settings
        self.clock: Callable[[], datetime] = clock or utcnow
        self.frozen = frozen
        self.host: EngineHost = host or RuntimeHost(settings, clock=self.clock)
        tui = getattr(settings, "tui", None)
        self.refresh_hz = float(getattr(tui, "refresh_hz", 4.0) or 4.0)
        if frozen:
            self.animation_level = "none"
        if prefs_path is None and settings is not None:
            prefs_path = Path(settings.db_path).parent / "tui-prefs.json"
        self.theme_memory = ThemeMemory(prefs_path)
        self._install_themes(user_theme_dir, theme or getattr(tui, "theme", None))
        keys = dict(getattr(tui, "keys", {}) or {})
        self._bad_keys = sorted(set(keys) - self.binding_ids())
        #: The remapping applied from ``tui.keys`` (kept here: the help screen shows it).
        self.applied_keymap: dict[str, str] = {k: v for k, v in keys.items() if k not in self._bad_keys}
        if self.applied_keymap:
            self.set_keymap(self.applied_keymap)
        self._latching = False
        self._venue: VenueSnapshot | None = None
        self._flat_at: datetime | None = None
        self._last_key: tuple[Any, ...] | None = None
        self._last_version = -1
        self._bands: dict[str, Band] = {}
        self._venue_busy = False
        self._refresh_busy = False
        self._progress: str | None = None
        self._engine_ready = False

    # --- themes ----------------------------------------------------------------------------------

    def _install_themes(self, user_dir: Path | None, configured: str | None) -> None:
        themes, problems = load_themes(user_dir)
        self.theme_problems = problems
        #: Themes that load but fail WCAG AA for the banner or a band word (logged as warnings).
        self.theme_contrast_problems = contrast_problems(themes)
        for theme in themes.values():
            self.register_theme(theme)
        self.theme = choose_theme(themes, configured, self.theme_memory.load())
        self._remember_theme = True
        for name in list(self.available_themes):  # only ess-tui's themes in the palette
            if name not in themes and name != "textual-ansi":
                self.unregister_theme(name)

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(CSS_VARIABLE_DEFAULTS)

    def watch_theme(self, name: str) -> None:
        if getattr(self, "_remember_theme", False):
            self.theme_memory.save(name)

    # --- keys ------------------------------------------------------------------------------------

    @classmethod
    def binding_ids(cls) -> set[str]:
        """Every binding id that ``tui.keys`` may remap."""
        return binding_ids((cls, StopModal, ResetScreen, AuditScreen, HelpScreen))

    def key_help(self) -> list[tuple[str, str, str]]:
        """(key as shown, what it does, binding id) for the help screen, keymap applied."""
        return help_rows(self.BINDINGS, self.applied_keymap, paper=self.host.is_paper,
                         display=self.get_key_display)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in DASHBOARD_ONLY and not isinstance(self.screen, DashboardScreen):
            return None  # inert in modals and the reset wizard; only STOP works everywhere
        if action == "reset":
            view = self.host.view()
            return True if (view.state.active and view.unavailable is None) else None
        if action == "drill":
            return True if self.host.is_paper else None
        return True

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Emergency stop", "Latch the ESS now (asks for a reason and STOP)",
                            self.action_stop)
        yield SystemCommand("Audit trail", "Show the audit trail and its verification",
                            self.action_audit)

    # --- lifecycle -------------------------------------------------------------------------------

    def get_default_screen(self) -> Screen[Any]:
        return DashboardScreen()

    @property
    def dashboard(self) -> DashboardScreen:
        screen = self.screen_stack[0]
        assert isinstance(screen, DashboardScreen)
        return screen

    def on_ready(self) -> None:
        """The dashboard is on screen: start the engine and the redraw timers."""
        for problem in self.theme_problems:
            self.log_event(self.clock(), "WARN", f"theme skipped: {problem.problem}")
        for text in self.theme_contrast_problems:
            self.log_event(self.clock(), "WARN", text)
        if self._bad_keys:
            self.log_event(self.clock(), "WARN",
                           f"tui.keys names unknown binding(s): {', '.join(self._bad_keys)}; "
                           "see the help screen (?) for the ids")
        self.host.attach(self)
        self._tick()
        self.set_interval(1.0 / self.refresh_hz, self._tick, name="redraw")
        self.set_interval(0.5, self._poll_store, name="store-poll")
        self.set_interval(1.0, self._poll_venue, name="venue-poll")
        if not self.frozen:
            self.set_interval(0.5, self._flash, name="flash")

    async def on_unmount(self) -> None:
        await self.host.shutdown()

    # --- redraw ----------------------------------------------------------------------------------

    def log_event(self, at: datetime, kind: str, message: str) -> None:
        """Add an entry to the event log."""
        try:
            self.dashboard.log_widget.add(at, kind, message)
        except Exception:  # noqa: BLE001 - before mount or while closing
            log.debug("event log not ready: %s %s", kind, message)

    def _flash(self) -> None:
        if self.screen_stack:
            self.dashboard.banner.toggle_flash()

    def _tick(self) -> None:
        """Redraw from the engine's view: banner, gauges (if newer), ages."""
        if not self.screen_stack:
            return  # closing: a message from the engine thread arrived after the screens went
        view = self.host.view()
        now = self.clock()
        board = self.dashboard
        if not board.is_mounted or not board.query(Banner):
            return  # still composing: the next tick draws it
        self._observe(view, now)
        read_at = None if self._venue is None else self._venue.taken_at
        confirmed = self._flat_at is None or (read_at is not None and read_at >= self._flat_at)
        board.banner.show(view, now, venue=self.host.venue_name, triggers=len(view.evaluations),
                          venue_confirmed=confirmed)
        if view.version != self._last_version:
            self._last_version = view.version
            board.gauges.show(view.evaluations, now)
            self._log_band_changes(view)
        elif not self.frozen:
            board.gauges.tick(now)
        board.venue.show_flatten(view.state.active, view.flattening, view.last_report, self._progress)
        if board.narrow:
            self._draw_venue_line()

    # --- polling ---------------------------------------------------------------------------------

    @work(group="store-poll", exit_on_error=False)
    async def _poll_store(self) -> None:
        if self._refresh_busy or not self._engine_ready:
            return
        self._refresh_busy = True
        try:
            await self.host.refresh()
        except Exception as exc:  # noqa: BLE001 - the controller reports unavailability itself
            log.debug("store refresh failed: %s", exc)
        finally:
            self._refresh_busy = False
        self._tick()

    @work(group="venue-poll", exit_on_error=False)
    async def _poll_venue(self, fresh: bool = False) -> None:
        """Redraw the venue panel; ``fresh`` reads the venue now instead of the last poll."""
        if (self._venue_busy and not fresh) or not self._engine_ready:
            return
        self._venue_busy = True
        try:
            view = await self.host.venue_view(fresh=fresh)
        except Exception as exc:  # noqa: BLE001
            log.debug("venue read failed: %s", exc)
            return
        finally:
            self._venue_busy = False
        self._venue = view
        if not self.screen_stack:
            return
        self.dashboard.venue.show_venue(view)
        self._draw_venue_line()

    def _draw_venue_line(self) -> None:
        view = self.host.view()
        self.dashboard.venue_line.update(venue_line(
            self._venue, view.latched, view.flattening, view.last_report))

    # --- actions ---------------------------------------------------------------------------------

    def action_stop(self) -> None:
        """Open the manual stop (from any screen); a second press while it is open does nothing."""
        if any(isinstance(s, StopModal) for s in self.screen_stack):
            return
        self._stop_flow()

    @work(group="manual-stop", exit_on_error=False)
    async def _stop_flow(self) -> None:
        """Ask for the reason (the modal), then latch. The modal's result wakes this worker as it
        dismisses, so the latch is handed to the engine before any redraw."""
        before = self.host.view().state
        reason = await self.push_screen_wait(StopModal(blink=not self.frozen))
        if reason is None:
            return
        self._latching = True
        try:
            await self.host.manual_stop(reason, self.operator)
        except Exception as exc:  # noqa: BLE001 - the operator must see it and try again
            self.log_event(self.clock(), "WARN", f"STOP could NOT be recorded: {exc}")
            self.notify(f"{type(exc).__name__}: {exc}. Try again; if it keeps failing, use "
                        "`ess-tui activate` or stop trading at the venue.",
                        title="STOP NOT recorded — not latched", severity="error", timeout=20)
            return
        finally:
            self._latching = False
        if before.active:
            since = f"{fmt.date_time(before.timestamp)}, activation #{before.activation_count}"
            self.log_event(self.clock(), "LATCH",
                           f"STOP while already latched since {since}: audited as an extra trigger")
            self.notify(f"Already latched since {since}. This stop is audited as an extra trigger.",
                        title="Already latched", severity="warning", timeout=10)
        if getattr(self.host.view(), "not_durable", None):
            self.notify("The latch is held in memory only: the store refused the write.",
                        title="Latch NOT durable", severity="error", timeout=15)
        self._tick()
        self._poll_venue()

    def action_reset(self) -> None:
        view = self.host.view()
        if not view.state.active or view.unavailable is not None:
            self.notify("The ESS is armed: there is nothing to reset.", title="Reset")
            return
        if any(isinstance(s, ResetScreen) for s in self.screen_stack):
            return
        self.push_screen(ResetScreen(view.state, blink=not self.frozen), self._after_reset)

    def _after_reset(self, state: EmergencyState | None) -> None:
        self._tick()
        self._poll_venue()

    async def action_quit(self) -> None:
        """Quit, but not by accident: the acting runner asks once (``q`` again within 4 s), and a
        reset in progress is audited as abandoned before the control room closes."""
        now = time.monotonic()
        if self.host.acting_here() and now - self._quit_asked_at > 4.0:
            self._quit_asked_at = now
            self.notify("This control room is the desk's acting runner: quitting leaves nobody "
                        "flattening until a standby takes over. Press q again to quit.",
                        severity="warning", timeout=4)
            return
        for screen in self.screen_stack:
            if isinstance(screen, ResetScreen):
                try:
                    await self.host.audit("reset_abandoned", screen.actor,
                                          reason="the control room was quit mid-reset",
                                          details={"step": screen.step_name})
                except Exception as exc:  # noqa: BLE001 - quitting is always allowed
                    log.error("the abandoned reset could not be audited: %s", exc)
        self.exit()

    def action_toggle_log(self) -> None:
        self.dashboard.toggle_log()

    def action_audit(self) -> None:
        if not isinstance(self.screen, AuditScreen):
            self.push_screen(AuditScreen())

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    @work(group="drill", exit_on_error=False)
    async def action_drill(self, name: str) -> None:
        try:
            what = await self.host.drill(name, self.operator)
        except Exception as exc:  # noqa: BLE001
            self.notify(str(exc), title="Drill refused", severity="warning")
            return
        self.log_event(self.clock(), "DRILL", f"{name}: {what or DRILLS.get(name, '')}")
        self.notify(f"{DRILLS.get(name, name)}", title="DRILL started (audited as a drill)")


def run_app(settings: Any) -> int:
    """Run the control room until the operator quits. Returns the process exit code."""
    app = ControlRoomApp(settings)
    app.run()
    return int(app.return_code or 0)
