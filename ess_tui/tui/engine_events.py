"""What the control room does with the engine's messages: log them, ring, raise toasts, redraw.

A mixin of :class:`ess_tui.tui.app.ControlRoomApp`, kept apart so the app module stays about
layout, keys and actions.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from ess_tui.engine.state import Band
from ess_tui.tui import messages
from ess_tui.tui.engine_host import EngineView

if TYPE_CHECKING:
    from collections.abc import Callable

    from textual.app import App

    from ess_tui.tui.engine_host import EngineHost
    from ess_tui.tui.screens.dashboard import DashboardScreen

    _Base = App[int]
else:
    _Base = object


class EngineEvents(_Base):
    """Message handlers and latch-state observation for the control room app."""

    if TYPE_CHECKING:
        host: EngineHost
        clock: Callable[[], datetime]
        dashboard: DashboardScreen
        _last_key: tuple[Any, ...] | None
        _bands: dict[str, Band]
        _progress: str | None
        _engine_ready: bool
        _latching: bool
        _flat_at: datetime | None

        def log_event(self, at: datetime, kind: str, message: str) -> None: ...
        def _tick(self) -> None: ...
        def _poll_venue(self, fresh: bool = False) -> None: ...

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
        if self._latching:
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
        # The banner waits for a book read after this moment before it says "venue flat", and
        # the panel is re-read now: banner and panel never disagree.
        self._flat_at = message.at
        self._tick()
        self._poll_venue(fresh=True)

    def on_engine_warning(self, message: messages.EngineWarning) -> None:
        event = message.event
        kind = "VENUE" if event.source == "venue" else "WARN"
        self.log_event(event.timestamp, kind, f"{event.source}: {event.message}")

