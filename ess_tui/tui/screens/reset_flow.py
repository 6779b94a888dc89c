"""The guided reset's rules: what lets a step be left, the re-baselines a reset may choose, and
the confirm step's summary. A mixin of :class:`ess_tui.tui.screens.reset.ResetScreen`."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from textual import work
from textual.widgets import Checkbox, Input, Static

from ess_tui.engine.state import clean_text
from ess_tui.tui.base import host as host_of
from ess_tui.tui.engine_host import LiveCheck, refiring
from ess_tui.tui.screens.reset_parts import ATTESTATIONS

if TYPE_CHECKING:
    from textual.screen import Screen

    _Base = Screen[Any]
else:
    _Base = object


class ResetSteps(_Base):
    """Validation, re-baselining and the summary of the guided reset."""

    if TYPE_CHECKING:
        checks: list[LiveCheck]
        rebaselined: list[dict[str, Any]]
        actor: str

        @property
        def step_name(self) -> str: ...
        def _error(self, message: str) -> None: ...
        def _run_checks(self) -> None: ...

    @property
    def failed_checks(self) -> list[LiveCheck]:
        """Failed checks an override reason may pass (the venue not verified flat)."""
        return [c for c in self.checks if not c.ok and not c.refires]

    @property
    def refires(self) -> list[str]:
        """Triggers that would fire again the moment the ESS is armed (no override passes them)."""
        return refiring(self.checks)

    @work(exclusive=True, group="reset-rebaseline")
    async def _rebaseline(self, kind: str) -> None:
        """The explicit, audited re-baseline, then the checks again on a newer evaluation."""
        host = host_of(self)
        before = host.view().version
        try:
            details = await host.rebaseline(kind, self.actor, "chosen in the guided reset")
        except Exception as exc:  # noqa: BLE001 - the checks stay failed; say why
            self._error(f"Re-baseline failed: {exc}")
            return
        self.rebaselined.append(details)
        for _ in range(100):  # up to ~5 s for the runner's next cycle
            if host.view().version != before:
                break
            await asyncio.sleep(0.05)
        self._run_checks()

    def _validate(self) -> tuple[str | None, dict[str, Any]]:
        """Why the current step cannot be left forwards (None = it can), and its audit details."""
        name = self.step_name
        details: dict[str, Any] = {"step": name}
        if name == "checks":
            if not self.checks:
                return "The checks have not finished yet.", details
            details["checks"] = {c.name: c.ok for c in self.checks}
            if self.refires:
                return (f"{', '.join(self.refires)} would fire again the moment the ESS is armed: "
                        "re-baseline it (where offered) or fix the cause, then run the checks "
                        "again."), details
            if self.rebaselined:
                details["rebaselined"] = [d.get("kind") for d in self.rebaselined]
            if self.failed_checks:
                override = clean_text(self.query_one("#override", Input).value)
                if not override:
                    return ("A check failed: write an override reason to go on, "
                            "or fix the cause and run the checks again."), details
                details["override"] = override
        elif name == "attest":
            missing = [text for key, text in ATTESTATIONS
                       if not self.query_one(f"#attest-{key}", Checkbox).value]
            if missing:
                return f"Not attested: {missing[0]}.", details
            details["attested"] = [key for key, _ in ATTESTATIONS]
        elif name == "operator":
            operator = clean_text(self.query_one("#operator-name", Input).value, limit=120)
            if not operator:
                return "Give the operator's name.", details
            details["operator"] = operator
            if self.query_one("#approver").display:
                approver = clean_text(self.query_one("#approver", Input).value, limit=120)
                if not approver:
                    return "The two-person rule needs a second approver.", details
                details["approver"] = approver
        return None, details

    # --- step (e): summary ------------------------------------------------------------------------

    def _fill_summary(self) -> None:
        name = clean_text(self.query_one("#operator-name", Input).value, limit=120)
        note = clean_text(self.query_one("#operator-note", Input).value)
        override = clean_text(self.query_one("#override", Input).value)
        lines = [
            f"Reset by {name}. Note: {note or '—'}",
            "Checks: " + ", ".join(f"{c.name} {'pass' if c.ok else 'FAIL'}" for c in self.checks),
        ]
        if self.failed_checks:
            lines.append(f"Override: {override}")
        for d in self.rebaselined:
            lines.append(describe_rebaseline(d))
        refires = self.refires
        lines.append("Would fire again once armed: " + (", ".join(refires) if refires else
                     "none — every trigger is below its limit"))
        lines.append("After the reset the ESS is ARMED and trading is allowed again.")
        self.query_one("#confirm-summary", Static).update("\n".join(lines))



def describe_rebaseline(details: dict[str, Any]) -> str:
    """One line for a re-baseline's audit details: what moved from where to where."""
    old, new = details.get("old"), details.get("new")
    if details.get("kind") == "loss" and isinstance(new, dict):
        was = old if isinstance(old, dict) else {}

        def money(value: Any) -> str:
            return f"{value:,.2f}" if isinstance(value, (int, float)) else "—"

        return ("Re-baselined the loss: day start "
                f"{money(was.get('day_start_equity'))} → {money(new.get('day_start_equity'))}, "
                f"peak {money(was.get('peak_equity'))} → {money(new.get('peak_equity'))}")
    return f"Re-baselined {details.get('kind')}: {old or '—'} → {new}"
