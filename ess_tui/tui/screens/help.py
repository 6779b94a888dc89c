"""The help screen: every key (as remapped from config), the drills, and how to remap."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ess_tui.runtime.drills import DRILLS
from ess_tui.tui.base import room


class HelpScreen(ModalScreen[None]):
    """Keys and drills."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; background: $background 60%; }
    HelpScreen > VerticalScroll {
        width: 96; height: auto; max-height: 90%; padding: 1 2;
        border: round $primary; background: $surface;
    }
    HelpScreen .help-title { text-style: bold; margin-bottom: 1; }
    HelpScreen .help-title.-drills { margin-top: 1; }
    HelpScreen .help-foot { color: $text-muted; margin-top: 1; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "dismiss", "Close", id="help-close"),
    ]

    def compose(self) -> ComposeResult:
        app = room(self)
        rows = app.key_help()
        keys = Table(box=None, pad_edge=False, expand=True)
        keys.add_column("Key", style="bold", no_wrap=True, width=14)
        keys.add_column("Does", ratio=2)
        keys.add_column("Binding id (for tui.keys)", style="dim", no_wrap=True)
        drills = Table(box=None, pad_edge=False, expand=True)
        drills.add_column("Key", style="bold", no_wrap=True, width=14)
        drills.add_column("Drill", ratio=2)
        drills.add_column("Binding id", style="dim", no_wrap=True)
        for key, text, binding_id in rows:
            if binding_id.startswith("drill-"):
                drills.add_row(key, DRILLS.get(binding_id[len("drill-"):], text), binding_id)
            else:
                keys.add_row(key, text, binding_id)
        with VerticalScroll():
            yield Static("Keys", classes="help-title")
            yield Static(keys)
            if app.host.is_paper:
                yield Static("Drills (paper venue only; each is audited as a drill)",
                             classes="help-title -drills")
                yield Static(drills)
            yield Static(
                "Remap any key in ess.toml, e.g.  [tui.keys]  stop = \"f12\"   audit = \"ctrl+a\"\n"
                "Ctrl+P opens the command palette (themes: \"Theme\"). Escape closes this help.",
                classes="help-foot",
            )
