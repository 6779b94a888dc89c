"""The ESS banner: ARMED (steady) or LATCHED (flashing, with reason, since when, activation count).

When the state cannot be read the banner says STATE UNAVAILABLE and looks latched: an unknown
state blocks trading (fail closed), so it must never look armed.
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from ess_tui.tui import format as fmt
from ess_tui.tui.engine_host import EngineView


class Banner(Static):
    """The top line of the control room. Its mode is a CSS class; the flash is ``-dim``."""

    DEFAULT_CSS = """
    Banner {
        height: 4;
        padding: 0 2;
        content-align: left middle;
        background: $banner-armed-background;
        color: $banner-armed-foreground;
    }
    Banner.-latched, Banner.-unavailable, Banner.-starting {
        background: $banner-latched-background;
        color: $banner-latched-foreground;
    }
    Banner.-unwatched { background: $band-warn; color: $background; }
    Banner.-latched.-dim, Banner.-unavailable.-dim {
        background: $banner-latched-dim-background;
        color: $banner-latched-dim-foreground;
    }
    """

    mode: reactive[str] = reactive("starting")
    """``armed``, ``unwatched`` (armed, but no runner holds the lease), ``latched``,
    ``unavailable`` or ``starting``; set as the CSS class ``-<mode>``."""

    dim: reactive[bool] = reactive(False)
    """The flash's off phase (only ever true while latched and not frozen)."""

    def watch_mode(self, old: str, new: str) -> None:
        self.remove_class(f"-{old}")
        self.add_class(f"-{new}")
        if new == "armed":
            self.dim = False

    def watch_dim(self, value: bool) -> None:
        self.set_class(value, "-dim")

    def on_mount(self) -> None:
        self.add_class(f"-{self.mode}")

    def toggle_flash(self) -> None:
        """Advance the flash one phase (the app's flash timer calls this)."""
        self.dim = (not self.dim) if self.mode in ("latched", "unavailable") else False

    def show(self, view: EngineView, now: datetime, *, venue: str, triggers: int,
             venue_confirmed: bool = True) -> None:
        """Redraw from the engine's state at ``now``. ``venue_confirmed`` is False until the venue
        panel has a book read after the flatten result (the banner never runs ahead of it)."""
        state = view.state
        if view.unavailable is not None:
            self.mode = "unavailable"
            title = Text("■ STATE UNAVAILABLE — TRADING BLOCKED", style="bold")
            body = Text(f"The ESS state cannot be read: {view.unavailable}")
            tail = Text("Treated as latched until the store can be read again. "
                        f"Last known activation count: {state.activation_count}")
        elif view.starting:
            self.mode = "starting"
            title = Text("■ STARTING — state not read yet, treated as latched", style="bold")
            body = Text(f"Opening the ESS store and connecting to {venue}…")
            tail = Text("")
        elif state.active:
            self.mode = "latched"
            title = Text("■ LATCHED — TRADING BLOCKED", style="bold")
            body = Text(state.reason or "Emergency stop (no reason recorded)")
            ago = fmt.age(fmt.since(now, state.timestamp))
            tail = Text(
                f"since {fmt.date_time(state.timestamp)} ({ago} ago) · activation #{state.activation_count}"
            )
            if view.flattening:
                tail.append(" · flattening…")
            elif view.last_report is not None:
                report = view.last_report
                if report.flat and not venue_confirmed:
                    tail.append(" · flattened, re-reading the venue…")
                else:
                    tail.append(" · venue flat" if report.flat else
                                " · venue NOT flat" if report.flat is False else " · flat unknown")
            if view.not_durable:
                tail.append(f" · NOT DURABLE: {view.not_durable}", style="bold")
        elif view.watched is False:
            self.mode = "unwatched"
            title = Text("▲ ARMED — NO RUNNER IS WATCHING", style="bold")
            body = Text("No acting runner holds the lease: nothing evaluates the triggers or "
                        f"would flatten {venue}. Start `ess-tui run`, or STOP.")
            tail = Text(f"Activations so far: {state.activation_count}")
        else:
            self.mode = "armed"
            title = Text("● ARMED — trading allowed", style="bold")
            body = Text(f"Watching {venue} with {triggers} trigger{'s' if triggers != 1 else ''}.")
            tail = Text(f"Activations so far: {state.activation_count}")
            if state.last_reset_by:
                tail.append(f" · last reset by {state.last_reset_by} at {fmt.date_time(state.last_reset_at)}")
        self.update(Text("\n").join([title, body, tail]))
