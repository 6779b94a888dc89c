"""The controller's reset: the only way out of a latch, with its policy enforced here, not by callers.

:meth:`ResetMixin.reset` makes the operator's text safe (once: this is where it enters the engine),
turns the controller's :class:`~ess_tui.engine.reset_policy.ResetPolicy` and the request into a guard,
and asks the store to un-latch with it: the store runs the guard inside the un-latching transaction,
on the state and flatten outcome it holds at that moment, bound to the activation the operator
reviewed (``expected_activation``). Every refusal is audited by the store before it is raised.
"""

from __future__ import annotations

import inspect
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ess_tui.engine.aio import maybe_await
from ess_tui.engine.reset_policy import (
    RESET_POLICY_KEY,
    ResetPolicy,
    ResetRefused,
    last_flatten_outcome,
    make_guard,
    reset_details,
    stricter,
)
from ess_tui.engine.state import (
    EmergencyResetEvent,
    EmergencyState,
    EmergencyStopEvent,
    ResetEvent,
)
from ess_tui.engine.store import ResetGuard
from ess_tui.engine.text import clean_text, os_user

if TYPE_CHECKING:
    from ess_tui.engine.controller import EmergencyStopController

log = logging.getLogger(__name__)


def _accepts_guard(store: Any) -> bool:
    try:
        params = inspect.signature(store.unlatch).parameters
    except (TypeError, ValueError):
        return False
    return "guard" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class ResetMixin:
    """``reset`` for :class:`~ess_tui.engine.controller.EmergencyStopController`."""

    async def reset(
        self: EmergencyStopController,
        reset_by: str | None = None,
        note: str | None = None,
        *,
        approver: str | None = None,
        override: str | None = None,
        expected_activation: int | None = None,
        venue_flat: bool | None = None,
        via: str = "api",
        details: dict[str, Any] | None = None,
    ) -> EmergencyState:
        """Un-latch, audited, if the reset policy allows it. The seed's ``reset(reset_by)`` works.

        Raises (each audited): :class:`~ess_tui.engine.store.NotLatchedError` when armed,
        :class:`~ess_tui.engine.store.StaleResetError` when ``expected_activation`` — the
        activation the operator reviewed — is not the one latched now, and
        :class:`~ess_tui.engine.reset_policy.ResetRefused` when the policy says no (operator not
        listed, two-person rule, venue not flat without ``override``).

        ``venue_flat`` is a live check the caller made (the control room's book); without it, what
        this process saw while flattening the latched activation, then the newest flatten outcome
        in the store, decide.
        """
        # No name (or one that is nothing once made safe): the OS user, as the seed records.
        who = (clean_text(reset_by, limit=120) if reset_by else "") or os_user()
        boss = clean_text(approver, limit=120) if approver else None
        why_override = clean_text(override) if override else None
        text = clean_text(note) if note else None
        if venue_flat is None:
            venue_flat = self._seen_open()
        info = dict(details or {})
        ours = reset_details(via=via, approver=boss, override=why_override, venue_flat=venue_flat)
        if via == "api" and "via" in info:
            ours.pop("via")
        info.update(ours)
        guard = make_guard(await self._desk_policy(), operator=who, approver=boss,
                           override=why_override, venue_flat=venue_flat)
        at = self.clock()
        try:
            state = await self._unlatch(who, at, text, info, expected_activation, guard)
        except ResetRefused as exc:
            log.warning("reset by %s refused: %s", who, exc)
            raise
        await self._after_reset(state, who, text, at)
        return state

    async def _desk_policy(self: EmergencyStopController) -> ResetPolicy:
        """This process's policy, made stricter by the one the runner recorded for the desk."""
        get = getattr(self.store, "get_policy", None)
        if not callable(get):
            return self.reset_policy
        try:
            stored = await get(RESET_POLICY_KEY)
        except Exception:  # noqa: BLE001 - an unreadable store refuses the reset itself
            stored = None
        return stricter(self.reset_policy, stored)

    def _seen_open(self: EmergencyStopController) -> bool | None:
        """False when this process's flatten of the latched activation still sees something open;
        None when it cannot say (no flatten here, or the venue has not answered)."""
        flattener = self._flattener
        if flattener is None or not self.flattening or not self._state.active:
            return None
        seen = (flattener.last_positions, flattener.last_orders)
        if any(seen_items for seen_items in seen if seen_items):
            return False
        return None

    async def _unlatch(
        self: EmergencyStopController, who: str, at: datetime, note: str | None,
        details: dict[str, Any], expected_activation: int | None, guard: ResetGuard,
    ) -> EmergencyState:
        store = self.store
        if _accepts_guard(store):
            return await store.unlatch(who, at=at, note=note, details=details,
                                       expected_activation=expected_activation, guard=guard)
        # A store written before the guard contract: run the policy here, then un-latch bound to
        # the activation it was checked against (a new latch in between makes the store refuse).
        state = await store.load_state()
        stale = expected_activation is not None and expected_activation != state.activation_count
        if state.active and not stale:  # a stale reset is refused (and audited) by the store
            reason = guard(state, await last_flatten_outcome(store))
            if reason is not None:
                await store.audit("reset_refused", actor=who, reason=reason, details=details)
                raise ResetRefused(reason)
            if expected_activation is None:
                expected_activation = state.activation_count
        return await store.unlatch(who, at=at, note=note, details=details,
                                   expected_activation=expected_activation)

    async def _after_reset(self: EmergencyStopController, state: EmergencyState, who: str,
                           note: str | None, at: datetime) -> None:
        previous = self._state
        self._generation += 1
        self._state = state
        self._unavailable = None
        self._not_durable = None
        task, self._flatten_task = self._flatten_task, None
        if task is not None and not task.done():
            task.cancel()
        self.resets_seen += 1
        if task is not None and previous.active and self._stop_event_for != previous.activation_count:
            # Reset before its flatten reported: the seed's bus still gets this activation's one
            # emergency.stop (with what was done so far), and before the reset event.
            self._stop_event_for = previous.activation_count
            flattener = self._flattener
            await self._publish_seed(EmergencyStopEvent(
                reason=previous.reason or "Emergency stop",
                timestamp=previous.timestamp or at,
                positions_closed=flattener.positions_closed if flattener else 0,
                orders_canceled=flattener.orders_canceled if flattener else 0,
            ))
        await self._run_reset_hooks()
        log.warning("ESS reset by %s", who)
        self.bus.publish(ResetEvent(state, who, note))
        await self._publish_seed(EmergencyResetEvent(timestamp=at, reset_by=who))

    async def _run_reset_hooks(self: EmergencyStopController) -> None:
        for hook in self._reset_hooks:
            try:
                await maybe_await(hook())
            except Exception:  # noqa: BLE001
                log.exception("reset hook failed")
