"""The audit screen: the trail as a table (time, action, who, reason), newest first, and whether
its hash chain verifies."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ess_tui.tui import format as fmt
from ess_tui.tui.base import host as host_of
from ess_tui.tui.screens.reset_parts import describe_row

#: Actions drawn in bold in the table: the ones that change the latch.
LATCH_ACTIONS = {"activate", "reset", "extra_trigger", "flatten_failed", "drill"}


class AuditScreen(Screen[None]):
    """The audit trail, newest first."""

    DEFAULT_CSS = """
    AuditScreen { padding: 0 1; }
    AuditScreen #audit-verify { height: auto; padding: 0 1; margin: 1 0; text-style: bold; }
    AuditScreen #audit-verify.-ok { background: $band-ok 25%; }
    AuditScreen #audit-verify.-broken { background: $band-fire; color: $text; }
    AuditScreen DataTable { height: 1fr; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", id="audit-back", tooltip="Back to the dashboard"),
        Binding("f5", "reload", "Reload", id="audit-reload", tooltip="Read the trail again"),
    ]

    def __init__(self, *, limit: int = 1000) -> None:
        super().__init__()
        self.limit = limit

    def compose(self) -> ComposeResult:
        yield Static("Verifying the audit chain…", id="audit-verify")
        yield DataTable(id="audit-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("Time (UTC)", key="at", width=19)
        table.add_column("Action", key="action", width=16)
        table.add_column("Who", key="who", width=18)
        table.add_column("Reason / details", key="reason")
        self.action_reload()

    def action_reload(self) -> None:
        self._load()

    @work(exclusive=True, group="audit-load")
    async def _load(self) -> None:
        host = host_of(self)
        verify = self.query_one("#audit-verify", Static)
        table = self.query_one(DataTable)
        try:
            rows = await host.read_audit(self.limit)
            result = await host.verify_audit()
        except Exception as exc:  # noqa: BLE001 - shown, never hidden
            verify.set_class(True, "-broken")
            verify.update(f"✗ The audit trail cannot be read: {exc}")
            return
        table.clear()
        for row in rows:
            style = "bold" if row.action in LATCH_ACTIONS else ""
            table.add_row(fmt.date_time(row.at)[:19], Text(row.action, style=style), row.actor,
                          Text(describe_row(row), overflow="ellipsis", no_wrap=True))
        verify.set_class(result.ok, "-ok")
        verify.set_class(not result.ok, "-broken")
        shown = f"showing the newest {len(rows)}" if len(rows) < result.rows else f"{len(rows)} rows"
        if result.ok:
            verify.update(f"✓ Chain verified: {result.rows} rows intact ({shown}, newest first)")
        else:
            verify.update(
                f"✗ CHAIN BROKEN at row {result.first_bad_seq}: {result.problem}. "
                "The trail may have been altered: keep this database and investigate."
            )
