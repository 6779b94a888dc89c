"""The venue panel: open positions and orders, and after a latch what flattening did.

Positions and orders are one table (what, symbol, side, size, notional). Below it, the flatten
status: flattening in progress, flat (what was cancelled and closed), or NOT flat (what is still
open, and the last venue error).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from ess_tui.engine.state import FlattenReport
from ess_tui.tui import format as fmt
from ess_tui.runtime.panel import VenueSnapshot, unrealised_pnl


class VenuePanel(Vertical):
    """Positions, orders, equity and the flatten outcome of the venue the ESS watches."""

    DEFAULT_CSS = """
    VenuePanel {
        border: round $secondary;
        border-title-color: $text;
        padding: 0 1;
    }
    VenuePanel > #venue-summary { height: auto; margin-bottom: 1; }
    VenuePanel > DataTable { height: 1fr; background: $surface; }
    VenuePanel > #venue-flatten { height: auto; margin-top: 1; }
    VenuePanel > #venue-flatten.-flat { color: $band-ok; }
    VenuePanel > #venue-flatten.-not-flat { color: $band-fire; text-style: bold; }
    VenuePanel > #venue-flatten.-working { color: $band-warn; }
    """

    def compose(self) -> ComposeResult:
        yield Static("Reading the venue…", id="venue-summary")
        table: DataTable[object] = DataTable(id="venue-table", cursor_type="none", zebra_stripes=True,
                                             cell_padding=0)
        table.can_focus = False
        yield table
        yield Static("", id="venue-flatten")

    def on_mount(self) -> None:
        self.border_title = "Venue"
        table = self.query_one(DataTable)
        table.add_column("What", key="what", width=9)
        table.add_column("Symbol", key="symbol", width=9)
        table.add_column("Side", key="side", width=5)
        table.add_column(Text("Size", justify="right"), key="size", width=8)
        table.add_column(Text("Notional", justify="right"), key="notional", width=10)
        table.add_column(Text("uPnL", justify="right"), key="upnl", width=11)

    def show_venue(self, view: VenueSnapshot) -> None:
        """Redraw positions and orders."""
        self.border_title = f"Venue · {view.venue}"
        table = self.query_one(DataTable)
        table.clear()
        for p in view.positions:
            table.add_row("position", p.symbol, p.side,
                          Text(fmt.amount(p.amount), justify="right"),
                          Text(fmt.money(p.notional), justify="right"),
                          Text(fmt.signed_money(unrealised_pnl(p)), justify="right"))
        for o in view.orders:
            table.add_row(o.kind[:8], o.symbol, o.side,
                          Text(fmt.amount(o.amount), justify="right"),
                          Text(fmt.money(o.notional) if o.price else "market", justify="right"),
                          "")
        parts = [f"{len(view.positions)} positions, {len(view.orders)} open orders"]
        if view.equity is not None:
            parts.append(f"equity {fmt.money(view.equity)}")
        if view.unrealised_pnl is not None:
            parts.append(f"uPnL {fmt.signed_money(view.unrealised_pnl)}")
        if view.error:
            parts.append(f"venue error: {view.error}")
        elif view.flat is True:
            parts.append("flat")
        summary = Text(" · ".join(parts))
        if view.taken_at is not None:
            summary.append(f"\nread at {fmt.clock_time(view.taken_at)} UTC", style="dim")
        self.query_one("#venue-summary", Static).update(summary)

    def show_flatten(self, latched: bool, flattening: bool, report: FlattenReport | None,
                     progress: str | None = None) -> None:
        """Redraw the flatten outcome (empty while armed)."""
        box = self.query_one("#venue-flatten", Static)
        box.set_class(False, "-flat")
        box.set_class(False, "-not-flat")
        box.set_class(False, "-working")
        if not latched:
            box.update("")
            return
        if flattening:
            box.add_class("-working")
            box.update(f"Flattening… {progress or ''}".rstrip())
            return
        if report is None:
            box.update(Text("No flatten result yet (another runner may hold the venue).", style="dim"))
            return
        done = f"cancelled {report.orders_canceled} orders, closed {report.positions_closed} positions"
        if report.flat is True:
            box.add_class("-flat")
            box.update(f"✓ FLAT — {done} in {report.attempts} attempt{'s' if report.attempts != 1 else ''}")
            return
        box.add_class("-not-flat")
        lines = [("✗ NOT FLAT" if report.flat is False else "? FLAT UNKNOWN") + f" — {done}"]
        still = list(report.remaining_positions) + list(report.remaining_orders)
        if still:
            lines.append("still open: " + ", ".join(still[:6]) + (" …" if len(still) > 6 else ""))
        if report.last_error:
            lines.append(f"last error: {report.last_error}")
        if report.fatal:
            lines.append("retrying cannot help: a person has to act on the venue")
        box.update("\n".join(lines))


def one_line(view: VenueSnapshot | None, latched: bool, flattening: bool,
             report: FlattenReport | None) -> Text:
    """The venue in one line, for a narrow terminal: what is open, equity, uPnL, flatten state."""
    if view is None:
        return Text("Venue: reading…")
    parts = [f"{view.venue}: {len(view.positions)} pos, {len(view.orders)} orders"]
    if view.equity is not None:
        parts.append(f"eq {fmt.money(view.equity)}")
    if view.unrealised_pnl is not None:
        parts.append(f"uPnL {fmt.signed_money(view.unrealised_pnl)}")
    if view.error:
        parts.append(f"error: {view.error}")
    line = Text(" · ".join(parts))
    if latched:
        if flattening:
            line.append(" · FLATTENING…", style="bold")
        elif report is not None:
            line.append(" · FLAT" if report.flat else " · NOT FLAT", style="bold")
    line.append("   l: event log", style="dim")
    return line
