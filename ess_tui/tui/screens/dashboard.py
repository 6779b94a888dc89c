"""The dashboard: banner, gauges, venue panel and event log — the control room's home screen.

The layout adapts to the terminal (a CSS class on the screen, set on every resize):

* ``-narrow`` (under 120 columns or 30 rows, e.g. 80×24): every gauge on one full-width panel
  (bar, reading and band word), a one-line venue summary, the event log on ``l`` in place of the
  gauges;
* the default (e.g. 120×40): gauges beside the venue panel, the event log below;
* ``-wide`` (160 columns or more): the extra width goes to the event log, in a third column at
  full height, and to the gauges' history.
"""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static

from ess_tui.tui.widgets.banner import Banner
from ess_tui.tui.widgets.event_log import EventLog
from ess_tui.tui.widgets.gauge import GaugePanel
from ess_tui.tui.widgets.venue_panel import VenuePanel

#: Below either of these the dashboard is ``-narrow``.
NARROW_COLUMNS, NARROW_ROWS = 120, 30
#: From this many columns on the dashboard is ``-wide``.
WIDE_COLUMNS = 160


def size_class(columns: int, rows: int) -> str:
    """``narrow``, ``normal`` or ``wide`` for a terminal of ``columns`` × ``rows``."""
    if columns < NARROW_COLUMNS or rows < NARROW_ROWS:
        return "narrow"
    if columns >= WIDE_COLUMNS:
        return "wide"
    return "normal"


class DashboardScreen(Screen[None]):
    """Home screen. Never popped, so its widgets keep their content while other screens show."""

    DEFAULT_CSS = """
    DashboardScreen {
        layout: grid;
        grid-size: 2 3;
        grid-columns: 1fr 56;
        grid-rows: 4 1fr 10;
    }
    DashboardScreen > Banner { column-span: 2; }
    DashboardScreen > #event-log { column-span: 2; }
    DashboardScreen > #venue-line { display: none; }

    DashboardScreen.-wide { grid-size: 3 2; grid-columns: 1fr 60 1fr; grid-rows: 4 1fr; }
    DashboardScreen.-wide > Banner { column-span: 3; }
    DashboardScreen.-wide > #event-log { column-span: 1; }

    DashboardScreen.-narrow { grid-size: 1 3; grid-columns: 1fr; grid-rows: 4 1fr 1; }
    DashboardScreen.-narrow > Banner { column-span: 1; }
    DashboardScreen.-narrow > #venue { display: none; }
    DashboardScreen.-narrow > #event-log { display: none; column-span: 1; }
    DashboardScreen.-narrow > #venue-line { display: block; height: 1; padding: 0 1;
                                            background: $panel; }
    DashboardScreen.-narrow.-show-log > #gauges { display: none; }
    DashboardScreen.-narrow.-show-log > #event-log { display: block; }
    """

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        yield GaugePanel(id="gauges")
        yield VenuePanel(id="venue")
        yield EventLog(id="event-log")
        yield Static("", id="venue-line")
        yield Footer()

    def on_mount(self) -> None:
        self.apply_size(self.app.size.width, self.app.size.height)

    def on_resize(self, event: events.Resize) -> None:
        self.apply_size(event.size.width, event.size.height)

    def apply_size(self, columns: int, rows: int) -> None:
        """Set ``-narrow`` / ``-wide`` for a terminal of ``columns`` × ``rows``."""
        kind = size_class(columns, rows)
        self.set_class(kind == "narrow", "-narrow")
        self.set_class(kind == "wide", "-wide")
        self.gauges.set_class(kind == "narrow", "-compact")

    @property
    def narrow(self) -> bool:
        return self.has_class("-narrow")

    def toggle_log(self) -> None:
        """On a narrow terminal: the event log in place of the gauges, and back."""
        self.toggle_class("-show-log")

    @property
    def banner(self) -> Banner:
        return self.query_one(Banner)

    @property
    def gauges(self) -> GaugePanel:
        return self.query_one(GaugePanel)

    @property
    def venue(self) -> VenuePanel:
        return self.query_one(VenuePanel)

    @property
    def venue_line(self) -> Static:
        return self.query_one("#venue-line", Static)

    @property
    def log_widget(self) -> EventLog:
        return self.query_one(EventLog)
