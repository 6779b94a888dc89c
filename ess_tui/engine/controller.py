"""EmergencyStopController: latch durably, flatten the venue, reset only by an audited act.

Order of an activation, which nothing reorders:

1. the latch, the ``emergency_stop`` policy key and an audit row, in one durable transaction;
2. ``emergency.latched`` on ess-tui's internal bus;
3. flatten (cancel → close reduce-only → verify, retried with backoff while latched);
4. the seed's ``EmergencyStopEvent`` on the user's event bus, with the counts; an audit row.

A store that cannot be written still gets a latch in memory and a flatten, loudly. Only
:meth:`EmergencyStopController.reset` un-latches, enforcing the reset policy (``resetting.py``);
``store_sync.py`` follows the store, ``keep_flat.py`` re-flattens a book that drifts open while
latched, and every venue call is fenced (``fence``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from ess_tui.engine.aio import maybe_await
from ess_tui.engine.bus import EventBus
from ess_tui.engine.flatten import Flattener, RetryPolicy, describe_error
from ess_tui.engine.keep_flat import KeepFlat
from ess_tui.engine.reset_policy import ResetPolicy, ResetRefused
from ess_tui.engine.resetting import ResetMixin
from ess_tui.engine.state import (
    EmergencyState,
    EmergencyStopEvent,
    ESSStatus,
    FlattenDoneEvent,
    FlattenReport,
    LatchedEvent,
    WarningEvent,
)
from ess_tui.engine.store import (
    FencedOut,
    NotLatchedError,
    StaleResetError,
    StateStore,
    StoreError,
)
from ess_tui.engine.store_sync import SyncMixin
from ess_tui.engine.text import clean_text, os_user, utcnow

log = logging.getLogger(__name__)


def _as_store(policy_store: Any, store: StateStore | None) -> StateStore:
    if store is not None:
        return store
    from ess_tui.engine.seed_store import as_state_store

    return as_state_store(policy_store)


class EmergencyStopController(ResetMixin, SyncMixin):
    """The seed's controller: ``activate(reason)``, ``reset(reset_by)``, ``is_active``, ``state``.

    ``policy_store`` may be ess-tui's SQLite store or any seed-shaped object with ``get``/``set``.
    ``exchange`` may be an ess-tui venue or any seed-shaped object with ``cancel_all_orders()`` and
    ``close_all_positions()``. ``event_bus`` receives exactly the seed's two events.

    ``reset_policy`` (a :class:`ResetPolicy` or a mapping of its fields) is what :meth:`reset`
    enforces. Without one the controller uses :meth:`ResetPolicy.seed_default`: anyone may reset,
    and a venue *known* not flat needs an override reason, while a venue that cannot say (the seed's
    exchange has only the two bulk calls) does not — so the seed's usage keeps working and a book
    known to be open is never un-latched by accident.
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
        reset_policy: ResetPolicy | Mapping[str, Any] | None = None,
        keep_flat_interval_sec: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
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
        self.reset_policy = (
            ResetPolicy.seed_default() if reset_policy is None
            else ResetPolicy.from_mapping(reset_policy)
        )
        #: The runner's fence (``await hook(activation)`` raises FencedOut when this process may
        #: no longer act); None: only the in-memory checks of :meth:`fence` apply.
        self.fence_hook: Callable[[int], Awaitable[None]] | None = None
        self.keep_flat = KeepFlat(self, interval_sec=keep_flat_interval_sec, monotonic=monotonic)
        self._flattener: Flattener | None = None
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
        # Operator and evaluator text enters the engine here, and is made safe here, once.
        reason = clean_text(reason or "Emergency stop") or "Emergency stop"
        who = (clean_text(actor, limit=120) if actor else "") or self.actor
        info = dict(details or {})
        if source:
            info.setdefault("source", clean_text(source, limit=120))
        return await self._latch_clean(reason, who, info)

    async def _latch_clean(self, reason: str, who: str, info: dict[str, Any]) -> EmergencyState:
        at = self.clock()
        async with self._latch_lock:
            try:
                result = await self.store.latch(reason, at=at, actor=who, details=info)
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
        self._flattener = None  # set by the task when it starts; counts are this flatten's
        self._flatten_task = asyncio.ensure_future(self._flatten())

    async def fence(self, activation: int) -> None:
        """Raise :class:`FencedOut` unless this process may still change the book for
        ``activation``: it is still the latched one (as known here), this controller still acts,
        and the runner's fence (the store's lease check, when a lease is held) agrees."""
        if not self._state.active or self._state.activation_count != activation:
            raise FencedOut(f"activation #{activation} is no longer the latched one")
        if self._not_durable is not None:
            return  # a latch only this process knows of (the store refused it): no one else acts
        if not self.acting:
            raise FencedOut("this process no longer holds the runner lease")
        if self.fence_hook is not None:  # (a latch the store refused returned above)
            await self.fence_hook(activation)

    async def _flatten(self) -> FlattenReport:
        reason = self._state.reason or "Emergency stop"
        activation = self._state.activation_count
        flattener = Flattener(
            self.exchange, bus=self.bus, retry=self.retry,
            still_latched=lambda: self._state.active, fence=lambda: self.fence(activation),
        )
        self._flattener = flattener
        try:
            report = await flattener.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - flatten must report, never vanish
            log.exception("flatten crashed")
            report = FlattenReport(flat=False, last_error=describe_error(exc))
        if not report.fenced and self._state.active and self._state.activation_count == activation:
            try:  # still ours to report? One frozen past its lease mid-verify must not write
                await self.fence(activation)  # a second flatten row (found by the split-brain drill)
            except FencedOut as exc:
                report = replace(report, fenced=True, last_error=describe_error(exc))
        self.last_report = report
        if report.fenced:
            # Another runner acts now (or the activation was reset): it flattens and reports.
            # This one sends nothing more, writes no flatten row and no seed event. Not marked
            # done: should this process hold the lease again, the next refresh resumes.
            why = f"flatten of activation #{activation} stopped: {report.last_error}"
            log.critical("fenced out: %s", why)
            self.bus.publish(WarningEvent("lease", f"fenced out: {why}"))
            return report
        try:  # the row and the seed event only while we hold the lease and it is still latched
            await self.fence(activation)
        except FencedOut as exc:
            why = f"flatten of activation #{activation} not recorded: {describe_error(exc)}"
            log.critical("fenced out: %s", why)
            self.bus.publish(WarningEvent("lease", f"fenced out: {why}"))
            return report
        if report.flat is not False or report.fatal:
            self._flatten_done_for = activation
        self.bus.publish(FlattenDoneEvent(report))
        details = {
            "activation_count": activation,
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
        verified flat). Audited ``reflatten``. Returns whether a flatten was started."""
        if not self._state.active or self.flattening or self.exchange is None:
            return False
        if not self.acting and self._not_durable is None:
            return False
        why = clean_text(why)
        try:
            await self.store.audit("reflatten", actor=self.actor, reason=why,
                                   details={"activation_count": self._state.activation_count})
        except Exception as exc:  # noqa: BLE001 - flattening matters more than its audit row
            self.bus.publish(WarningEvent("store", f"could not audit reflatten: {describe_error(exc)}"))
        log.warning("flattening again while latched: %s", why)
        self._flatten_done_for = None
        self._ensure_flattening()
        return True

    async def keep_flat_check(self, positions: Any = None, orders: Any = None) -> bool:
        """While latched: is the book open again? Then flatten again (see ``keep_flat.py``).

        With ``positions`` and ``orders`` (a book the caller has just read) nothing is fetched;
        without, the venue is read at most every ``keep_flat_interval_sec``."""
        return await self.keep_flat.check(positions, orders)

    async def wait_flattened(self, timeout: float | None = None) -> FlattenReport | None:
        """Wait for the current flatten to end; returns its report (None if none ran)."""
        task = self._flatten_task
        if task is None:
            return self.last_report
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        except asyncio.CancelledError:
            return self.last_report

    async def close(self) -> None:
        """Stop background flattening (the latch stays as stored)."""
        task, self._flatten_task = self._flatten_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


__all__ = ["EmergencyStopController", "NotLatchedError", "ResetRefused", "StaleResetError", "os_user"]
