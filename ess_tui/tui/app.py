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
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from ess_tui.engine.state import Band, EmergencyState, utcnow
from ess_tui.tui import messages
from ess_tui.tui.engine_host import DRILLS, EngineHost, EngineView, RuntimeHost
from ess_tui.tui.screens.audit import AuditScreen
from ess_tui.tui.screens.dashboard import DashboardScreen
from ess_tui.tui.screens.help import HelpScreen
from ess_tui.tui.screens.reset import ResetScreen
from ess_tui.tui.screens.stop import StopModal
from ess_tui.tui.widgets.banner import Banner
from ess_tui.tui.themes import (
    CSS_VARIABLE_DEFAULTS,
    ThemeMemory,
    choose_theme,
    load_themes,
)

log = logging.getLogger(__name__)

#: Drill keys (paper venue only), in the order the help screen lists them.
DRILL_KEYS: tuple[tuple[str, str], ...] = (
    ("1", "crash"),
    ("2", "stall_feed"),
    ("3", "garbage_tick"),
    ("4", "sl_burst"),
    ("5", "sick_health"),
    ("0", "recover"),
)


def _drill_bindings() -> list[BindingType]:
    return [
        Binding(key, f"drill('{name}')", f"Drill: {DRILLS[name]}", id=f"drill-{name}", show=False,
                tooltip=f"Drill: {DRILLS[name]} (audited as a drill)")
        for key, name in DRILL_KEYS
    ]


class ControlRoomApp(App[int]):
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
        Binding("q", "quit", "Quit", id="quit", tooltip="Close the control room"),
        *_drill_bindings(),
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
        if keys:
            self.set_keymap({k: v for k, v in keys.items() if k not in self._bad_keys})
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
        ids: set[str] = set()
        for owner in (cls, StopModal, ResetScreen, AuditScreen, HelpScreen):
            for binding in owner.BINDINGS:
                if isinstance(binding, Binding) and binding.id:
                    ids.add(binding.id)
        return ids

    def key_help(self) -> list[tuple[str, str, str]]:
        """(key as shown, what it does, binding id) for the help screen, keymap applied."""
        rows = []
        keymap = getattr(self, "_keymap", {}) or {}
        for binding in self.BINDINGS:
            if not isinstance(binding, Binding) or not binding.id:
                continue
            if binding.id.startswith("drill-") and not self.host.is_paper:
                continue
            keys = keymap.get(binding.id, binding.key)
            shown = ", ".join(self.get_key_display(Binding(k.strip(), "")) for k in keys.split(","))
            rows.append((shown, binding.tooltip or binding.description, binding.id))
        rows.append(("ctrl+p", "Command palette (themes, keys, quit)", "—"))
        return rows

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
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
        self.dashboard.banner.toggle_flash()

    def _tick(self) -> None:
        """Redraw from the engine's view: banner, gauges (if newer), ages."""
        if not self.screen_stack:
            return  # shutting down: a late engine message (a flatten report) has nothing to draw
        view = self.host.view()
        now = self.clock()
        board = self.dashboard
        if not board.is_mounted or not board.query(Banner):
            return  # still composing: the next tick draws it
        self._observe(view, now)
        board.banner.show(view, now, venue=self.host.venue_name, triggers=len(view.evaluations))
        if view.version != self._last_version:
            self._last_version = view.version
            board.gauges.show(view.evaluations, now)
            self._log_band_changes(view)
        elif not self.frozen:
            board.gauges.tick(now)
        board.venue.show_flatten(view.state.active, view.flattening, view.last_report, self._progress)

    def _observe(self, view: EngineView, now: datetime) -> None:
        """Notice a change of latch state: log it; on a latch, ring the bell and raise a toast."""
        state = view.state
        if view.starting:
            key: tuple[Any, ...] = ("starting",)
        elif view.unavailable is not None:
            key = ("unavailable", view.unavailable)
        elif state.active:
            key = ("latched", state.activation_count, state.timestamp)
        else:
            key = ("armed", state.activation_count)
        if key == self._last_key:
            return
        previous, self._last_key = self._last_key, key
        self.refresh_bindings()
        if key[0] == "latched":
            self.log_event(state.timestamp or now, "LATCH",
                           f"LATCHED: {state.reason} (activation #{state.activation_count})")
            self.bell()
            self.notify(state.reason or "Emergency stop", title="ESS LATCHED — trading blocked",
                        severity="error", timeout=12)
        elif key[0] == "unavailable":
            self.log_event(now, "WARN", f"STATE UNAVAILABLE: {view.unavailable}")
            self.bell()
            self.notify(f"{view.unavailable}", title="ESS state unavailable — treated as latched",
                        severity="error", timeout=12)
        elif key[0] == "armed" and previous is not None and previous[0] == "latched":
            who = state.last_reset_by or "unknown"
            self.log_event(state.last_reset_at or now, "RESET", f"reset by {who}: ARMED")
            self.notify(f"Reset by {who}. Trading is allowed again.", title="ESS ARMED")
            self._progress = None

    def _log_band_changes(self, view: EngineView) -> None:
        for evaluation in view.evaluations:
            band = evaluation.band
            before = self._bands.get(evaluation.name)
            self._bands[evaluation.name] = band
            if before is None or before == band:
                continue
            detail = evaluation.error or evaluation.reason or evaluation.reading
            self.log_event(evaluation.checked_at, "BAND",
                           f"{evaluation.name} {before.value.upper()} → {band.value.upper()}: {detail}")

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
    async def _poll_venue(self) -> None:
        if self._venue_busy or not self._engine_ready:
            return
        self._venue_busy = True
        try:
            view = await self.host.venue_view()
        except Exception as exc:  # noqa: BLE001
            log.debug("venue read failed: %s", exc)
            return
        finally:
            self._venue_busy = False
        self.dashboard.venue.show_venue(view)

    # --- engine messages -------------------------------------------------------------------------

    def on_engine_ready(self, message: messages.EngineReady) -> None:
        self._engine_ready = True
        kind = "the paper venue (drills: press ? for keys)" if message.paper else message.venue
        self.log_event(self.clock(), "INFO", f"engine started: watching {kind}")
        self._tick()
        self._poll_venue()

    def on_engine_failed(self, message: messages.EngineFailed) -> None:
        self.log_event(self.clock(), "WARN", f"the engine could not start: {message.error}")
        self._tick()

    def on_latched(self, message: messages.Latched) -> None:
        if isinstance(self.screen, StopModal) and self.screen.latching:
            # Our own stop: redrawing the dashboard now would compete with the engine thread
            # for the interpreter while it makes the latch durable. The next tick draws it.
            return
        self._tick()

    def on_reset(self, message: messages.Reset) -> None:
        self._tick()
        self._poll_venue()

    def on_flatten_progress(self, message: messages.FlattenProgress) -> None:
        event = message.event
        self._progress = f"{event.step}: {event.message}"
        kind = "VENUE" if event.error else "FLAT"
        text = f"{event.step} (attempt {event.attempt}): {event.message}"
        if event.error:
            text += f" — {event.error}"
        self.log_event(event.timestamp, kind, text)

    def on_flatten_done(self, message: messages.FlattenDone) -> None:
        report = message.report
        self._progress = None
        done = f"cancelled {report.orders_canceled} orders, closed {report.positions_closed} positions"
        if report.flat:
            self.log_event(message.at, "FLAT", f"venue flat: {done}")
        else:
            still = ", ".join([*report.remaining_positions, *report.remaining_orders]) or "unknown"
            self.log_event(message.at, "VENUE",
                           f"NOT flat after {report.attempts} attempts: {done}; still open: {still}; "
                           f"last error: {report.last_error or '—'}")
            self.notify(f"Still open: {still}", title="Venue NOT flat", severity="error", timeout=12)
        self._tick()
        self._poll_venue()

    def on_engine_warning(self, message: messages.EngineWarning) -> None:
        event = message.event
        kind = "VENUE" if event.source == "venue" else "WARN"
        self.log_event(event.timestamp, kind, f"{event.source}: {event.message}")

    # --- actions ---------------------------------------------------------------------------------

    def action_stop(self) -> None:
        """Open the manual stop (from any screen); a second press while it is open does nothing."""
        if any(isinstance(s, StopModal) for s in self.screen_stack):
            return
        self.push_screen(StopModal(blink=not self.frozen), self._after_stop)

    def _after_stop(self, state: EmergencyState | None) -> None:
        if state is None:
            return
        if getattr(self.host.view(), "not_durable", None):
            self.notify("The latch is held in memory only: the store refused the write.",
                        title="Latch NOT durable", severity="error", timeout=15)
        self._tick()

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
