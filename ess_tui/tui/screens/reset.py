"""The guided reset: five steps with Back and Next, every step taken or abandoned audited.

(a) what happened: reason, time, the activation's timeline and what flattening did;
(b) live checks: venue flat, every trigger below its limit, feed fresh — a failed check needs a
    written override reason to go on;
(c) the operator attests: root cause found, fix in place, checked on paper;
(d) operator name and a note (and a second approver under the two-person rule);
(e) ``RESET`` typed in full.

The reset policy (``[reset]`` in ess.toml: who may reset, two-person rule, flat-or-override) is
enforced by the engine's ``controller.reset``, which audits refusals: this screen only collects the
operator's input and passes it on.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Checkbox, ContentSwitcher, Footer, Input, Label, Static

from ess_tui.engine.controller import os_user
from ess_tui.engine.state import EmergencyState, clean_text
from ess_tui.engine.store import NotLatchedError
from ess_tui.tui import format as fmt
from ess_tui.tui.base import host as host_of
from ess_tui.tui.engine_host import REBASELINES, LiveCheck, refiring
from ess_tui.tui.screens.reset_flow import ResetSteps
from ess_tui.tui.screens.reset_parts import (
    ATTESTATIONS,
    CONFIRM_WORD,
    STEPS,
    activation_timeline,
    timeline_table,
)

class ResetScreen(ResetSteps, Screen[EmergencyState | None]):
    """The guided reset. Dismisses with the armed state after a reset, or None if abandoned."""

    DEFAULT_CSS = """
    ResetScreen #reset-title { text-style: bold; height: 1; margin: 1 2 0 2; }
    ResetScreen #reset-steps { height: 1; color: $text-muted; margin: 0 2 1 2; }
    ResetScreen ContentSwitcher { height: 1fr; border: round $secondary; padding: 0 1;
                                  margin: 0 2; }
    ResetScreen #checks-list { height: auto; margin-bottom: 1; }
    ResetScreen #rebaseline-box { height: auto; }
    ResetScreen #review-flatten { margin-top: 1; }
    ResetScreen ContentSwitcher > VerticalScroll { height: 1fr; }
    ResetScreen .step-lead { margin-bottom: 1; }
    ResetScreen .check-ok { color: $band-ok; }
    ResetScreen .check-bad { color: $band-fire; text-style: bold; }
    ResetScreen Label { margin-top: 1; }
    ResetScreen Input { width: 80; }
    ResetScreen #reset-error { color: $band-fire; height: auto; min-height: 1; margin: 1 2 0 2; }
    ResetScreen #reset-nav { height: 3; margin: 0 2; }
    ResetScreen #reset-nav Button { margin-right: 2; }
    ResetScreen #reset-go { display: none; }
    ResetScreen.-last #reset-go { display: block; }
    ResetScreen.-last #reset-next { display: none; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "abandon", "Abandon reset", id="reset-abandon",
                tooltip="Leave the reset; the ESS stays latched (audited)"),
    ]

    def __init__(self, state: EmergencyState, *, blink: bool = True) -> None:
        super().__init__()
        self.state = state
        self.step = 0
        self._blink = blink
        self._busy = False
        self.checks: list[LiveCheck] = []
        #: The re-baselines the operator chose in this reset (audit details, old and new).
        self.rebaselined: list[dict[str, Any]] = []
        self.actor = os_user()

    def on_screen_resume(self) -> None:
        self.actor = str(getattr(self.app, "operator", None) or self.actor)

    # --- layout ----------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("Guided reset — the ESS stays latched until the last step", id="reset-title")
        yield Static("", id="reset-steps")
        with ContentSwitcher(initial="step-review"):
            with VerticalScroll(id="step-review"):
                yield Static("", id="review-summary", classes="step-lead")
                yield Static("", id="review-timeline")
                yield Static("", id="review-flatten")
            with VerticalScroll(id="step-checks"):
                yield Static("The ESS checks the world again, now:", classes="step-lead")
                yield Vertical(Static("Running checks…"), id="checks-list")
                yield Vertical(id="rebaseline-box")
                yield Button("Run the checks again", id="checks-rerun")
                yield Label("A check failed: write why resetting anyway is safe (override reason)",
                            id="override-label")
                yield Input(placeholder="e.g. loss realised and accepted by the desk head",
                            id="override", max_length=500)
            with VerticalScroll(id="step-attest"):
                yield Static("Tick each statement that is true. All three are needed.",
                             classes="step-lead")
                for key, text in ATTESTATIONS:
                    yield Checkbox(text, id=f"attest-{key}")
            with VerticalScroll(id="step-operator"):
                yield Static("Who resets, and why. This goes into the audit trail.",
                             classes="step-lead")
                yield Label("Operator name")
                yield Input(value=self.actor, id="operator-name", max_length=120)
                yield Label("Note")
                yield Input(placeholder="what was found and fixed", id="operator-note",
                            max_length=500)
                yield Label("Second approver (two-person rule)", id="approver-label")
                yield Input(placeholder="a different person", id="approver", max_length=120)
            with VerticalScroll(id="step-confirm"):
                yield Static("", id="confirm-summary", classes="step-lead")
                yield Label(f"Type {CONFIRM_WORD} in full to un-latch the ESS and allow trading")
                yield Input(placeholder=CONFIRM_WORD, id="confirm-word", max_length=20)
        yield Static("", id="reset-error")
        with Horizontal(id="reset-nav"):
            yield Button("Back", id="reset-back")
            yield Button("Next", id="reset-next", variant="primary")
            yield Button("RESET ESS", id="reset-go", variant="warning", disabled=True)
            yield Button("Abandon", id="reset-abandon-button")
        yield Footer()

    def on_mount(self) -> None:
        self.actor = str(getattr(self.app, "operator", None) or self.actor)
        self.query_one("#operator-name", Input).value = self.actor
        for field in self.query(Input):
            field.cursor_blink = self._blink
        two_person = host_of(self).two_person
        self.query_one("#approver-label").display = two_person
        self.query_one("#approver").display = two_person
        self._show_step()
        self._start()

    @property
    def step_name(self) -> str:
        return STEPS[self.step][0]

    def _show_step(self) -> None:
        name, title = STEPS[self.step]
        self.query_one(ContentSwitcher).current = f"step-{name}"
        marks = []
        for i, (_, t) in enumerate(STEPS):
            marks.append(f"[{i + 1}. {t}]" if i == self.step else f" {i + 1}. {t} ")
        self.query_one("#reset-steps", Static).update(
            Text(f"Step {self.step + 1} of {len(STEPS)} — {title}    " + " ".join(marks))
        )
        self.query_one("#reset-back", Button).disabled = self.step == 0
        self.set_class(self.step == len(STEPS) - 1, "-last")
        self.query_one("#reset-error", Static).update("")
        if name == "checks":
            self._run_checks()
        elif name == "confirm":
            self._fill_summary()
            self.query_one("#confirm-word", Input).focus()
        elif name == "operator":
            self.query_one("#operator-note", Input).focus()
        elif name == "attest":
            self.query_one(f"#attest-{ATTESTATIONS[0][0]}", Checkbox).focus()
        else:
            self.query_one("#reset-next", Button).focus()

    # --- step (a): what happened ------------------------------------------------------------------

    @work(group="reset-load")
    async def _start(self) -> None:
        host = host_of(self)
        state = self.state
        self.query_one("#review-summary", Static).update(Text.assemble(
            ("Reason: ", "bold"), state.reason or "—", "\n",
            ("Latched: ", "bold"), fmt.date_time(state.timestamp),
            f"   activation #{state.activation_count}",
        ))
        try:
            await host.audit("reset_started", self.actor, details={"step": "review"})
        except Exception as exc:  # noqa: BLE001
            self._error(f"could not write the audit trail: {exc}; the reset cannot go on")
        try:
            rows = await host.read_audit(300)
        except Exception as exc:  # noqa: BLE001
            self.query_one("#review-timeline", Static).update(f"Timeline unavailable: {exc}")
            rows = []
        timeline = activation_timeline(rows) if rows else []
        if timeline:
            self.query_one("#review-timeline", Static).update(timeline_table(timeline))
        report = host.view().last_report
        if report is not None:
            flat = {True: "the venue is verified flat", False: "the venue is NOT flat",
                    None: "the venue cannot say whether it is flat"}[report.flat]
            text = (f"Flattening cancelled {report.orders_canceled} orders and closed "
                    f"{report.positions_closed} positions in {report.attempts} attempt(s); {flat}.")
            if report.last_error:
                text += f"\nLast venue error: {report.last_error}"
            self.query_one("#review-flatten", Static).update(Text(text))

    # --- step (b): live checks --------------------------------------------------------------------

    @work(exclusive=True, group="reset-checks")
    async def _run_checks(self) -> None:
        box = self.query_one("#checks-list", Vertical)
        await box.remove_children()
        await box.mount(Static("Running checks…"))
        try:
            self.checks = await host_of(self).live_checks()
        except Exception as exc:  # noqa: BLE001 - a check that cannot run has failed
            self.checks = [LiveCheck("Checks", False, f"could not run: {exc}")]
        lines = []
        for check in self.checks:
            text = Text.assemble(("✓ PASS  " if check.ok else "✗ FAIL  ", "bold"),
                                 (f"{check.name}: ", "bold"), check.detail)
            lines.append(Static(text, classes="check-ok" if check.ok else "check-bad"))
        await box.remove_children()
        await box.mount_all(lines)
        offers = []
        for name in refiring(self.checks):
            if name in REBASELINES:
                kind, text = REBASELINES[name]
                offers.append(Button(f"Re-baseline {name}: {text}", id=f"rebase-{kind}",
                                     classes="rebase", variant="warning"))
        box = self.query_one("#rebaseline-box", Vertical)
        await box.remove_children()
        if offers:
            await box.mount_all(offers)
        failed = self.failed_checks
        self.query_one("#override-label").display = bool(failed)
        self.query_one("#override").display = bool(failed)
        if failed and self.step_name == "checks":
            self.query_one("#override", Input).focus()

    @on(Button.Pressed, ".rebase")
    def _rebase_pressed(self, event: Button.Pressed) -> None:
        kind = (event.button.id or "").removeprefix("rebase-")
        self._rebaseline(kind)

    @on(Button.Pressed, "#checks-rerun")
    def _rerun(self) -> None:
        self._run_checks()

    # --- navigation -------------------------------------------------------------------------------

    def _error(self, message: str) -> None:
        self.query_one("#reset-error", Static).update(Text(message))

    @on(Button.Pressed, "#reset-next")
    @on(Input.Submitted, "#override, #operator-name, #operator-note, #approver")
    def action_next(self) -> None:
        if self.step < len(STEPS) - 1:
            self._advance()

    @work(group="reset-nav")
    async def _advance(self) -> None:
        if self._busy:
            return
        problem, details = self._validate()
        if problem:
            self._error(problem)
            return
        self._busy = True
        try:
            operator = clean_text(self.query_one("#operator-name", Input).value, limit=120)
            await host_of(self).audit("reset_step", operator or self.actor, details=details)
        except Exception as exc:  # noqa: BLE001
            self._error(f"could not write the audit trail: {exc}; the reset cannot go on")
            return
        finally:
            self._busy = False
        self.step += 1
        self._show_step()

    @on(Button.Pressed, "#reset-back")
    def action_back(self) -> None:
        if self.step > 0 and not self._busy:
            self.step -= 1
            self._show_step()

    @on(Input.Changed, "#confirm-word")
    def _confirm_changed(self, event: Input.Changed) -> None:
        self.query_one("#reset-go", Button).disabled = event.value != CONFIRM_WORD

    @on(Input.Submitted, "#confirm-word")
    @on(Button.Pressed, "#reset-go")
    def _go(self) -> None:
        if self.query_one("#confirm-word", Input).value != CONFIRM_WORD:
            self._error(f"Type {CONFIRM_WORD} exactly (capitals, nothing else) to reset.")
            return
        self._do_reset()

    @work(group="reset-nav")
    async def _do_reset(self) -> None:
        if self._busy:
            return
        self._busy = True
        host = host_of(self)
        operator = clean_text(self.query_one("#operator-name", Input).value, limit=120)
        note = clean_text(self.query_one("#operator-note", Input).value) or None
        approver = clean_text(self.query_one("#approver", Input).value, limit=120) or None
        override = clean_text(self.query_one("#override", Input).value) or None
        venue_ok = next((c.ok for c in self.checks if c.name == "Venue flat"), None)
        self.query_one("#reset-go", Button).disabled = True
        try:
            still = refiring(await host.live_checks())
        except Exception as exc:  # noqa: BLE001 - a check that cannot run has failed
            still = [f"the checks could not run ({exc})"]
        if still:
            why = f"{', '.join(still)} would fire again the moment the ESS is armed"
            try:
                await host.audit("reset_refused", operator or self.actor, reason=why,
                                 details={"via": "tui", "refires": still})
            finally:
                self._busy = False
                self._error(f"Reset refused: {why}. Re-baseline or fix it, then run the checks again.")
                self.query_one("#reset-go", Button).disabled = False
            return
        try:
            details: dict[str, Any] = {
                "checks": {c.name: c.ok for c in self.checks},
                "attested": [key for key, _ in ATTESTATIONS],
                # the activation this operator reviewed: a newer one is never reset unseen
                "reviewed_activation": self.state.activation_count,
                "rebaselined": self.rebaselined,
            }
            state = await host.reset(
                operator, note,
                approver=approver if self.query_one("#approver").display else None,
                override=override if self.failed_checks else None,
                expected_activation=self.state.activation_count,
                venue_flat=venue_ok, details=details,
            )
        except NotLatchedError:
            self.app.notify("The ESS is not latched any more (reset elsewhere).", title="Nothing to reset")
            self.dismiss(None)
            return
        except Exception as exc:  # noqa: BLE001 - refused or failed: stay latched, say why
            self._busy = False
            self._error(f"Reset refused: {exc}")
            self.query_one("#reset-go", Button).disabled = False
            return
        self.dismiss(state)

    @on(Button.Pressed, "#reset-abandon-button")
    def action_abandon(self) -> None:
        self._abandon()

    @work(group="reset-nav")
    async def _abandon(self, why: str = "abandoned by the operator") -> None:
        if self._busy:
            return
        self._busy = True
        try:
            await host_of(self).audit(
                "reset_abandoned", self.actor, reason=why, details={"step": self.step_name},
            )
        except Exception as exc:  # noqa: BLE001 - leaving is always allowed; say it was not recorded
            self.app.notify(f"The abandoned reset could not be audited: {exc}", severity="error")
        self.dismiss(None)
