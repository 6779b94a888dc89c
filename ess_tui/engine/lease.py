"""The runner's lease: only its holder acts on the venue, and every book-changing call is fenced.

Renewal and "do I still hold it?" run on the monotonic clock, never the wall clock, so a stepped
clock changes neither who acts nor when. The store decides who holds the lease and its epoch (the
fencing token, growing with every change of holder); :meth:`LeaseMixin.fence` asks it immediately
before each cancel and close.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from ess_tui.engine.flatten import describe_error
from ess_tui.engine.reset_policy import RESET_POLICY_KEY, policy_value
from ess_tui.engine.state import WarningEvent
from ess_tui.engine.store import FencedOut

if TYPE_CHECKING:
    from ess_tui.engine.system import EmergencyStopSystem

log = logging.getLogger(__name__)


class LeaseMixin:
    """Lease handling for :class:`~ess_tui.engine.system.EmergencyStopSystem`."""

    async def _keep_lease(self: EmergencyStopSystem) -> None:
        assert self.lease_ttl_sec is not None
        step = min(0.1, self.lease_ttl_sec / 3)  # a heartbeat: it also sees this process pause
        asked = float("-inf")
        while True:
            self._heartbeat = self.monotonic()
            await asyncio.sleep(step)
            now = self.monotonic()
            if now - self._heartbeat > self.lease_ttl_sec:
                self.pauses += 1
            if now - asked < self.lease_ttl_sec / 3:
                continue
            asked = now
            try:
                await self._take_lease()
            except Exception as exc:  # noqa: BLE001
                self._loop_fault("renewing the lease", describe_error(exc))

    async def _was_paused(self: EmergencyStopSystem, pauses_before: int) -> bool:
        """True when this process was paused (SIGSTOP, a VM pause, a frozen loop) for longer than
        the lease ttl and, the lease re-read from the store at once, no longer holds it: then
        nothing it read across the pause (its own loop lag among it) may latch the desk. A runner
        that still holds the lease after the pause judges its readings as usual."""
        if self.lease_ttl_sec is None:
            return False
        beat = self._heartbeat
        paused = self.monotonic() - beat if beat is not None else 0.0
        if paused <= self.lease_ttl_sec and self.pauses == pauses_before:
            return False
        self._lease_renewed_at = float("-inf")  # not on the strength of the last renewal
        await self._take_lease()
        acting = bool(self.controller.acting)
        log.warning("runner was paused (%.1fs ago; lease ttl %gs); lease re-read: %s", paused,
                    self.lease_ttl_sec, "still held" if acting else "a standby now")
        if not acting:
            self.bus.publish(WarningEvent(
                "lease", "runner was paused past its lease and lost it: its readings across the "
                "pause are not judged"))
        return not acting

    async def _take_lease(self: EmergencyStopSystem) -> None:
        if self.lease_ttl_sec is None:
            self.controller.acting = True
            return
        now = self.monotonic()  # never the wall clock: a stepped clock must not change who acts
        if self.lease_holder == self.holder and now - self._lease_renewed_at < self.lease_ttl_sec / 3:
            return
        try:
            lease = await self.controller.store.acquire_lease(
                self.holder, ttl_sec=self.lease_ttl_sec, at=self.clock()
            )
        except Exception as exc:  # noqa: BLE001
            held_until = self._lease_renewed_at + self.lease_ttl_sec
            if self.lease_holder == self.holder and now < held_until:
                # Nobody can take it before it expires: we still act until then.
                self.bus.publish(WarningEvent(
                    "lease", f"cannot renew the runner lease ({describe_error(exc)}); "
                    f"still held for {held_until - now:.1f}s"))
                return
            self.controller.acting = False
            self.lease_holder = None
            self.lease_epoch = None
            self.bus.publish(WarningEvent("lease", f"cannot read the runner lease: {describe_error(exc)}"))
            return
        previous = self.lease_holder
        self.lease_holder = lease.holder
        holds = lease.holder == self.holder
        self.controller.acting = holds
        self.lease_epoch = int(getattr(lease, "epoch", 0) or 0) if holds else None
        if holds:
            self._lease_renewed_at = now
            if previous != self.holder:
                log.warning("runner lease acquired by %s", self.holder)
                await self._record_reset_policy()
        elif previous != lease.holder:
            remaining = (lease.expires_at - self.clock()) / timedelta(seconds=1)
            log.warning("runner lease held by %s (expires in %.1fs); waiting as a standby",
                        lease.holder, remaining)
            self.bus.publish(WarningEvent("lease", f"standby: lease held by {lease.holder}"))

    async def _record_reset_policy(self: EmergencyStopSystem) -> None:
        """The lease holder records its reset policy for the desk (audited when it changes): a
        reset from a process with a weaker config is held to the stricter of the two."""
        store = self.controller.store
        if not callable(getattr(store, "set_policy", None)):
            return
        value = policy_value(self.controller.reset_policy)
        try:
            if await store.get_policy(RESET_POLICY_KEY) != value:
                await store.set_policy(RESET_POLICY_KEY, value, audit=True, actor=self.holder)
        except Exception as exc:  # noqa: BLE001 - the process's own policy still applies
            log.warning("could not record the reset policy: %s", describe_error(exc))
            self.bus.publish(WarningEvent("store", f"could not record the reset policy: "
                                                   f"{describe_error(exc)}"))

    async def fence(self: EmergencyStopSystem, activation: int) -> None:
        """The controller's fence hook: raise :class:`FencedOut` unless this runner still holds
        the lease (at the epoch it acquired) and ``activation`` is still the latched one.

        Asked immediately before every book-changing venue call. Checks this process's own view
        first (the lease as last renewed, on the monotonic clock: a runner stopped past its lease
        does not act on the strength of an old renewal), then the store (``check_fence``), which
        is the authority. A store that cannot answer the fence (unreachable) does not stop a
        flatten: reduce-only closes cannot add risk, and the lease view above still applies.
        """
        if self.lease_ttl_sec is None:
            return
        for _ in range(3):
            if await self._fence_once(activation):
                return
            # The answer came back after our lease could have lapsed (this process was frozen or
            # stalled while asking): it may be stale, so ask again (found by the split-brain drill).
        raise FencedOut(f"runner {self.holder}: every fence answer came back stale (process stalled)")

    async def _fence_once(self: EmergencyStopSystem, activation: int) -> bool:
        """One fence check; True when its answer is still fresh (renewed within the ttl)."""
        assert self.lease_ttl_sec is not None
        if (self.lease_holder != self.holder or self.lease_epoch is None
                or self.monotonic() - self._lease_renewed_at >= self.lease_ttl_sec):
            # Not held as far as we know (not taken yet, or our last renewal is older than the
            # ttl: we may have been stopped past it): ask the store now. It grants the lease only
            # if nobody took it over; otherwise it names the new holder and we send nothing.
            await self._take_lease()
            if self.lease_holder != self.holder or self.lease_epoch is None:
                self.controller.acting = False
                raise FencedOut(
                    f"runner {self.holder} does not hold the lease "
                    f"(held by {self.lease_holder or 'unknown'})"
                )
        check = getattr(self.controller.store, "check_fence", None)
        if not callable(check):
            return True
        try:
            await check(self.holder, self.lease_epoch, activation)
        except FencedOut as exc:
            self.controller.acting = False
            self.lease_holder = None
            self.lease_epoch = None
            why = describe_error(exc)
            log.critical("fenced out by the store: %s", why)
            self.bus.publish(WarningEvent("lease", f"fenced out: {why}"))
            raise
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("fence check failed (%s); flattening goes on", describe_error(exc))
        return self.monotonic() - self._lease_renewed_at < self.lease_ttl_sec
