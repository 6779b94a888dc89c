"""Who may reset a latched ESS, and on what conditions — enforced by the controller itself.

A :class:`ResetPolicy` may list the operators allowed to reset, require a second, different approver
(two-person rule), and require the venue to be flat (or a written override reason). The controller
turns the policy and one operator's request into a pure, synchronous :data:`ResetGuard`
(:func:`make_guard`) and hands it to ``store.unlatch(guard=...)``: the store runs it *inside* the
transaction that un-latches, on the state and flatten outcome it holds at that moment, audits a
refusal as ``reset_refused`` and raises :class:`ResetRefused`. So no caller can skip the policy and no
stale review can slip past it.

This module imports nothing outside the engine: the config's ``[reset]`` table (a pydantic model) is
converted with :meth:`ResetPolicy.from_mapping` by whoever builds the controller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ess_tui.engine.state import EmergencyState
from ess_tui.engine.store import ResetGuard, StateStore
from ess_tui.engine.text import clean_text


class ResetRefused(Exception):
    """The reset is not allowed; the message says why and what would allow it."""


def _norm(name: str | None) -> str:
    return clean_text(name or "", limit=120).casefold()


@dataclass(frozen=True)
class ResetPolicy:
    """The reset rules.

    ``operators``: who may reset (and approve); empty means anyone. ``two_person``: a second,
    different approver must confirm. ``require_flat``: the venue must be flat, or the operator gives
    an override reason. ``allow_unverified``: with ``require_flat``, a venue that *cannot say*
    whether it is flat (a seed-shaped exchange with only bulk calls, or no flatten result recorded
    yet) is let through without an override; a venue *known* not flat never is.
    """

    operators: tuple[str, ...] = ()
    two_person: bool = False
    require_flat: bool = True
    allow_unverified: bool = False

    @classmethod
    def seed_default(cls) -> ResetPolicy:
        """The policy of a controller built without one (the seed's 3-argument constructor):
        anyone may reset; a venue known not flat needs an override; a venue that cannot be
        verified (the seed's exchange has no fetch methods) does not."""
        return cls(allow_unverified=True)

    @classmethod
    def from_mapping(cls, value: Any) -> ResetPolicy:
        """From a mapping or an object with the same attributes (the config's ``[reset]`` model).

        ``None`` gives the strict default ``ResetPolicy()``; a ResetPolicy is returned as is.
        """
        if value is None:
            return cls()
        if isinstance(value, ResetPolicy):
            return value
        if isinstance(value, Mapping):
            get = value.get
        else:
            def get(name: str, default: Any = None) -> Any:
                return getattr(value, name, default)
        operators = get("operators", ()) or ()
        if isinstance(operators, str) or not isinstance(operators, Iterable):
            raise ValueError(f"reset operators must be a list of names, got {operators!r:.60}")
        return cls(
            operators=tuple(clean_text(o, limit=120) for o in operators if clean_text(o)),
            two_person=bool(get("two_person", False)),
            require_flat=bool(get("require_flat", True)),
            allow_unverified=bool(get("allow_unverified", False)),
        )


#: The policy key where the runner (the lease holder) records the desk's reset policy.
RESET_POLICY_KEY = "reset_policy"


def policy_value(policy: ResetPolicy) -> dict[str, Any]:
    """``policy`` as the plain JSON the store holds under :data:`RESET_POLICY_KEY`."""
    return {"operators": list(policy.operators), "two_person": policy.two_person,
            "require_flat": policy.require_flat, "allow_unverified": policy.allow_unverified}


def stricter(own: ResetPolicy, stored: Any) -> ResetPolicy:
    """The stricter of a process's own policy and the desk's stored one: a process started with
    a weaker config (an empty operator list, no two-person rule) cannot reset the desk around its
    policy. The stored operator list applies when it is not empty; each rule holds if either
    side has it. A stored value that cannot be read is ignored (``own`` still applies)."""
    if not stored:
        return own
    try:
        desk = ResetPolicy.from_mapping(stored)
    except (ValueError, TypeError):
        return own
    return ResetPolicy(
        operators=desk.operators or own.operators,
        two_person=own.two_person or desk.two_person,
        require_flat=own.require_flat or desk.require_flat,
        allow_unverified=own.allow_unverified and desk.allow_unverified,
    )


def _flat_verdict(venue_flat: bool | None, last_flatten: dict[str, Any] | None,
                  activation: int | None = None) -> bool | None:
    """True flat, False known not flat, None cannot say. A live check (``venue_flat``) wins over
    the newest flatten outcome recorded for the latched activation (an outcome that names another
    activation says nothing about this one)."""
    if venue_flat is not None:
        return bool(venue_flat)
    if not last_flatten:
        return None
    recorded = last_flatten.get("activation_count")
    if activation is not None and isinstance(recorded, int) and recorded != activation:
        return None
    flat = last_flatten.get("flat")
    if last_flatten.get("action") == "flatten_failed" and flat is not True:
        return False
    return flat if isinstance(flat, bool) else None


def refusal(
    policy: ResetPolicy, *, operator: str, approver: str | None, override: str | None,
    venue_flat: bool | None, last_flatten: dict[str, Any] | None, activation: int | None = None,
) -> str | None:
    """Why this reset breaks ``policy``, or None when it is allowed. Pure; names arrive cleaned."""
    if not operator:
        return "no operator name given"
    allowed = {_norm(n) for n in policy.operators}
    if allowed and _norm(operator) not in allowed:
        return f"{operator} is not on the list of operators allowed to reset"
    if policy.two_person:
        if not approver:
            return "two-person rule: a second approver is required (--approver NAME)"
        if _norm(approver) == _norm(operator):
            return "two-person rule: the approver must be a different person"
        if allowed and _norm(approver) not in allowed:
            return f"{approver} is not on the list of operators allowed to approve"
    if policy.require_flat and not override:
        flat = _flat_verdict(venue_flat, last_flatten, activation)
        if flat is False:
            return ("the venue is not verified flat (it is known to be open); give an override "
                    "reason to reset anyway (--override REASON)")
        if flat is None and not policy.allow_unverified:
            return ("the venue is not verified flat; give an override reason to reset anyway "
                    "(--override REASON)")
    return None


def make_guard(
    policy: ResetPolicy, *, operator: str, approver: str | None = None,
    override: str | None = None, venue_flat: bool | None = None,
) -> ResetGuard:
    """The store-side check for one reset request (see ``StateStore.unlatch``)."""

    def guard(state: EmergencyState, last_flatten: dict[str, Any] | None) -> str | None:
        return refusal(policy, operator=operator, approver=approver, override=override,
                       venue_flat=venue_flat, last_flatten=last_flatten,
                       activation=state.activation_count)

    return guard


async def last_flatten_outcome(store: StateStore) -> dict[str, Any] | None:
    """Details of the newest flatten audit row since the newest activation, or None."""
    for row in await store.read_audit(200, newest_first=True):
        if row.action in ("flattened", "flatten_failed"):
            return {"action": row.action, **row.details}
        if row.action == "activate":
            return None
    return None


async def check_reset_allowed(
    policy: Any,
    store: StateStore,
    *,
    operator: str,
    approver: str | None = None,
    override: str | None = None,
    via: str,
    venue_flat: bool | None = None,
) -> dict[str, Any]:
    """A caller's early look (before asking "type RESET"): raise :class:`ResetRefused` (audited)
    unless this reset would be allowed now; return details for the audit row.

    Advisory only: the controller's :meth:`reset` runs the same policy again inside the
    un-latching transaction, which is what decides.
    """
    rules = ResetPolicy.from_mapping(policy)
    who = clean_text(operator or "", limit=120)
    boss = clean_text(approver, limit=120) if approver else None
    why_override = clean_text(override) if override else None
    outcome = await last_flatten_outcome(store) if venue_flat is None else None
    reason = refusal(rules, operator=who, approver=boss, override=why_override,
                     venue_flat=venue_flat, last_flatten=outcome)
    details: dict[str, Any] = reset_details(via=via, approver=boss, override=why_override,
                                            venue_flat=venue_flat)
    if venue_flat is None:
        details["flat_check"] = (
            "no flatten result recorded since the activation" if outcome is None
            else f"last flatten: {outcome.get('action')}, flat={outcome.get('flat')}"
        )
    if reason is not None:
        await store.audit("reset_refused", actor=who or "?", reason=reason, details=details)
        raise ResetRefused(reason)
    return details


def reset_details(*, via: str, approver: str | None, override: str | None,
                  venue_flat: bool | None) -> dict[str, Any]:
    """What a reset's audit row records about how it was allowed."""
    details: dict[str, Any] = {"via": via}
    if approver:
        details["approver"] = approver
    if override:
        details["override"] = override
    if venue_flat is not None:
        details["venue_flat"] = bool(venue_flat)
    return details


__all__ = [
    "RESET_POLICY_KEY", "policy_value", "stricter",
    "ResetPolicy", "ResetRefused", "check_reset_allowed", "last_flatten_outcome", "make_guard",
    "refusal", "reset_details",
]
