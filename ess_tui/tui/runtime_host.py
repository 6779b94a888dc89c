"""The host that runs the real runtime on its own thread, for the control room.

:class:`RuntimeHost` runs :class:`ess_tui.runtime.assembly.Runtime` on a dedicated thread with its
own asyncio loop (started as a Textual thread worker), so nothing the UI does — a modal open, a
slow redraw — delays an evaluation or a latch. The engine talks back by posting messages
(thread-safe); the UI calls the engine by submitting coroutines to the engine loop and awaiting
the result, so "the latch is durable" is true when ``await host.manual_stop(...)`` returns.

Evaluations are coalesced: the host keeps only the newest set and a version number; the UI picks
them up at most ``tui.refresh_hz`` times a second.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ess_tui.engine.aio import maybe_await
from ess_tui.engine.state import (
    EmergencyState,
    Evaluation,
    EvaluationsEvent,
    FlattenDoneEvent,
    FlattenProgressEvent,
    LatchedEvent,
    ResetEvent,
    WarningEvent,
    utcnow,
)
from ess_tui.engine.store import AuditRecord, AuditVerification
from ess_tui.runtime.drills import DRILLS
from ess_tui.runtime.panel import VenueSnapshot
from ess_tui.tui import messages
from ess_tui.tui.engine_host import Clock, EngineHost, EngineView

if TYPE_CHECKING:
    from textual.app import App

    from ess_tui.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Latest:
    evaluations: tuple[Evaluation, ...] = ()
    version: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


#: Interpreter switch interval while the engine thread runs beside the UI thread.
ENGINE_SWITCH_INTERVAL_SEC = 0.001


class RuntimeHost(EngineHost):
    """Runs :class:`ess_tui.runtime.assembly.Runtime` on a dedicated thread with its own event loop."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        build: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or utcnow
        self._build = build
        self.runtime: Any = None
        self._app: App[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._quit = threading.Event()
        self._started = threading.Event()
        self._failed: str | None = None
        self._latest = _Latest()
        self._seen_seq: int | None = None
        self.venue_name = str(getattr(settings.venue, "kind", "venue"))
        self.is_paper = self.venue_name == "paper"
        self.two_person = bool(settings.reset.two_person)

    # --- lifecycle -------------------------------------------------------------------------------

    def attach(self, app: App[Any]) -> None:
        self._app = app
        # Two busy threads share one interpreter lock here: the UI's and the engine's. At the
        # default 5 ms switch interval a redraw can hold the lock for 5 ms at a time against a
        # latch in progress (a STOP's p99 was ~300 ms); 1 ms bounds that wait.
        sys.setswitchinterval(min(sys.getswitchinterval(), ENGINE_SWITCH_INTERVAL_SEC))
        app.run_worker(self.run_engine, thread=True, group="engine", name="ess-engine",
                       exit_on_error=False)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Block until the engine is built (or failed). For tests and benchmarks."""
        return self._ready.wait(timeout)

    def _post(self, message: Any) -> None:
        app = self._app
        if app is not None:
            try:
                app.post_message(message)
            except Exception:  # noqa: BLE001 - the app is closing
                pass

    def run_engine(self) -> None:
        """Thread body: build the runtime, run it until :meth:`shutdown`, then stop it."""
        self._started.set()
        if self._quit.is_set():
            self._done.set()
            return
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._done.set()
                self._ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            if self._build is not None:
                runtime = await self._build()
            else:
                from ess_tui.runtime.assembly import Runtime

                runtime = await Runtime.build(self.settings, clock=self.clock)
            self.runtime = runtime
            if self._quit.is_set():  # the app closed while the engine was being built
                await runtime.store.close()
                return
            runtime.bus.subscribe(self._on_event)
            await runtime.start()
        except Exception as exc:  # noqa: BLE001 - shown on the banner, never a silent failure
            log.exception("the engine could not start")
            self._failed = f"{type(exc).__name__}: {exc}"
            self._ready.set()
            self._post(messages.EngineFailed(self._failed))
            return
        venue = getattr(runtime, "venue", None)
        self.venue_name = str(getattr(venue, "name", None) or self.venue_name)
        self.is_paper = getattr(runtime, "paper", None) is not None
        manual = getattr(runtime, "manual", None)
        self.manual_name = getattr(manual, "name", None)
        evaluations = tuple(getattr(getattr(runtime, "system", None), "last_evaluations", ()) or ())
        if evaluations:
            self._store_evaluations(evaluations)
        self._ready.set()
        self._post(messages.EngineReady(self.venue_name, self.is_paper))
        try:
            if not self._quit.is_set():
                await self._stop.wait()
        finally:
            try:
                await asyncio.wait_for(runtime.stop(), 10)
            except Exception:  # noqa: BLE001
                log.exception("the engine did not stop cleanly")

    async def shutdown(self) -> None:
        self._quit.set()
        if self._app is None:  # never attached: no engine thread to wait for
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass
        def wait() -> None:
            # A worker cancelled before its thread started never runs: don't wait for it.
            if self._started.wait(1.0):
                self._done.wait(15)

        await asyncio.get_running_loop().run_in_executor(None, wait)

    # --- events from the engine thread -----------------------------------------------------------

    def _store_evaluations(self, evaluations: tuple[Evaluation, ...]) -> None:
        with self._latest.lock:
            self._latest.evaluations = evaluations
            self._latest.version += 1

    def _on_event(self, event: Any) -> None:
        """Runs on the engine thread: never blocks, only stores or posts."""
        if isinstance(event, EvaluationsEvent):
            self._store_evaluations(tuple(event.evaluations))
        elif isinstance(event, LatchedEvent):
            self._post(messages.Latched(event.state, event.new))
        elif isinstance(event, ResetEvent):
            self._post(messages.Reset(event.state, event.reset_by, event.note))
        elif isinstance(event, FlattenProgressEvent):
            self._post(messages.FlattenProgress(event))
        elif isinstance(event, FlattenDoneEvent):
            self._post(messages.FlattenDone(event.report, event.timestamp))
        elif isinstance(event, WarningEvent):
            self._post(messages.EngineWarning(event))

    # --- reads -----------------------------------------------------------------------------------

    def view(self) -> EngineView:
        runtime = self.runtime
        with self._latest.lock:
            evaluations, version = self._latest.evaluations, self._latest.version
        if runtime is None:
            if self._failed is not None:
                return EngineView(state=EmergencyState(), unavailable=self._failed,
                                  evaluations=evaluations, version=version)
            return EngineView(state=EmergencyState(), starting=True)
        controller = runtime.controller
        if getattr(runtime.system, "cycles", 1) == 0:
            # Built, but the runner has not read the latch yet: unknown, so shown as latched.
            return EngineView(state=EmergencyState(), starting=True, evaluations=evaluations,
                              version=version)
        return EngineView(
            state=controller.state,
            unavailable=controller.unavailable,
            not_durable=getattr(controller, "not_durable", None),
            flattening=bool(controller.flattening),
            last_report=controller.last_report,
            evaluations=evaluations,
            version=version,
            watched=self._watched(runtime),
        )

    def acting_here(self) -> bool:
        runtime = self.runtime
        return bool(runtime is not None and getattr(runtime.controller, "acting", False))

    @staticmethod
    def _watched(runtime: Any) -> bool | None:
        """False when runners use a lease and nobody holds it: no acting runner is watching."""
        system = runtime.system
        if getattr(system, "lease_ttl_sec", None) is None:
            return None
        return getattr(system, "lease_holder", None) is not None

    # --- calls into the engine loop --------------------------------------------------------------

    async def _call(self, factory: Callable[[], Awaitable[T]]) -> T:
        """Run ``factory()`` on the engine loop and await its result from the UI loop."""
        loop = self._loop
        if loop is None or self.runtime is None or loop.is_closed():
            raise RuntimeError(self._failed or "the engine is not running yet")

        async def run() -> T:
            return await factory()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), loop))

    async def manual_stop(self, reason: str, actor: str) -> EmergencyState:
        return await self._call(lambda: self.runtime.manual_stop(reason, actor))

    async def reset(
        self, reset_by: str, note: str | None, *, approver: str | None = None,
        override: str | None = None, expected_activation: int | None = None,
        venue_flat: bool | None = None, details: dict[str, Any] | None = None,
    ) -> EmergencyState:
        return await self._call(lambda: self.runtime.reset(
            reset_by, note, approver=approver, override=override,
            expected_activation=expected_activation, venue_flat=venue_flat, details=details,
            via="tui",
        ))

    async def rebaseline(self, kind: str, actor: str, reason: str) -> dict[str, Any]:
        return dict(await self._call(lambda: self.runtime.rebaseline(kind, actor, reason)))

    async def audit(self, action: str, actor: str, reason: str | None = None,
                    details: dict[str, Any] | None = None) -> None:
        await self._call(lambda: self.runtime.audit(action, actor, reason=reason, details=details))

    async def read_audit(self, limit: int = 500) -> list[AuditRecord]:
        return await self._call(lambda: self.runtime.store.read_audit(limit, newest_first=True))

    async def verify_audit(self) -> AuditVerification:
        return await self._call(lambda: self.runtime.store.verify_audit())

    async def venue_view(self, fresh: bool = False) -> VenueSnapshot:
        async def read() -> VenueSnapshot:
            try:
                if fresh:
                    await self.runtime.refresh_book()
                data = await maybe_await(self.runtime.venue_snapshot())
            except Exception as exc:  # noqa: BLE001 - shown in the panel
                return VenueSnapshot(venue=self.venue_name, error=f"{type(exc).__name__}: {exc}",
                                     taken_at=self.clock())
            return data if isinstance(data, VenueSnapshot) else VenueSnapshot(
                venue=self.venue_name, error=f"the runtime answered {type(data).__name__}",
                taken_at=self.clock())

        return await self._call(read)

    async def refresh(self) -> None:
        """Re-read the latch only when the store says it changed (its ``change_seq``), or while
        the state is unavailable, so polling twice a second costs one small read."""

        async def poll() -> None:
            runtime = self.runtime
            controller = runtime.controller
            if getattr(runtime.system, "cycles", 1) == 0:
                return  # the runner's first cycle reads the latch (and takes the lease) first
            change_seq = getattr(runtime.store, "change_seq", None)
            if change_seq is None or controller.unavailable is not None:
                await controller.refresh()
                return
            try:
                seq = await change_seq()
            except Exception:  # noqa: BLE001 - let the controller record why it cannot read
                await controller.refresh()
                return
            if seq != self._seen_seq:
                await controller.refresh()
                self._seen_seq = seq

        await self._call(poll)

    async def drill(self, name: str, actor: str | None = None) -> str:
        if name not in DRILLS:
            raise ValueError(f"unknown drill {name!r}; known: {', '.join(DRILLS)}")
        return str(await self._call(lambda: self.runtime.drill(name, actor)))
