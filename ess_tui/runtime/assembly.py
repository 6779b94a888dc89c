"""Runtime: the whole ESS assembled from Settings — store, venue, sources, evaluators, runner.

Both the headless runner and the control room build one of these. It is loop-agnostic: build and
start it on whichever asyncio loop should own the engine (the control room gives it a thread of its
own so no redraw can delay an evaluation).

Evaluator order is the priority order (the first triggered wins): manual, daily loss / drawdown,
system health, execution errors, data feed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ess_tui.config import ConfigError, Settings
from ess_tui.engine.bus import EventBus
from ess_tui.engine.controller import EmergencyStopController
from ess_tui.engine.evaluators import (
    DataFeedEmergencyEvaluator,
    DrawdownEmergencyEvaluator,
    ExecutionErrorEmergencyEvaluator,
    ManualTriggerEmergencyEvaluator,
    SystemHealthEmergencyEvaluator,
)
from ess_tui.engine.flatten import describe_error
from ess_tui.engine.state import EmergencyState, WarningEvent, clean_text, utcnow
from ess_tui.engine.system import EmergencyStopSystem
from ess_tui.market.feed import FeedMonitor
from ess_tui.market.health import HealthMonitor
from ess_tui.market.metrics import AccountMetrics
from ess_tui.runtime.book import BookPoller
from ess_tui.runtime.drills import run_drill
from ess_tui.runtime.panel import VenueSnapshot
from ess_tui.store.open import open_store
from ess_tui.store.sqlite import (
    SQLiteStore,  # the embedded default; PostgresStore has the same shape
)

log = logging.getLogger(__name__)

class Runtime:
    """Everything the ESS needs, wired together. Build with :meth:`build`, then :meth:`start`."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: SQLiteStore,
        venue: Any,
        feed: FeedMonitor,
        metrics: AccountMetrics,
        health: HealthMonitor,
        bus: EventBus,
        clock: Callable[[], datetime],
        actor: str,
        lease: bool,
        paper: Any = None,
        world_tasks: list[Callable[[], Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.venue = venue
        self.paper = paper
        self.feed = feed
        self.metrics = metrics
        self.health = health
        self.bus = bus
        self.clock = clock
        self.actor = actor
        self.manual = ManualTriggerEmergencyEvaluator(clock=clock, name="Manual")
        self.evaluators: list[Any] = [
            self.manual,
            DrawdownEmergencyEvaluator(
                metrics, settings.max_daily_loss, settings.max_equity_dd, clock=clock, name="Drawdown"
            ),
            SystemHealthEmergencyEvaluator(health, clock=clock, name="System health"),
            ExecutionErrorEmergencyEvaluator(
                metrics, settings.max_sl_hits, settings.sl_period_minutes,
                settings.max_order_failures, clock=clock, name="Execution",
            ),
            DataFeedEmergencyEvaluator(
                feed, settings.max_data_staleness, clock=clock, name="Data feed"
            ),
        ]
        from ess_tui.engine.reset_policy import ResetPolicy

        self.controller = EmergencyStopController(
            store=store, exchange=venue, bus=bus, clock=clock, actor="ess",
            reset_policy=ResetPolicy.from_mapping(settings.reset),
            # The venue panel's poll below hands the controller each book it reads; the
            # controller's own look is the fallback.
            keep_flat_interval_sec=2.0 if paper is not None else 10.0,
        )
        health.acting = lambda: self.controller.acting  # a standby's own lag is no stop
        self.system = EmergencyStopSystem(
            self.evaluators, self.controller, store, settings.check_interval,
            eval_timeout_sec=settings.eval_timeout, fail_closed_after=settings.fail_closed_after,
            bus=bus, clock=clock, lease_ttl_sec=settings.lease_ttl if lease else None,
        )
        from ess_tui.runtime.levels import level_triggers

        self.system.level_triggers = level_triggers(settings, metrics, clock)
        self._world_tasks = world_tasks or []
        self._tasks: list[asyncio.Task[Any]] = []
        # The paper venue is free to ask; a real one has a rate limit that flattening may need.
        self.book_poller = BookPoller(
            venue, name=self.venue_name, controller=self.controller, metrics=metrics, clock=clock,
            interval=1.0 if paper is not None else 5.0,
        )

    @property
    def last_venue_ok(self) -> datetime | None:
        """When the venue last answered a book read."""
        return self.book_poller.last_ok

    @property
    def book(self) -> VenueSnapshot:
        return self.book_poller.book

    @property
    def venue_name(self) -> str:
        return str(getattr(self.venue, "name", type(self.venue).__name__))

    # --- assembly ------------------------------------------------------------------------------

    @classmethod
    async def build(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], datetime] | None = None,
        actor: str | None = None,
        lease: bool = True,
        paper: Any = None,
    ) -> Runtime:
        """Assemble from settings. ``paper`` injects a prepared PaperExchange (tests, scenarios)."""
        from ess_tui.engine.controller import os_user

        clock = clock or utcnow
        # A SQLite path or a postgresql:// URL; a runner creates its store only where none exists.
        store = open_store(settings.db_target, create=True)
        bus = EventBus()
        world: list[Callable[[], Any]] = []
        holder: dict[str, Any] = {}

        if settings.venue.kind == "ccxt":
            from ess_tui.runtime.ccxt_world import build_ccxt_world

            venue, feed, metrics, world = await build_ccxt_world(settings, store=store, clock=clock)
        else:
            from ess_tui.venues.paper.exchange import PaperExchange

            if paper is None:
                paper = PaperExchange.demo(
                    seed=settings.paper.seed,
                    latency_ms=settings.paper.latency_ms,
                    rate_limit=settings.paper.rate_limit,
                    clock=clock,
                )
                paper.wire.call_log_path = settings.paper.call_log
            venue = paper
            feed = FeedMonitor(symbols=list(paper.symbols), clock=clock)
            paper.subscribe_ticks(feed.on_tick)
            for symbol in paper.symbols:
                feed.on_tick(paper.last_tick(symbol))
            metrics = AccountMetrics(lambda: paper.equity, paper, store, clock=clock)
            if settings.paper.drift:
                world.append(lambda: paper.run_market(settings.paper.tick_interval))

        health = HealthMonitor(
            store_write_ms=lambda: getattr(store, "write_latency_ms", None),
            last_venue_ok=lambda: holder["rt"].last_venue_ok,
            clock=clock,
        )
        runtime = cls(
            settings, store=store, venue=venue, feed=feed, metrics=metrics, health=health, bus=bus,
            clock=clock, actor=actor or os_user(), lease=lease, paper=paper, world_tasks=world,
        )
        holder["rt"] = runtime
        return runtime

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the world, the sources and the evaluator loop."""
        starter = getattr(self.venue, "start", None)
        if callable(starter):
            try:
                await starter()
            except ConfigError:
                raise  # a symbol the venue doesn't list, a key it refuses: stop before anything runs
            except Exception as exc:  # noqa: BLE001 - the venue may come back; the ESS must run
                self.bus.publish(WarningEvent("venue", f"venue start failed: {describe_error(exc)}"))
        self.health.start()
        try:
            await self.metrics.refresh()
        except Exception as exc:  # noqa: BLE001 - the drawdown gauge shows ERROR until it reads
            log.warning("account metrics not readable yet: %s", describe_error(exc))
        for make in self._world_tasks:
            self._tasks.append(asyncio.ensure_future(make()))
        self._tasks.append(asyncio.ensure_future(self._poll_metrics()))
        self._tasks.append(asyncio.ensure_future(self._poll_book()))
        from ess_tui.runtime.alerts_wiring import (
            AlertsWiring,  # alerts, metrics, systemd (issue 12)
        )

        self.alerts = AlertsWiring(self)
        await self.alerts.start()
        self.system.start()

    async def stop(self) -> None:
        if getattr(self, "alerts", None) is not None:
            await self.alerts.stop()  # alerts (issue 12): before the store closes
        await self.system.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.health.stop()
        await self.controller.close()
        closer = getattr(self.venue, "close", None)
        if callable(closer):
            try:
                await closer()
            except Exception:  # noqa: BLE001
                log.warning("venue close failed", exc_info=True)
        await self.bus.drain()
        await self.store.close()

    async def _poll_metrics(self) -> None:
        interval = min(1.0, self.settings.check_interval)
        while True:
            try:
                await self.metrics.refresh()
            except Exception as exc:  # noqa: BLE001 - the evaluator reports the stale reading
                log.debug("metrics refresh failed: %s", describe_error(exc))
            await asyncio.sleep(interval)

    async def _poll_book(self) -> None:
        await self.book_poller.run(self._keep_flat)

    async def _keep_flat(self, book: VenueSnapshot) -> None:
        """While latched the controller flattens a book that drifted open again (it owns the
        rule; the panel's poll only hands it the book it already read)."""
        if book.error is None:
            await self.controller.keep_flat_check(book.positions, book.orders)

    async def refresh_book(self) -> VenueSnapshot:
        """Read positions and open orders from the venue for the venue panel."""
        return await self.book_poller.refresh()

    def venue_snapshot(self) -> VenueSnapshot:
        return self.book

    # --- operator actions ----------------------------------------------------------------------

    async def manual_stop(self, reason: str, actor: str | None = None) -> EmergencyState:
        """Fire the ESS by hand. Returns once the latch is durable."""
        # The controller makes the operator's text safe where it enters the engine.
        state = await self.controller.latch(reason or "Manual emergency stop", source="manual",
                                            actor=actor or self.actor)
        # Shown on the manual gauge, and sticky until reset. Triggered after the latch so that
        # the runner cycle it wakes does not queue store reads ahead of the latch write.
        self.manual.trigger(reason or "Manual emergency stop")  # the trigger cleans its own text
        return state

    async def reset(
        self, reset_by: str, note: str | None = None, details: dict[str, Any] | None = None, *,
        approver: str | None = None, override: str | None = None,
        expected_activation: int | None = None, venue_flat: bool | None = None,
        via: str | None = None,
    ) -> EmergencyState:
        """Audited reset; the controller enforces the reset policy. ``expected_activation`` (or
        ``details["reviewed_activation"]``, which the guided reset sets) makes the reset refuse
        if a different activation is latched by now; ``details["approver"]`` / ``["override"]`` /
        ``["venue_flat"]`` are taken as the request's when not given."""
        info = details or {}
        reviewed = info.get("reviewed_activation")
        if expected_activation is None and isinstance(reviewed, int):
            expected_activation = reviewed
        kwargs: dict[str, Any] = {
            "approver": approver if approver is not None else info.get("approver"),
            "override": override if override is not None else info.get("override"),
            "venue_flat": venue_flat if venue_flat is not None else (
                info.get("venue_flat") if isinstance(info.get("venue_flat"), bool) else None),
            "expected_activation": expected_activation,
        }
        if via is not None:
            kwargs["via"] = via
        return await self.controller.reset(reset_by, note, details=details, **kwargs)

    async def rebaseline(self, kind: str, actor: str, reason: str) -> dict[str, Any]:
        """An explicit, audited re-baseline a reset may choose: ``loss`` (day start and peak
        become the current equity) or ``sl_window`` (stop-loss hits counted from now)."""
        if kind == "loss":
            old = self.metrics.baseline
            new = await self.metrics.rebase()
            details: dict[str, Any] = {
                "kind": kind,
                "old": None if old is None else {"day_start_equity": old.day_start_equity,
                                                 "peak_equity": old.peak_equity},
                "new": {"day_start_equity": new.day_start_equity, "peak_equity": new.peak_equity},
            }
        elif kind == "sl_window":
            old_since, new_since = self.metrics.clear_sl_window()
            details = {"kind": kind,
                       "old": None if old_since is None else old_since.isoformat(),
                       "new": new_since.isoformat()}
        else:
            raise ValueError(f"unknown re-baseline {kind!r}; known: loss, sl_window")
        await self.store.audit("rebaseline", actor=clean_text(actor, limit=120), reason=reason,
                               details=details)
        self.system.wake()
        return details

    async def audit(self, action: str, actor: str, reason: str | None = None,
                    details: dict[str, Any] | None = None) -> None:
        await self.store.audit(action, actor=actor, reason=reason, details=details)

    async def drill(self, name: str, actor: str | None = None) -> str:
        """Push the simulated world toward a trigger, so an operator can rehearse. Audited."""
        return await run_drill(self, name, actor)
