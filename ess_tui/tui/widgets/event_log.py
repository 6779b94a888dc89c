"""The event log: band changes, latches, resets, flatten steps and venue errors, with UTC times."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual.widgets import RichLog

from ess_tui.tui import format as fmt

#: Event kinds and the theme variable-free Rich style of their tag.
KIND_STYLE = {
    "LATCH": "bold reverse",
    "RESET": "bold",
    "STOP": "bold reverse",
    "BAND": "",
    "FLAT": "",
    "VENUE": "bold",
    "WARN": "bold",
    "DRILL": "italic",
    "INFO": "dim",
}


class EventLog(RichLog):
    """Newest at the bottom; keeps the last 1,000 entries."""

    DEFAULT_CSS = """
    EventLog {
        border: round $secondary;
        border-title-color: $text;
        background: $surface;
        padding: 0 1;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(max_lines=1000, wrap=True, markup=False, auto_scroll=True, **kwargs)  # type: ignore[arg-type]
        self.entries: list[tuple[datetime, str, str]] = []

    def on_mount(self) -> None:
        self.border_title = "Event log (UTC)"
        self.can_focus = False

    def add(self, at: datetime, kind: str, message: str) -> None:
        """Add one entry, in time order (entries from the engine and the UI may arrive out of order)."""
        entry = (at, kind, message)
        if self.entries and at < self.entries[-1][0]:
            index = len(self.entries)
            while index > 0 and self.entries[index - 1][0] > at:
                index -= 1
            self.entries.insert(index, entry)
            del self.entries[:-1000]
            self._redraw()
            return
        self.entries.append(entry)
        del self.entries[:-1000]
        self._write(entry)

    def _write(self, entry: tuple[datetime, str, str]) -> None:
        at, kind, message = entry
        stamp = f"{fmt.clock_time(at)}  "
        line = Text(f"{stamp}{kind:<5}  {message}")
        style = KIND_STYLE.get(kind, "")
        if style:
            line.stylize(style, len(stamp), len(stamp) + len(kind))
        width = self.scrollable_content_region.width
        self.write(line, width=width if width > 10 else None)

    def _redraw(self) -> None:
        self.clear()
        for entry in self.entries:
            self._write(entry)

    def on_resize(self) -> None:
        """Re-wrap every entry to the new width."""
        self._redraw()
