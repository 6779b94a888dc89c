"""Gauges: one per evaluator, showing how close each trigger is to firing.

A gauge draws a bar of proximity (0 far … 1 at the limit, with a mark at the 80 % warning line),
the reading against its limit, the age of the last check and its band as a word: OK / WARN /
FIRE / ERROR. The band is a CSS class (``-ok``, ``-warn``…) and the theme colours it; the word is
always there, so colour never carries the meaning alone. A custom evaluator without proximity
shows its state without a bar.
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Label, Static

from ess_tui.engine.state import WARN_PROXIMITY, Band, Evaluation
from ess_tui.tui import format as fmt

BAND_WORD = {
    Band.OK: "OK",
    Band.WARN: "WARN",
    Band.FIRE: "FIRE",
    Band.ERROR: "ERROR",
    Band.UNKNOWN: "OK",
}

BAR_WIDTH = 19


def bar_text(proximity: float | None, width: int = BAR_WIDTH) -> str:
    """``█████░░░░┊░`` — filled to ``proximity``, with ``┊`` at the warning line if not reached."""
    if proximity is None:
        return "state only".center(width)[:width]
    filled = round(max(0.0, min(1.0, proximity)) * width)
    mark = min(width - 1, round(WARN_PROXIMITY * width))
    cells = ["█" if i < filled else "░" for i in range(width)]
    if filled <= mark:
        cells[mark] = "┊"
    return "".join(cells)


class Gauge(Widget):
    """One evaluator's gauge (two lines)."""

    DEFAULT_CSS = """
    Gauge {
        height: auto;
        margin-bottom: 1;
    }
    Gauge > Horizontal { height: 1; }
    Gauge .gauge-name { width: 16; text-style: bold; }
    Gauge .gauge-bar { width: 20; color: $band-ok; }
    Gauge .gauge-pct { width: 5; text-align: right; }
    Gauge .gauge-band { width: 7; text-align: center; text-style: bold;
                        background: $band-ok; color: $background; margin-left: 1; }
    Gauge .gauge-age { width: 1fr; text-align: right; color: $text-muted; }
    Gauge .gauge-reading { height: auto; padding-left: 2; color: $text-muted; }

    Gauge.-warn .gauge-bar { color: $band-warn; }
    Gauge.-warn .gauge-band { background: $band-warn; }
    Gauge.-fire .gauge-bar { color: $band-fire; }
    Gauge.-fire .gauge-band { background: $band-fire; }
    Gauge.-fire .gauge-reading { color: $band-fire; }
    Gauge.-error .gauge-bar { color: $band-error; }
    Gauge.-error .gauge-band { background: $band-error; }
    Gauge.-error .gauge-reading { color: $band-error; }
    Gauge.-unknown .gauge-bar { color: $band-unknown; }
    Gauge.-unknown .gauge-band { background: $band-unknown; }
    """

    band: reactive[Band] = reactive(Band.UNKNOWN)
    """The evaluator's band; set as the CSS class ``-<band>``."""

    def __init__(self, evaluation: Evaluation, now: datetime | None = None, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.evaluation = evaluation
        self._now = now

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label(classes="gauge-name")
            yield Static(classes="gauge-bar")
            yield Label(classes="gauge-pct")
            yield Label(classes="gauge-band")
            yield Label(classes="gauge-age")
        yield Label(classes="gauge-reading")

    def on_mount(self) -> None:
        self.set_evaluation(self.evaluation, self._now)

    def watch_band(self, old: Band, new: Band) -> None:
        self.remove_class(f"-{old.value}")
        self.add_class(f"-{new.value}")

    def set_evaluation(self, evaluation: Evaluation, now: datetime | None = None) -> None:
        """Show ``evaluation``; ``now`` updates the age of the check."""
        self.evaluation = evaluation
        self._now = now
        self.band = evaluation.band
        if not self.query(".gauge-name"):
            return  # mounted but not composed yet: on_mount draws the newest evaluation
        self.query_one(".gauge-name", Label).update(Text(evaluation.name, overflow="ellipsis"))
        proximity = evaluation.proximity
        self.query_one(".gauge-bar", Static).update(bar_text(proximity))
        pct = "" if proximity is None else f"{proximity * 100:.0f}%"
        self.query_one(".gauge-pct", Label).update(pct)
        self.query_one(".gauge-band", Label).update(BAND_WORD[evaluation.band])
        if evaluation.error is not None:
            detail = f"fault: {evaluation.error}"
        elif evaluation.triggered:
            detail = evaluation.reason or evaluation.reading or "triggered"
        elif proximity is None:
            detail = evaluation.reading or "not triggered"
        else:
            detail = evaluation.reading
        self.query_one(".gauge-reading", Label).update(Text(detail, overflow="ellipsis"))
        if now is not None:
            self.set_age(now)

    def set_age(self, now: datetime) -> None:
        if not self.query(".gauge-age"):
            return
        seconds = fmt.since(now, self.evaluation.checked_at)
        self.query_one(".gauge-age", Label).update(f"{fmt.age(seconds)} ago")


class GaugePanel(VerticalScroll):
    """The gauges, in evaluator order."""

    DEFAULT_CSS = """
    GaugePanel {
        border: round $secondary;
        border-title-color: $text;
        padding: 0 1;
    }
    GaugePanel > .gauge-empty { color: $text-muted; }
    """

    def on_mount(self) -> None:
        self.border_title = "Triggers"
        self.mount(Label("Waiting for the first evaluation…", classes="gauge-empty"))

    def show(self, evaluations: tuple[Evaluation, ...], now: datetime) -> None:
        """Show the newest evaluations (mounting gauges for evaluators not seen before)."""
        if evaluations:
            for empty in self.query(".gauge-empty"):
                empty.remove()
        gauges = list(self.query(Gauge))
        names = [g.evaluation.name for g in gauges]
        if names != [e.name for e in evaluations]:
            for gauge in gauges:
                gauge.remove()
            self.mount_all(Gauge(e, now) for e in evaluations)
            return
        for gauge, evaluation in zip(gauges, evaluations):
            gauge.set_evaluation(evaluation, now)

    def tick(self, now: datetime) -> None:
        """Update the ages only."""
        for gauge in self.query(Gauge):
            gauge.set_age(now)
