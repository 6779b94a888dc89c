"""EmergencyStopSystem: the evaluator loop.

Each cycle evaluates every evaluator concurrently, each under a timeout, and publishes the
evaluations. If the ESS is armed, the first triggered evaluator in list order latches it. An evaluator
that raises or times out is an ERROR, never "all clear", and ``fail_closed_after`` consecutive faults
latch the ESS with the fault as the reason. While latched the loop keeps evaluating (the gauges need
it) but never re-activates or un-latches.

Evaluators that can signal a change (a manual trigger, a feed seeing garbage) wake the loop at once
through ``bind_wake``; otherwise it runs every ``check_interval_sec`` (down to 0.1 s).

With a lease (``lease_ttl_sec``), only the holder of the store's runner lease acts on the venue;
others keep evaluating and wait, taking over when the holder's lease expires. The holder's id is
unique per process even across PID namespaces (host, pid and a random part), renewal runs on the
monotonic clock, and every book-changing venue call is fenced: immediately before it the runner asks
the store (``check_fence``) whether it still holds the lease at its epoch and the activation is
still latched; if not, nothing is sent.

While latched, each cycle also asks the controller to keep the book flat (``keep_flat_check``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import numbers
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ess_tui.engine.bus import EventBus
from ess_tui.engine.controller import EmergencyStopController
from ess_tui.engine.evaluators.base import add_unbound_wake, evaluate_any
from ess_tui.engine.evaluators.manual import ManualTriggerEmergencyEvaluator
from ess_tui.engine.flatten import describe_error
from ess_tui.engine.lease import LeaseMixin
from ess_tui.engine.state import Evaluation, EvaluationsEvent, WarningEvent
from ess_tui.engine.text import utcnow

log = logging.getLogger(__name__)

MIN_INTERVAL_SEC = 0.1


def default_holder() -> str:
    """A runner id unique per process: two runners in separate PID namespaces (containers) on one
    host may share a hostname and a pid, never the random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def evaluation_fault(evaluation: Evaluation) -> str | None:
    """Why an answered evaluation is still a fault (never "all clear"), or None.

    An error it carries; ``triggered`` that is not a bool; a proximity that is not a finite number
    (None means unknown, and is fine)."""
    if evaluation.error is not None:
        return str(evaluation.error) or "the evaluation carries an error"
    if not isinstance(evaluation.triggered, bool):
        return f"triggered={evaluation.triggered!r:.40} is not a bool"
    proximity = evaluation.proximity
    if proximity is not None and (
        isinstance(proximity, bool) or not isinstance(proximity, numbers.Real)
        or not math.isfinite(float(proximity))
    ):
        return f"proximity {proximity!r:.40} is not a finite number"
    return None


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Consume a cancelled evaluation's outcome so asyncio does not warn about it."""
    if not task.cancelled():
        task.exception()


def evaluator_name(evaluator: Any) -> str:
    try:
        return str(evaluator.name)
    except Exception:  # noqa: BLE001
        return type(evaluator).__name__


class EmergencyStopSystem(LeaseMixin):
    """The seed's runner: ``start()`` → task, ``run_forever()``, ``stop()``, ``_running``."""

    def __init__(
        self,
        evaluators: Sequence[Any],
        controller: EmergencyStopController,
        policy_store: Any = None,
        check_interval_sec: float = 5.0,
        *,
        eval_timeout_sec: float | None = None,
        fail_closed_after: int = 3,
        bus: EventBus | None = None,
        clock: Callable[[], datetime] = utcnow,
        lease_ttl_sec: float | None = None,
        holder: str | None = None,
    ) -> None:
        if check_interval_sec < MIN_INTERVAL_SEC:
            raise ValueError(
                f"check_interval_sec={check_interval_sec} is below the {MIN_INTERVAL_SEC}s minimum"
            )
        if fail_closed_after < 1:
            raise ValueError("fail_closed_after must be at least 1")
        self.evaluators = evaluators  # the caller's list: evaluators appended later are seen
        self.controller = controller
        self.policy_store = policy_store
        self.check_interval_sec = float(check_interval_sec)
        self.eval_timeout_sec = eval_timeout_sec if eval_timeout_sec is not None else max(
            1.0, min(5.0, self.check_interval_sec)
        )
        self.fail_closed_after = fail_closed_after
        self.bus = bus or controller.bus
        self.clock = clock
        self.lease_ttl_sec = lease_ttl_sec
        self.holder = holder or default_holder()
        self._running = False
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bound: set[int] = set()
        self._faults: dict[int, int] = {}
        self.last_evaluations: list[Evaluation] = []
        self.cycles = 0
        self.evaluations_total = 0
        self.lease_holder: str | None = None
        self._lease_renewed_at = 0.0
        #: The lease epoch this runner holds (the fencing token), when it holds the lease.
        self.lease_epoch: int | None = None
        self.monotonic: Callable[[], float] = time.monotonic
        #: Pauses of this process longer than the lease ttl the heartbeat saw (SIGSTOP, say).
        self.pauses = 0
        self._heartbeat: float | None = None
        controller.on_reset(self._on_reset)
        if lease_ttl_sec is not None:
            controller.fence_hook = self.fence

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Start the loop as a task on the running event loop and return it."""
        if self._task is None or self._task.done():
            self._running = True
            self._task = asyncio.ensure_future(self.run_forever())
        return self._task

    def stop(self) -> asyncio.Future[Any]:
        """Ask the loop to stop after its current cycle. Returns an awaitable for its end."""
        self._running = False
        self.wake()
        if self._task is None:
            fut: asyncio.Future[Any] = asyncio.get_event_loop().create_future()
            fut.set_result(None)
            return fut
        return asyncio.shield(self._task)

    def wake(self) -> None:
        """Run the next cycle now. Safe to call from any thread."""
        loop, event = self._loop, self._wake
        if loop is None or event is None:
            return
        try:
            same_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            event.set()
        else:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop closed
                pass

    async def run_forever(self) -> None:
        self._running = True
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._bind_wakes()
        # An evaluator appended to the list after start (as in the seed's example) and triggered
        # before it was bound still wakes us at once.
        remove_unbound = add_unbound_wake(self.wake)
        lease_task: asyncio.Task[None] | None = None
        try:
            await self._take_lease()
            if self.lease_ttl_sec is not None:
                # Renewed on its own clock, so a slow cycle can never let the lease lapse.
                lease_task = asyncio.ensure_future(self._keep_lease())
            await self._guarded(self.controller.restore(), "restoring the latch")
            while self._running:
                started = time.monotonic()
                await self._guarded(self.run_cycle(), "an evaluation cycle")
                if not self._running:
                    break
                wait = max(0.0, self.check_interval_sec - (time.monotonic() - started))
                if not self._wake.is_set():
                    try:
                        await asyncio.wait_for(self._wake.wait(), wait)
                    except asyncio.TimeoutError:
                        pass
                self._wake.clear()
        finally:
            remove_unbound()
            if lease_task is not None:
                lease_task.cancel()
                await asyncio.gather(lease_task, return_exceptions=True)
            self._running = False
            if self.lease_ttl_sec is not None and self.lease_holder == self.holder:
                try:
                    await self.controller.store.release_lease(self.holder)
                except Exception:  # noqa: BLE001
                    log.warning("could not release the runner lease", exc_info=True)

    async def _guarded(self, step: Any, what: str) -> None:
        """Run one step of the loop; a bug in it is reported, and the loop goes on."""
        try:
            await step
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being stopped
            self._loop_fault(what, "cancelled from inside")
        except Exception as exc:  # noqa: BLE001 - the loop must outlive any bug in a step
            self._loop_fault(what, describe_error(exc))

    def _loop_fault(self, what: str, why: str) -> None:
        log.critical("ESS loop fault in %s: %s", what, why)
        self.bus.publish(WarningEvent("runner", f"fault in {what}: {why}"))

    def _bind_wakes(self) -> None:
        for evaluator in list(self.evaluators):
            bind = getattr(evaluator, "bind_wake", None)
            if callable(bind) and id(evaluator) not in self._bound:
                bind(self.wake)
                self._bound.add(id(evaluator))

    # --- one cycle -----------------------------------------------------------------------------

    async def run_cycle(self) -> list[Evaluation]:
        """Evaluate everything once and act on the result. Returns the evaluations."""
        self._bind_wakes()
        await self._take_lease()
        pauses_before = self.pauses
        evaluators = list(self.evaluators)
        resets_before = self.controller.resets_seen
        evaluations = await self._evaluate_all(evaluators)
        if await self._was_paused(pauses_before):
            # Stopped past its lease while evaluating, and another runner acts now: these
            # readings span the pause (its own loop lag among them). Judge the next cycle's.
            self.wake()
            return evaluations
        self.last_evaluations = evaluations
        self.cycles += 1
        self.evaluations_total += len(evaluations)
        self.bus.publish(EvaluationsEvent(tuple(evaluations)))

        await self.controller.refresh()
        if not self.controller.known_latched and getattr(self.controller, "acting", False):
            await self._guarded(self._act_on_scopes(), "acting on scoped latches")
        if self.controller.known_latched:
            # Keep evaluating for display; never re-activate. Keep the book flat.
            await self._guarded(self.controller.keep_flat_check(), "keeping the book flat")
            return evaluations
        if self.controller.resets_seen != resets_before:
            # A reset landed while this cycle was evaluating: its readings (a manual trigger
            # cleared by the reset, say) predate it. Judge only readings taken after the reset.
            self.wake()
            return evaluations
        for evaluation in evaluations:
            if evaluation.triggered:
                await self.controller.latch(
                    evaluation.reason or f"{evaluation.name} triggered", source=evaluation.name,
                    details={"reading": evaluation.reading},
                )
                return evaluations
        if getattr(self, "level_triggers", None) and getattr(self.controller, "acting", False):
            from ess_tui.engine.levels import apply_levels

            await self._guarded(apply_levels(self.controller.store, self.level_triggers,
                                             actor=self.holder), "the reduce-only triggers")
        for index, evaluation in enumerate(evaluations):
            count = self._faults.get(index, 0)
            if evaluation.error is not None and count >= self.fail_closed_after:
                await self.controller.latch(
                    f"Evaluator {evaluation.name} failed {count} times in a row: {evaluation.error}",
                    source=evaluation.name,
                )
                return evaluations
        return evaluations

    async def _act_on_scopes(self) -> None:
        """Flatten what the store's venue- and strategy-scoped halts cover (issue 15)."""
        actor = getattr(self, "_scope_actor", None)
        if actor is None:
            from ess_tui.engine.scoped_flatten import ScopeActor

            venue = getattr(self.controller, "exchange", None)
            actor = self._scope_actor = ScopeActor(self.controller.store, venue,
                                                   actor=self.holder)
        await actor.act()

    async def _evaluate_all(self, evaluators: list[Any]) -> list[Evaluation]:
        """Every evaluator at once, under one shared timeout (one timer per cycle, not one per
        evaluator: it is what lets hundreds of evaluators run at 0.1 s)."""
        started = time.perf_counter()
        tasks = [asyncio.ensure_future(evaluate_any(e)) for e in evaluators]
        if not tasks:
            return []
        try:
            _, pending = await asyncio.wait(tasks, timeout=self.eval_timeout_sec)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        for task in pending:
            task.cancel()
            task.add_done_callback(_retrieve)
        elapsed_ms = (time.perf_counter() - started) * 1000
        return [
            self._judge(index, evaluator, task, task in pending, elapsed_ms)
            for index, (evaluator, task) in enumerate(zip(evaluators, tasks))
        ]

    def _judge(self, index: int, evaluator: Any, task: asyncio.Future[Evaluation],
               timed_out: bool, elapsed_ms: float) -> Evaluation:
        """One evaluator's outcome as an Evaluation; faults are counted, never "all clear"."""
        if timed_out:
            error: str | None = f"no answer within {self.eval_timeout_sec:g}s"
        elif task.cancelled():
            error = "the check was cancelled from inside"
        elif task.exception() is not None:
            error = describe_error(task.exception())  # type: ignore[arg-type]
        else:
            error = None
        evaluation: Evaluation | None = None
        if error is None:
            evaluation = task.result()
            error = evaluation_fault(evaluation)
            if error is None:
                self._faults.pop(index, None)
            elif evaluation.error is None or evaluation.triggered is not False:
                evaluation = Evaluation(name=evaluation.name, triggered=False,
                                        checked_at=evaluation.checked_at, error=error,
                                        reading=str(evaluation.reading or ""))
        if error is not None:
            name = evaluator_name(evaluator)
            if evaluation is None:
                evaluation = Evaluation(name=name, triggered=False, checked_at=self.clock(),
                                        error=error)
            count = self._faults.get(index, 0) + 1
            self._faults[index] = count
            if count == 1:
                log.error("evaluator %s failed: %s", name, error)
                self.bus.publish(WarningEvent(name, f"evaluator failed: {error}"))
        if evaluation.duration_ms == 0.0:
            object.__setattr__(evaluation, "duration_ms", elapsed_ms)
        return evaluation

    def _on_reset(self) -> None:
        """After a reset, manual triggers are cleared (they are sticky until then)."""
        self._faults.clear()
        for evaluator in list(self.evaluators):
            if isinstance(evaluator, ManualTriggerEmergencyEvaluator):
                evaluator.reset()
