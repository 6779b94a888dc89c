"""The dashboard: banner, gauges, venue panel and event log — the control room's home screen."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer

from ess_tui.tui.widgets.banner import Banner
from ess_tui.tui.widgets.event_log import EventLog
from ess_tui.tui.widgets.gauge import GaugePanel
from ess_tui.tui.widgets.venue_panel import VenuePanel


class DashboardScreen(Screen[None]):
    """Home screen. Never popped, so its widgets keep their content while other screens show."""

    def compose(self) -> ComposeResult:
        yield Banner(id="banner")
        with Horizontal(id="main-row"):
            yield GaugePanel(id="gauges")
            yield VenuePanel(id="venue")
        yield EventLog(id="event-log")
        yield Footer()

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
    def log_widget(self) -> EventLog:
        return self.query_one(EventLog)
