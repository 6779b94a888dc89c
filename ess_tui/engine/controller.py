"""EmergencyStopController: latch durably, flatten the venue, reset only by an audited act.

Order of an activation, which nothing reorders:

1. the latch, the ``emergency_stop`` policy key and an audit row, in one durable transaction;
2. ``emergency.latched`` on ess-tui's internal bus;
3. flatten (cancel → close reduce-only → verify, retried with backoff while latched);
4. the seed's ``EmergencyStopEvent`` on the user's event bus, with the counts; an audit row.

If the store cannot be written the ESS still latches in memory and still flattens (closing risk is
never the wrong move in an emergency), says so loudly, and keeps trying to make the latch durable.
Nothing in this module un-latches except :meth:`EmergencyStopController.reset`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ess_tui.engine.aio import maybe_await
from ess_tui.engine.bus import EventBus
from ess_tui.engine.flatten import Flattener, RetryPolicy, describe_error
from ess_tui.engine.state import (
    EmergencyResetEvent,
    EmergencyState,
    EmergencyStopEvent,
    ESSStatus,
    FlattenDoneEvent,
    FlattenReport,
    LatchedEvent,
    ResetEvent,
    WarningEvent,
    clean_text,
    os_user,
    utcnow,
)
from ess_tui.engine.store import NotLatchedError, StaleResetError, StateStore, StoreError

log = logging.getLogger(__name__)


def _as_store(policy_store: Any, store: StateStore | None) -> StateStore:
    if store is not None:
        return store
    from ess_tui.engine.seed_store import as_state_store

    return as_state_store(policy_store)


class EmergencyStopController:
    """The seed's controller: ``activate(reason)``, ``reset(reset_by)``, ``is_active``, ``state``.

    ``policy_store`` may be ess-tui's SQLite store or any seed-shaped object with ``get``/``set``.
    ``exchange`` may be an ess-tui venue or any seed-shaped object with ``cancel_all_orders()`` and
    ``close_all_positions()``. ``event_bus`` receives exactly the seed's two events.
    """

    def __init__(
        self,
        policy_store: Any = None,
        exchange: Any = None,
        event_bus: Any = None,
        *,
        store: StateStore | None = None,
        bus: EventBus | None = None,
        clock: Callable[[], datetime] = utcnow,
        retry: RetryPolicy | None = None,
        actor: str = "ess",
        acting: bool = True,
        activate_wait_sec: float = 30.0,
    ) -> None:
        if policy_store is None and store is None:
            from ess_tui.engine.seed_store import MemoryPolicyStore

            policy_store = MemoryPolicyStore()
        self.policy_store = policy_store
        self.store: StateStore = _as_store(policy_store, store)
        self.exchange = exchange
        self.event_bus = event_bus
        self.bus = bus or EventBus()
        self.clock = clock
        self.retry = retry or RetryPolicy()
        self.actor = actor
        #: Only an acting controller talks to the venue; viewers latch through the store and the
        #: acting runner (the lease holder) flattens.
        self.acting = acting
        self.activate_wait_sec = activate_wait_sec
        self._state = EmergencyState()
        self._unavailable: str | None = None
        self._not_durable: str | None = None
        self._flatten_task: asyncio.Task[FlattenReport] | None = None
        self._latch_lock = asyncio.Lock()
        self.last_report: FlattenReport | None = None
        #: Activation whose flatten ended (verified flat, unverifiable, or fatal) in this process:
        #: ``refresh()`` does not start it again, so a latch found in the store is flattened once,
        #: not once per check interval.
        self._flatten_done_for: int | None = None
        #: Activation whose seed ``emergency.stop`` event was published: one per activation,
        #: however often flattening has to start again.
        self._stop_event_for: int | None = None
        self._reset_hooks: list[Callable[[], Any]] = []
        #: Goes up on every reset seen by this controller (its own, or another process's).
        self.resets_seen = 0
        #: Goes up on every latch or reset made by this controller (see :meth:`refresh`).
        self._generation = 0

    # --- what the seed reads -------------------------------------------------------------------

    @property
    def state(self) -> EmergencyState:
        """The latch as last known. When the store could not be read, it reads as latched."""
        if self._unavailable is not None and not self._state.active:
            return EmergencyState(
                status=ESSStatus.ACTIVE,
                reason=f"ESS state unavailable: {self._unavailable}",
                timestamp=self._state.timestamp,
                activation_count=self._state.activation_count,
            )
        return self._state

    @property
    def is_active(self) -> bool:
        return self.state.active

    @property
    def known_latched(self) -> bool:
        """Latched as far as this process knows for certain (store read, or latched here).

        Unlike :attr:`is_active`, an unreadable store does not count: a trigger that fires while
        the store is unreadable must still latch (in memory) and flatten.
        """
        return self._state.active

    @property
    def unavailable(self) -> str | None:
        """Why the stored state cannot be read right now, or None."""
        return self._unavailable

    @property
    def not_durable(self) -> str | None:
        """Set when the latch is held only in memory because the store refused the write."""
        return self._not_durable

    @property
    def flattening(self) -> bool:
        return self._flatten_task is not None and not self._flatten_task.done()

    def on_reset(self, hook: Callable[[], Any]) -> None:
        """Call ``hook()`` after every reset (the runner clears manual triggers this way)."""
        self._reset_hooks.append(hook)

    # --- activation ----------------------------------------------------------------------------

    async def latch(self, reason: str, *, source: str | None = None,
                    details: dict[str, Any] | None = None,
                    actor: str | None = None) -> EmergencyState:
        """Make the latch durable and start flattening in the background. Returns once durable.

        ``actor`` names who latched in the audit row (an operator); default: the controller's.

        This is the fast path the runner and the control room use; :meth:`activate` also waits
        for flattening.
        """
        reason = clean_text(reason or "Emergency stop") or "Emergency stop"
        at = self.clock()
        info = dict(details or {})
        if source:
            info.setdefault("source", clean_text(source, limit=120))
        async with self._latch_lock:
            try:
                result = await self.store.latch(
                    reason, at=at, actor=clean_text(actor, limit=120) if actor else self.actor,
                    details=info,
                )
            except StoreError as exc:
                return await self._latch_in_memory(reason, at, exc)
            except Exception as exc:  # noqa: BLE001 - an unknown store failure is still a failure
                return await self._latch_in_memory(reason, at, exc)
            self._generation += 1
            self._state = result.state
            self._unavailable = None
            self._not_durable = None
        self.bus.publish(LatchedEvent(result.state, result.new))
        if result.new:
            log.critical("ESS LATCHED: %s (activation #%d)", result.state.reason,
                         result.state.activation_count)
        else:
            log.warning("ESS already latched (%s); extra trigger: %s", result.state.reason, reason)
        self._ensure_flattening()
        return result.state

    async def _latch_in_memory(self, reason: str, at: datetime, exc: BaseException) -> EmergencyState:
        why = describe_error(exc)
        log.critical("ESS latch could NOT be written to the store (%s); latched in memory only", why)
        self._not_durable = why
        self._generation += 1
        if not self._state.active:
            self._state = EmergencyState(
                status=ESSStatus.ACTIVE, reason=reason, timestamp=at,
                activation_count=self._state.activation_count + 1,
            )
        self.bus.publish(WarningEvent("store", f"latch not durable: {why}"))
        self.bus.publish(LatchedEvent(self._state, True))
        self._ensure_flattening()
        return self._state

    async def activate(self, reason: str, *, source: str | None = None,
                       details: dict[str, Any] | None = None) -> EmergencyState:
        """The seed's activation: latch durably, then flatten. Waits for flattening to finish (flat
        or fatal) for up to ``activate_wait_sec``; after that flattening goes on in the background.
        """
        state = await self.latch(reason, source=source, details=details)
        task = self._flatten_task
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), self.activate_wait_sec)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
        return self.state if self.state.active else state

    def _ensure_flattening(self) -> None:
        if self.exchange is None or self.flattening:
            return
        if not self.acting and self._not_durable is None:
            # The lease holder flattens a durable latch. A latch held only in memory (the store
            # refused it) is flattened here too: no one else knows of it, and reduce-only closes
            # cannot add risk even if another runner is flattening as well.
            return
        self._flatten_task = asyncio.ensure_future(self._flatten())

    async def _flatten(self) -> FlattenReport:
        reason = self._state.reason or "Emergency stop"
        activation = self._state.activation_count
        flattener = Flattener(
            self.exchange, bus=self.bus, retry=self.retry, still_latched=lambda: self._state.active
        )
        try:
            report = await flattener.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - flatten must report, never vanish
            log.exception("flatten crashed")
            report = FlattenReport(flat=False, last_error=describe_error(exc))
        self.last_report = report
        if report.flat is not False or report.fatal:
            self._flatten_done_for = activation
        self.bus.publish(FlattenDoneEvent(report))
        details = {
            "orders_canceled": report.orders_canceled,
            "positions_closed": report.positions_closed,
            "flat": report.flat,
            "attempts": report.attempts,
            "remaining_positions": list(report.remaining_positions),
            "remaining_orders": list(report.remaining_orders),
            "last_error": report.last_error,
        }
        action = "flatten_failed" if report.fatal or report.flat is False else "flattened"
        try:
            await self.store.audit(action, actor=self.actor, reason=report.last_error, details=details)
        except Exception as exc:  # noqa: BLE001
            self.bus.publish(WarningEvent("store", f"could not audit flatten: {describe_error(exc)}"))
        if report.fatal:
            self.bus.publish(WarningEvent("venue", f"cannot flatten: {report.last_error}"))
            log.critical("cannot flatten: %s", report.last_error)
        if self._stop_event_for == activation:
            return report
        self._stop_event_for = activation
        await self._publish_seed(
            EmergencyStopEvent(
                reason=reason,
                timestamp=self._state.timestamp or self.clock(),
                positions_closed=report.positions_closed,
                orders_canceled=report.orders_canceled,
            )
        )
        return report

    async def _publish_seed(self, event: Any) -> None:
        if self.event_bus is None:
            return
        try:
            await maybe_await(self.event_bus.publish(event))
        except Exception:  # noqa: BLE001 - a user's broken bus must not stop the ESS
            log.exception("event_bus.publish failed for %s", event.type)

    async def flatten_again(self, why: str) -> bool:
        """While latched, start flattening again (e.g. a position appeared after the venue was
        verified flat). Audited. Returns whether a flatten was started."""
        if not self._state.active or self.flattening or self.exchange is None:
            return False
        if not self.acting and self._not_durable is None:
            return False
        try:
            await self.store.audit("reflatten", actor=self.actor, reason=clean_text(why))
        except Exception as exc:  # noqa: BLE001 - flattening matters more than its audit row
            self.bus.publish(WarningEvent("store", f"could not audit reflatten: {describe_error(exc)}"))
        log.warning("flattening again while latched: %s", why)
        self._flatten_done_for = None
        self._ensure_flattening()
        return True

    async def wait_flattened(self, timeout: float | None = None) -> FlattenReport | None:
        """Wait for the current flatten to end; returns its report (None if none ran)."""
        task = self._flatten_task
        if task is None:
            return self.last_report
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except asyncio.CancelledError:
            return self.last_report

    # --- reset ---------------------------------------------------------------------------------

    async def reset(self, reset_by: str | None = None, note: str | None = None, *,
                    details: dict[str, Any] | None = None,
                    expected_activation: int | None = None) -> EmergencyState:
        """Un-latch, audited. Raises :class:`NotLatchedError` (audited) when not latched, and
        :class:`StaleResetError` (audited) when ``expected_activation`` — the activation the
        operator reviewed — is not the one latched now."""
        who = clean_text(reset_by, limit=120) if reset_by else os_user()
        at = self.clock()
        unlatch_kwargs: dict[str, Any] = {}
        if expected_activation is not None:
            unlatch_kwargs["expected_activation"] = expected_activation
        state = await self.store.unlatch(
            who, at=at, note=clean_text(note) if note else None, details=details, **unlatch_kwargs
        )
        self._generation += 1
        self._state = state
        self._unavailable = None
        self._not_durable = None
        task, self._flatten_task = self._flatten_task, None
        if task is not None and not task.done():
            task.cancel()
        self.resets_seen += 1
        for hook in self._reset_hooks:
            try:
                await maybe_await(hook())
            except Exception:  # noqa: BLE001
                log.exception("reset hook failed")
        log.warning("ESS reset by %s", who)
        self.bus.publish(ResetEvent(state, who, note))
        await self._publish_seed(EmergencyResetEvent(timestamp=at, reset_by=who))
        return state

    # --- keeping in step with the store (other processes, restarts) ---------------------------

    async def refresh(self) -> EmergencyState:
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
        if self._not_durable is not None and self._state.active and not stored.active:
            # Our latch never reached the store: keep trying; never let the store un-latch us.
            try:
                result = await self.store.latch(
                    self._state.reason or "Emergency stop", at=self._state.timestamp or self.clock(),
                    actor=self.actor, details={"recovered_from": self._not_durable},
                )
                stored = result.state
                self._not_durable = None
            except Exception as exc:  # noqa: BLE001
                self._not_durable = describe_error(exc)
                return self.state
        if was_active and not stored.active and not self._reset_since(stored):
            # The store says armed but records no reset of the latch we know of: a lost key,
            # an evicted cache, a hand-edited value. Only an audited reset un-latches.
            why = (
                f"the store reads armed but records no reset since activation "
                f"#{self._state.activation_count}; staying latched"
            )
            if self._unavailable != why:
                log.critical("ESS state unavailable: %s", why)
                self.bus.publish(WarningEvent("store", f"state unavailable: {why}"))
            self._unavailable = why
            return self.state
        self._state = stored
        if stored.active and not was_active:
            log.critical("ESS LATCHED (read from the store): %s (activation #%d)", stored.reason,
                         stored.activation_count)
            self.bus.publish(LatchedEvent(stored, False))
        if stored.active and self._flatten_done_for != stored.activation_count:
            self._ensure_flattening()
        elif was_active:
            task, self._flatten_task = self._flatten_task, None
            if task is not None and not task.done():
                task.cancel()
            self.resets_seen += 1
            for hook in self._reset_hooks:
                try:
                    await maybe_await(hook())
                except Exception:  # noqa: BLE001
                    log.exception("reset hook failed")
            self.bus.publish(ResetEvent(stored, stored.last_reset_by or "unknown"))
        return self.state

    def _reset_since(self, stored: EmergencyState) -> bool:
        """Does ``stored`` record a reset of the activation we know is latched?"""
        known = self._state
        if stored.activation_count < known.activation_count or stored.last_reset_at is None:
            return False
        return known.timestamp is None or stored.last_reset_at >= known.timestamp

    async def restore(self) -> EmergencyState:
        """After a restart: load the latch and, if latched, resume flattening."""
        return await self.refresh()

    async def close(self) -> None:
        """Stop background flattening (the latch stays as stored)."""
        task, self._flatten_task = self._flatten_task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass


__all__ = ["EmergencyStopController", "NotLatchedError", "StaleResetError", "os_user"]
