"""The engine seen from the control room: what the UI asks of it (:class:`EngineHost`) and what it
reads on each redraw (:class:`EngineView`).

:class:`ess_tui.tui.runtime_host.RuntimeHost` runs the real runtime on its own thread; the
deterministic ``ScenarioHost`` of :mod:`ess_tui.tui.scenarios` draws the snapshots. The guided
reset's live checks are computed here from a venue snapshot and the newest evaluations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ess_tui.engine.state import Band, EmergencyState, Evaluation, FlattenReport, utcnow
from ess_tui.engine.store import AuditRecord, AuditVerification
from ess_tui.runtime.panel import VenueSnapshot

if TYPE_CHECKING:
    from textual.app import App

Clock = Callable[[], datetime]

#: Triggers a reset may re-baseline, by evaluator name: what re-baselining does, and its id.
REBASELINES: dict[str, tuple[str, str]] = {
    "Drawdown": ("loss", "accept the realised loss: measure from current equity"),
    "Execution": ("sl_window", "clear the stop-loss-hit window: count hits from now"),
}


@dataclass(frozen=True)
class LiveCheck:
    """One live check of the guided reset: what was checked, whether it passed, what was seen.

    ``refires`` names the triggers that would fire again the moment the ESS is armed: such a check
    cannot be overridden (only cured, or re-baselined where ``REBASELINES`` allows it)."""

    name: str
    ok: bool
    detail: str
    refires: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class EngineView:
    """The engine's state as the UI reads it on each redraw (no round trip to the engine loop)."""

    state: EmergencyState
    unavailable: str | None = None
    not_durable: str | None = None
    flattening: bool = False
    last_report: FlattenReport | None = None
    evaluations: tuple[Evaluation, ...] = ()
    version: int = 0
    starting: bool = False
    #: False when a lease exists and no acting runner holds it (None: unknown / no lease in use).
    watched: bool | None = None

    @property
    def latched(self) -> bool:
        """Latched, or unknown (which the control room shows as latched: fail closed)."""
        return self.state.active or self.unavailable is not None or self.starting


class EngineHost:
    """What the control room needs from the engine. Subclasses: ``RuntimeHost``, and the
    deterministic ``ScenarioHost`` of :mod:`ess_tui.tui.scenarios`."""

    venue_name: str = "venue"
    is_paper: bool = False

    def acting_here(self) -> bool:
        """True when this process is the desk's acting runner (quitting it leaves nobody to
        flatten until a standby takes the lease)."""
        return False
    manual_name: str | None = None
    two_person: bool = False
    clock: Clock = staticmethod(utcnow)

    def attach(self, app: App[Any]) -> None:
        """Start delivering messages to ``app``; start the engine if it is not running."""
        raise NotImplementedError

    def view(self) -> EngineView:
        raise NotImplementedError

    async def shutdown(self) -> None:
        """Stop the engine cleanly (the latch stays as stored)."""

    async def manual_stop(self, reason: str, actor: str) -> EmergencyState:
        raise NotImplementedError

    async def reset(
        self, reset_by: str, note: str | None, *, approver: str | None = None,
        override: str | None = None, expected_activation: int | None = None,
        venue_flat: bool | None = None, details: dict[str, Any] | None = None,
    ) -> EmergencyState:
        """The audited reset. The engine enforces the reset policy and raises ``ResetRefused``."""
        raise NotImplementedError

    async def rebaseline(self, kind: str, actor: str, reason: str) -> dict[str, Any]:
        """Re-baseline a trigger (``loss`` or ``sl_window``), audited with old and new baselines.
        Returns the audit details."""
        raise NotImplementedError

    async def audit(self, action: str, actor: str, reason: str | None = None,
                    details: dict[str, Any] | None = None) -> None:
        raise NotImplementedError

    async def read_audit(self, limit: int = 500) -> list[AuditRecord]:
        raise NotImplementedError

    async def verify_audit(self) -> AuditVerification:
        raise NotImplementedError

    async def venue_view(self, fresh: bool = False) -> VenueSnapshot:
        """The book as last polled; ``fresh`` reads the venue now."""
        raise NotImplementedError

    async def refresh(self) -> None:
        """Re-read the latch from the store (another process may have latched or reset)."""

    async def drill(self, name: str, actor: str | None = None) -> str:
        """Push the simulated world toward a trigger (paper only). Returns what the drill does."""
        raise NotImplementedError

    async def live_checks(self) -> list[LiveCheck]:
        """The guided reset's live checks: venue flat, every trigger below its limit, feed fresh."""
        venue = await self.venue_view()
        return compute_live_checks(venue, self.view().evaluations, manual_name=self.manual_name)


def _hot(evaluation: Evaluation) -> bool:
    return evaluation.band in (Band.FIRE, Band.ERROR)


def compute_live_checks(
    venue: VenueSnapshot, evaluations: tuple[Evaluation, ...], *, manual_name: str | None,
) -> list[LiveCheck]:
    """Live checks from a venue snapshot and the newest evaluations."""
    checks: list[LiveCheck] = []
    if venue.flat is True:
        checks.append(LiveCheck("Venue flat", True, f"{venue.venue}: no positions, no open orders"))
    elif venue.flat is False:
        open_items = [p.describe() for p in venue.positions] + [o.describe() for o in venue.orders]
        shown = ", ".join(open_items[:4]) + (" …" if len(open_items) > 4 else "")
        checks.append(LiveCheck("Venue flat", False, f"still open: {shown or 'unknown'}"))
    else:
        checks.append(LiveCheck("Venue flat", False,
                                f"cannot verify: {venue.error or 'the venue cannot list positions'}"))
    if not evaluations:
        checks.append(LiveCheck("Triggers below limit", False, "no evaluation has run yet"))
    else:
        hot = [e for e in evaluations
               if _hot(e) and not (manual_name is not None and e.name == manual_name)]
        # (the manual trigger is cleared by the reset itself)
        if hot:
            detail = "; ".join(f"{e.name}: {e.error or e.reason or e.reading}" for e in hot)
            checks.append(LiveCheck(
                "Triggers below limit", False,
                f"would fire again the moment the ESS is armed — {detail}",
                refires=tuple(e.name for e in hot),
            ))
        else:
            checks.append(LiveCheck("Triggers below limit", True,
                                    f"{len(evaluations)} evaluators, none at or over its limit"))
    feed = [e for e in evaluations if "feed" in e.name.lower()]
    if not feed:
        checks.append(LiveCheck("Feed fresh", True, "no data-feed trigger is configured"))
    else:
        bad = [e for e in feed if _hot(e)]
        if bad:
            e = bad[0]
            checks.append(LiveCheck("Feed fresh", False, e.error or e.reason or e.reading,
                                    refires=(e.name,)))
        else:
            checks.append(LiveCheck("Feed fresh", True, feed[0].reading or "fresh"))
    return checks


def refiring(checks: list[LiveCheck]) -> list[str]:
    """Every trigger the checks say would fire again once armed (each named once, in order)."""
    names: list[str] = []
    for check in checks:
        for name in check.refires:
            if name not in names:
                names.append(name)
    return names
