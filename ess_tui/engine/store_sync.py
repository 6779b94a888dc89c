"""Keeping a controller in step with its store: latches and resets made elsewhere, restarts, and a
store that *lost* the latch.

A process that knows activation N is latched never accepts an armed reading without a reset of N
on record: the store lost the latch (a deleted WAL, a file swapped for a fresh one, an evicted key).
It re-asserts the latch durably (``store.latch`` with ``{"reasserted": true, "lost_activation": N}``),
logs and publishes ``store lost the latch``, and keeps retrying until the store holds it again, so
every gate reading the store answers *blocked* again within one check interval.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ess_tui.engine.flatten import describe_error
from ess_tui.engine.state import EmergencyState, LatchedEvent, ResetEvent, WarningEvent

if TYPE_CHECKING:
    from ess_tui.engine.controller import EmergencyStopController

log = logging.getLogger(__name__)


class SyncMixin:
    """``refresh`` / ``restore`` for :class:`~ess_tui.engine.controller.EmergencyStopController`."""

    async def refresh(self: EmergencyStopController) -> EmergencyState:
        """Re-read the latch from the store. Unreadable → reads as latched, with the reason.

        A latch found here (written by another process, or before a restart) is flattened by an
        acting controller; a reset found here clears in-memory triggers through the reset hooks.
        """
        generation = self._generation
        try:
            stored = await self.store.load_state()
        except Exception as exc:  # noqa: BLE001 - unknown means blocked
            why = describe_error(exc)
            if self._unavailable != why:
                log.error("ESS state unavailable: %s", why)
                self.bus.publish(WarningEvent("store", f"state unavailable: {why}"))
            self._unavailable = why
            return self.state
        if generation != self._generation:
            # This controller latched or reset while the read was in flight: the read may
            # predate it. The next refresh reads again.
            return self.state
        was_active = self._state.active
        self._unavailable = None
        if self._state.active and not stored.active and (
            self._not_durable is not None or not self._reset_since(stored)
        ):
            # Our latch never reached the store, or the store lost it: only an audited reset
            # un-latches, so put it back.
            return await self._reassert(stored)
        self._state = stored
        if stored.active and not was_active:
            log.critical("ESS LATCHED (read from the store): %s (activation #%d)", stored.reason,
                         stored.activation_count)
            self.bus.publish(LatchedEvent(stored, False))
        if stored.active and self._flatten_done_for != stored.activation_count:
            self._ensure_flattening()
        elif was_active and not stored.active:
            task, self._flatten_task = self._flatten_task, None
            if task is not None and not task.done():
                task.cancel()
            self.resets_seen += 1
            await self._run_reset_hooks()
            self.bus.publish(ResetEvent(stored, stored.last_reset_by or "unknown"))
        return self.state

    async def _reassert(self: EmergencyStopController, stored: EmergencyState) -> EmergencyState:
        """Write the latch this process knows back into a store that reads armed without a reset
        of it on record. Stays latched (in memory, loudly) until the write succeeds."""
        known = self._state
        lost = known.activation_count
        if self._not_durable is not None:
            details = {"recovered_from": self._not_durable}
        else:
            details = {"reasserted": True, "lost_activation": lost}
            why = (f"store lost the latch: it reads armed (activation #{stored.activation_count}) "
                   f"with no reset of activation #{lost} on record; re-asserting the latch")
            log.critical("%s", why)
            self.bus.publish(WarningEvent("store", why))
        try:
            result = await self.store.latch(
                known.reason or "Emergency stop", at=known.timestamp or self.clock(),
                actor=self.actor, details=details,
            )
        except Exception as exc:  # noqa: BLE001 - still latched here; the next refresh retries
            self._not_durable = describe_error(exc)
            self._unavailable = f"store lost the latch and cannot take it back: {self._not_durable}"
            return self.state
        self._generation += 1
        self._not_durable = None
        self._unavailable = None
        new = result.state
        # Same emergency under the store's new count: not a second flatten, not a second event.
        if self._flatten_done_for == lost:
            self._flatten_done_for = new.activation_count
        if self._stop_event_for == lost:
            self._stop_event_for = new.activation_count
        self._state = new
        if self.flattening and self._flattener is not None:
            # The running flatten is fenced to the old count; let it finish under the new one.
            task = self._flatten_task
            if task is not None:
                task.cancel()
            self._flatten_task = None
            self._flatten_done_for = None
            self._ensure_flattening()
        return self.state

    def _reset_since(self: EmergencyStopController, stored: EmergencyState) -> bool:
        """Does ``stored`` record a reset of the activation we know is latched?

        A reset on record is one at or after our latch, of our activation or a later one: its
        ``last_reset_at``, or (a seed-shaped key, which carries no reset fields) the armed value's
        own timestamp. A store that went back to an older count, or lost the value altogether
        (count 0, no time), has *lost* the latch."""
        known = self._state
        if stored.activation_count < known.activation_count:
            return False
        when = stored.last_reset_at or stored.timestamp
        if when is None:
            return False
        return known.timestamp is None or when >= known.timestamp

    async def restore(self: EmergencyStopController) -> EmergencyState:
        """After a restart: load the latch and, if latched, resume flattening."""
        return await self.refresh()
