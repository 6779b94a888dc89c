"""The manual stop: a modal that asks for a reason and for ``STOP`` typed in full.

Anything but exactly ``STOP`` cannot confirm; Escape cancels and nothing is written. On confirm the
modal closes with the reason and the app latches (see ``ControlRoomApp._after_stop``): the modal
never calls the engine itself.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from ess_tui.engine.controller import os_user
from ess_tui.engine.state import clean_text

CONFIRM_WORD = "STOP"

#: The spec's reasons for a manual stop, one key each (free text stays possible).
REASONS: tuple[tuple[str, str], ...] = (
    ("1", "suspicious activity"),
    ("2", "security concern"),
    ("3", "regulatory"),
    ("4", "operational issue"),
)


class StopModal(ModalScreen[str | None]):
    """Fire the emergency stop by hand. Dismisses with the reason, or None if cancelled."""

    DEFAULT_CSS = """
    StopModal { align: center middle; background: $background 60%; }
    StopModal > Vertical {
        width: 76; height: auto; padding: 1 2;
        border: thick $band-fire; background: $surface;
    }
    StopModal .stop-title { text-style: bold; color: $band-fire; width: 1fr; }
    StopModal Label { margin-top: 1; }
    StopModal #stop-error { color: $band-fire; height: auto; }
    StopModal #stop-status { color: $text-muted; height: auto; }
    StopModal Horizontal { height: auto; margin-top: 1; align-horizontal: right; }
    StopModal Button { margin-left: 2; }
    StopModal #stop-reasons { align-horizontal: left; }
    StopModal #stop-reasons Button { margin: 0 2 0 0; min-width: 8; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="stop-cancel", tooltip="Close without stopping"),
        # On a button; in the empty reason field the digit is caught as it lands (_changed).
        *[Binding(key, f"reason({i})", text, id=f"stop-reason-{key}", show=False,
                  tooltip=f"Reason: {text} (in the empty reason field, or on a button)")
          for i, (key, text) in enumerate(REASONS)],
    ]

    def __init__(self, *, actor: str | None = None, blink: bool = True) -> None:
        super().__init__()
        self.actor = actor or os_user()
        self._blink = blink
        self._busy = False

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("■ EMERGENCY STOP", classes="stop-title")
            yield Static(
                "Latches the ESS now: every order is cancelled, every position closed "
                "(reduce-only), and trading stays blocked until an audited reset."
            )
            with Horizontal(id="stop-reasons"):
                for i, (key, text) in enumerate(REASONS):
                    yield Button(f"{key} {text.split()[0]}", id=f"stop-pick-{i}", classes="stop-pick",
                                 compact=True)
            yield Label("Reason (goes in the audit trail): type it, or press 1–4")
            yield Input(placeholder="e.g. suspicious fills on BTC/USDT", id="stop-reason",
                        max_length=500)
            yield Label(f"Type {CONFIRM_WORD} in full to confirm")
            yield Input(placeholder=CONFIRM_WORD, id="stop-confirm", max_length=20)
            yield Static("", id="stop-error")
            yield Static(f"Operator: {self.actor} · Escape cancels, nothing is written",
                         id="stop-status")
            with Horizontal():
                yield Button("Cancel", id="stop-cancel-button")
                yield Button("STOP TRADING", id="stop-go", variant="error", disabled=True)

    def on_mount(self) -> None:
        self.actor = str(getattr(self.app, "operator", None) or self.actor)
        self.query_one("#stop-status", Static).update(
            f"Operator: {self.actor} · Escape cancels, nothing is written")
        for field in self.query(Input):
            field.cursor_blink = self._blink
        # The reason field first: a reason typed at once is never lost to a focused button.
        self.query_one("#stop-reason", Input).focus()

    def action_reason(self, index: int) -> None:
        """One-key reason: fill it in and go to the confirmation field."""
        if self._busy or not 0 <= index < len(REASONS):
            return
        self.query_one("#stop-reason", Input).value = REASONS[index][1]
        self.query_one("#stop-confirm", Input).focus()

    @on(Button.Pressed, ".stop-pick")
    def _picked(self, event: Button.Pressed) -> None:
        self.action_reason(int((event.button.id or "-1").rsplit("-", 1)[-1]))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "reason" and isinstance(self.focused, Input):
            return False  # in a field a digit types (the empty reason field: see _changed)
        return True

    def _can_confirm(self) -> bool:
        confirm = self.query_one("#stop-confirm", Input).value
        reason = clean_text(self.query_one("#stop-reason", Input).value)
        return confirm == CONFIRM_WORD and bool(reason) and not self._busy

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        keys = [key for key, _ in REASONS]
        if event.input.id == "stop-reason" and event.value in keys:
            # One key in the still-empty reason field picks that common reason.
            self.action_reason(keys.index(event.value))
            return
        self.query_one("#stop-go", Button).disabled = not self._can_confirm()
        self.query_one("#stop-error", Static).update("")

    @on(Input.Submitted, "#stop-reason")
    def _next_field(self) -> None:
        self.query_one("#stop-confirm", Input).focus()

    @on(Input.Submitted, "#stop-confirm")
    @on(Button.Pressed, "#stop-go")
    def _submit(self) -> None:
        if self._busy:
            return
        reason = clean_text(self.query_one("#stop-reason", Input).value)
        confirm = self.query_one("#stop-confirm", Input).value
        error = self.query_one("#stop-error", Static)
        if not reason:
            error.update("Give a reason: it goes into the audit trail.")
            self.query_one("#stop-reason", Input).focus()
            return
        if confirm != CONFIRM_WORD:
            error.update(f"Type {CONFIRM_WORD} exactly (capitals, nothing else) to confirm.")
            return
        self._busy = True
        self.dismiss(reason)

    @on(Button.Pressed, "#stop-cancel-button")
    def action_cancel(self) -> None:
        if not self._busy:
            self.dismiss(None)
