"""Who may reset a latched ESS, and on what conditions. Shared by the CLI and the guided reset.

Config (``[reset]`` in ess.toml) may list the operators allowed to reset and require a second,
different approver (two-person rule). A reset while the venue is not verified flat needs a written
override reason. Every refusal is audited before it is raised.
"""

from __future__ import annotations

from typing import Any

from ess_tui.config import ResetPolicy
from ess_tui.engine.state import clean_text
from ess_tui.engine.store import StateStore


class ResetRefused(Exception):
    """The reset is not allowed; the message says why and what would allow it."""


def _norm(name: str | None) -> str:
    return clean_text(name or "", limit=120).casefold()


async def last_flatten_outcome(store: StateStore) -> dict[str, Any] | None:
    """Details of the newest flatten audit row since the newest activation, or None."""
    for row in await store.read_audit(200, newest_first=True):
        if row.action in ("flattened", "flatten_failed"):
            return {"action": row.action, **row.details}
        if row.action == "activate":
            return None
    return None


async def check_reset_allowed(
    policy: ResetPolicy,
    store: StateStore,
    *,
    operator: str,
    approver: str | None = None,
    override: str | None = None,
    via: str,
    venue_flat: bool | None = None,
) -> dict[str, Any]:
    """Raise :class:`ResetRefused` (audited) unless this reset is allowed; return audit details.

    ``venue_flat`` is the live check where the caller has one (the control room); otherwise the
    newest flatten outcome in the audit trail decides.
    """
    details: dict[str, Any] = {"via": via}

    async def refuse(why: str) -> None:
        await store.audit("reset_refused", actor=operator or "?", reason=why, details=details)
        raise ResetRefused(why)

    if not clean_text(operator or ""):
        await refuse("no operator name given")
    allowed = {_norm(n) for n in policy.operators}
    if allowed and _norm(operator) not in allowed:
        await refuse(f"{clean_text(operator, limit=120)} is not on the list of operators allowed to reset")
    if policy.two_person:
        if not approver or not clean_text(approver):
            await refuse("two-person rule: a second approver is required (--approver NAME)")
        if _norm(approver) == _norm(operator):
            await refuse("two-person rule: the approver must be a different person")
        if allowed and _norm(approver) not in allowed:
            await refuse(f"{clean_text(approver or '', limit=120)} is not on the list of operators allowed to approve")
        details["approver"] = clean_text(approver or "", limit=120)

    if venue_flat is None:
        outcome = await last_flatten_outcome(store)
        venue_flat = bool(outcome and outcome.get("flat") is True)
        if outcome is None:
            details["flat_check"] = "no flatten result recorded since the activation"
        else:
            details["flat_check"] = f"last flatten: {outcome.get('action')}, flat={outcome.get('flat')}"
    if not venue_flat:
        if not override or not clean_text(override):
            await refuse("the venue is not verified flat; give an override reason to reset anyway (--override REASON)")
        details["override"] = clean_text(override)
    return details
