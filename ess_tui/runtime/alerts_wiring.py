"""Alerts wired into a running ESS: outbox events from the internal bus, the relay (while this
process holds the runner lease), ``/metrics``, and systemd's READY / WATCHDOG.

``latched`` and ``reset`` are enqueued by the store inside their own transactions; everything else
is enqueued here right after its cause (flatten done or still failing, a trigger entering WARN, an
evaluator fault streak, the store failing, the lease lost, a runner loop fault). When the store
itself cannot take an event, it is sent straight to the sinks from memory (best effort).
Bus handlers only schedule work: nothing here can delay an evaluation, the latch or the flatten.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from ess_tui.alerts.metrics import MetricsServer, MetricsSnapshot
from ess_tui.alerts.relay import AlertRelay
from ess_tui.alerts.sdnotify import notify, watchdog_interval
from ess_tui.alerts.sinks import build_sinks, levels_from
from ess_tui.config import ConfigError
from ess_tui.engine.state import Band, clean_text, utcnow
from ess_tui.engine.store import OutboxEvent
from ess_tui.store.outbox import SQLiteOutbox

log = logging.getLogger(__name__)

WARN_REPEAT = timedelta(minutes=15)
FAULT_STREAK = 2


def _minute(at: datetime) -> str:
    return at.strftime("%Y%m%dT%H%M")


class AlertsWiring:
    """Owned by a :class:`~ess_tui.runtime.assembly.Runtime`; :meth:`start` after the runtime's."""

    def __init__(self, runtime: Any) -> None:
        self.rt = runtime
        settings = runtime.settings
        try:
            self.sinks = build_sinks(settings.alerts)
        except ValueError as exc:
            raise ConfigError(f"bad config: {exc}") from None
        self.outbox: Any
        if settings.db_url is not None:  # a desk's PostgreSQL store: the outbox on its pool
            from ess_tui.store.open import open_outbox

            self.outbox = open_outbox(settings.db_url, store=runtime.store)
        else:
            self.outbox = SQLiteOutbox(settings.db_path)
        self.relay = AlertRelay(self.outbox, self.sinks, acting=lambda: runtime.controller.acting,
                                clock=utcnow, retry_max=settings.alert_retry_max)
        self.metrics: MetricsServer | None = None
        self.latch_hist = MetricsSnapshot().latch
        self.errors: dict[str, int] = {}
        self.flatten_seconds: float | None = None
        self._bands: dict[str, Band] = {}
        self._warned: dict[str, datetime] = {}
        self._streaks: dict[str, int] = {}
        self._unsubscribe: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self._watchdog = watchdog_interval()
        self._last_ping = 0.0
        self.ready_sent = False
        self._acted = False  # this runner held the lease at some point (a later standby = lost)

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        listen = self.rt.settings.metrics.listen
        if listen:
            try:
                self.metrics = MetricsServer(listen, self.snapshot)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"bad config: cannot serve metrics on {listen}: {exc}") from None
        bus = self.rt.bus
        for kind, handler in (("emergency.latched", self._on_latched),
                              ("emergency.flattened", self._on_flattened),
                              ("emergency.reset", self._on_reset),
                              ("ess.evaluations", self._on_evaluations),
                              ("ess.warning", self._on_warning)):
            self._unsubscribe.append(bus.subscribe(handler, kind))
        if self.sinks:
            self.relay.start()
        if self.metrics is not None and hasattr(self.outbox, "refresh_loop"):
            # PostgreSQL: the scrape (on the exporter's thread) reads a snapshot kept fresh here
            self.outbox.watch({s.name: levels_from(s.min_level) for s in self.sinks},
                              self.relay.max_age)
            self._loops.append(asyncio.ensure_future(self.outbox.refresh_loop()))
        self._loops.append(asyncio.ensure_future(self._flatten_watch()))
        self._loops.append(asyncio.ensure_future(self._ready()))
        self._loops.append(asyncio.ensure_future(self._digest_loop()))

    async def stop(self) -> None:
        for undo in self._unsubscribe:
            undo()
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        await self.relay.stop()
        if self.metrics is not None:
            self.metrics.close()
        await self.outbox.close()
        if self.ready_sent:
            notify("STOPPING=1")

    async def _ready(self) -> None:
        """READY=1 once the latch is loaded (the first cycle ran after restore) and the lease is
        taken; a standby says so in STATUS= and is ready too (it is doing its job)."""
        system = self.rt.system
        started = time.monotonic()
        while system.cycles < 1 or (not self.rt.controller.acting
                                     and time.monotonic() - started < 2 * (system.lease_ttl_sec or 0)):
            await asyncio.sleep(0.05)
        state = self.rt.controller.state
        role = "acting" if self.rt.controller.acting else f"standby (lease: {system.lease_holder})"
        latch = f"LATCHED #{state.activation_count}" if state.active else "armed"
        self.ready_sent = notify(f"READY=1\nSTATUS=ESS {latch}, {role}")
        if self._watchdog is not None and self._watchdog * 2 < self.rt.settings.check_interval * 2:
            log.warning("WatchdogSec is shorter than two check intervals: systemd will kill a "
                        "healthy runner; raise WatchdogSec or lower check_interval")

    # --- enqueueing ----------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def emit(self, kind: str, *, level: str, key: str, payload: dict[str, Any],
             activation: int | None = None) -> None:
        """Enqueue an event (in the background) and wake the relay."""
        self._spawn(self._emit(kind, level=level, key=key, payload=payload, activation=activation))

    async def _emit(self, kind: str, **event: Any) -> None:
        try:
            await self.outbox.enqueue(kind, **event)
        except Exception as exc:  # noqa: BLE001 - the store is down: tell the sinks from memory
            log.warning("alert %s not stored (%s); sending it directly", event["key"], exc)
            ev = OutboxEvent(id=0, kind=kind, level=event["level"], key=event["key"],
                             created_at=utcnow(), payload=event["payload"],
                             activation=event.get("activation"))
            if self.rt.controller.acting or kind == "store_unavailable":
                await self.send_now(ev)
            return
        self.relay.kick()

    async def send_now(self, event: OutboxEvent) -> dict[str, str | None]:
        """Send ``event`` to every sink that takes its level, now, not via the outbox."""
        from ess_tui.alerts.messages import render

        message = render(event)
        sinks = [s for s in self.sinks if event.level in levels_from(s.min_level)]
        results = await asyncio.gather(*(self.relay.send(s, message, event) for s in sinks))
        return {s.name: r for s, r in zip(sinks, results)}

    # --- bus handlers (cheap: they schedule, never wait) ---------------------------------------

    def _on_latched(self, event: Any) -> None:
        self.relay.kick()
        state = event.state
        if event.new and state.timestamp is not None:
            self.latch_hist.observe(max(0.0, (utcnow() - state.timestamp).total_seconds()))

    def _on_reset(self, event: Any) -> None:
        self.relay.kick()
        if self.rt.controller.acting:
            self._spawn(self._report(event.state.activation_count))

    async def _report(self, activation: int) -> None:
        """The activation's report, once, by the acting runner (key ``report:<activation>``)."""
        from ess_tui.alerts.report import reset_report

        try:
            rows = await self.rt.store.read_audit(2000)
            payload = reset_report(rows, activation)
        except Exception as exc:  # noqa: BLE001
            log.warning("no report for activation #%d: %s", activation, exc)
            return
        if payload is not None:
            self.emit("report", level="warning", key=f"report:{activation}", payload=payload,
                      activation=activation)

    async def _digest_loop(self) -> None:
        """Yesterday's digest (UTC), once per day across restarts (key ``digest:<day>``)."""
        from ess_tui.alerts.report import digest

        await asyncio.sleep(60)  # not in the first minute of a (re)start
        while True:
            if self.rt.controller.acting and self.sinks:
                end = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
                try:
                    rows = await self.rt.store.read_audit(5000)
                    events = await self.outbox.events(0, 5000)
                    payload = digest(rows, events, day_end=end)
                    self.emit("digest", level="info", key=f"digest:{payload['day']}", payload=payload)
                except Exception as exc:  # noqa: BLE001
                    log.debug("no digest: %s", exc)
            await asyncio.sleep(3600)

    def _on_flattened(self, event: Any) -> None:
        report = event.report
        state = self.rt.controller.state
        act = state.activation_count
        seconds = ((event.timestamp - state.timestamp).total_seconds()
                   if state.timestamp is not None else None)
        if report.flat is not False and not report.fatal:
            self.flatten_seconds = seconds
            self.emit("flattened", level="warning", key=f"flattened:{act}", activation=act, payload={
                "orders_canceled": report.orders_canceled, "positions_closed": report.positions_closed,
                "seconds": seconds, "attempts": report.attempts, "since": state.timestamp})
        else:
            self.emit("flatten_failing", level="critical", key=f"flatten_failing:{act}:0",
                      activation=act, payload=self._still_open(report))

    @staticmethod
    def _still_open(report: Any) -> dict[str, Any]:
        return {"remaining": [*report.remaining_positions, *report.remaining_orders],
                "last_error": report.last_error, "attempts": report.attempts,
                "fatal": report.fatal}

    def _on_evaluations(self, event: Any) -> None:
        self._ping_watchdog()
        self._acted = self._acted or bool(self.rt.controller.acting)
        now = utcnow()
        for ev in event.evaluations:
            band = ev.band
            before = self._bands.get(ev.name)
            self._bands[ev.name] = band
            if band is Band.ERROR:
                self.errors[ev.name] = self.errors.get(ev.name, 0) + 1
                streak = self._streaks[ev.name] = self._streaks.get(ev.name, 0) + 1
                if streak == FAULT_STREAK:
                    self.emit("evaluator_fault", level="warning",
                              key=f"fault:{ev.name}:{_minute(now)}", payload={
                                  "source": ev.name, "reason": ev.error,
                                  "message": f"trigger {ev.name} failed {streak} checks in a row",
                                  "do": "fix its data source; more faults in a row fire the ESS"})
                continue
            self._streaks.pop(ev.name, None)
            last = self._warned.get(ev.name)
            if band is Band.WARN and before not in (Band.WARN, Band.FIRE) and (
                    last is None or now - last >= WARN_REPEAT):
                self._warned[ev.name] = now
                self.emit("trigger_warn", level="warning",
                          key=f"warn:{ev.name}:{now.isoformat(timespec='seconds')}", payload={
                              "source": ev.name, "reading": ev.reading, "proximity": ev.proximity,
                              "message": f"{ev.name} is at {ev.proximity:.0%} of its limit ({ev.reading})",
                              "do": "reduce risk now: the ESS fires at 100%"})

    def _on_warning(self, event: Any) -> None:
        now = utcnow()
        text = clean_text(event.message, limit=300)
        if event.source == "store":
            self.emit("store_unavailable", level="critical", key=f"store:{_minute(now)}",
                      payload={"message": f"the ESS store fails: {text}", "source": "store",
                               "do": "fix the database (disk, permissions, lock); trading stays blocked"})
        elif event.source == "lease" and text.startswith("standby") and self._acted:
            self._acted = False  # lost it: said once, until it is taken again
            self.emit("lease_lost", level="critical", key=f"lease:{_minute(now)}", payload={
                "message": f"runner {self.rt.system.holder}: {text}", "source": "lease",
                "do": "check that exactly one runner acts (`ess-tui status`)"})
        elif event.source == "runner":
            self.emit("runner_fault", level="warning", key=f"runner:{_minute(now)}",
                      payload={"message": text, "source": "runner"})
        elif event.source in ("dead_man", "deadman"):
            self.emit("dead_man", level="critical", key=f"deadman:{_minute(now)}",
                      payload={"message": text, "source": "dead-man switch"})

    def _ping_watchdog(self) -> None:
        if self._watchdog is None or not self.ready_sent:
            return  # READY first, then the pings
        now = time.monotonic()
        if now - self._last_ping >= min(self._watchdog, 1.0):
            self._last_ping = now
            notify("WATCHDOG=1")

    async def _flatten_watch(self) -> None:
        """While latched and not flat: ``flatten_failing`` every ``flatten_failing_every`` minutes."""
        every = self.rt.settings.flatten_failing_every * 60
        count = 0
        since = time.monotonic()
        while True:
            await asyncio.sleep(min(every, 5.0))
            ctl = self.rt.controller
            report = ctl.last_report
            if not (ctl.known_latched and report is not None and (report.flat is False or report.fatal)):
                since, count = time.monotonic(), 0
                continue
            if time.monotonic() - since >= every:
                since, count = time.monotonic(), count + 1
                act = ctl.state.activation_count
                self.emit("flatten_failing", level="critical", key=f"flatten_failing:{act}:{count}",
                          activation=act, payload=self._still_open(report))

    # --- metrics -------------------------------------------------------------------------------

    def snapshot(self) -> MetricsSnapshot:
        """Read at scrape time (the exporter's thread)."""
        ctl = self.rt.controller
        state = ctl.state
        evaluations = list(getattr(self.rt.system, "last_evaluations", None) or [])
        book = self.rt.book
        pending = None
        failures: dict[str, int] = {}
        try:
            pending = self.outbox.pending_count_sync(
                {s.name: levels_from(s.min_level) for s in self.sinks},
                not_before=utcnow() - self.relay.max_age)
            failures = self.outbox.stats_sync()["failures"]
        except Exception as exc:  # noqa: BLE001 - the metric goes missing, the scrape answers
            log.debug("metrics: outbox unreadable: %s", exc)
        return MetricsSnapshot(
            latched=None if ctl.unavailable and not state.active else state.active,
            activations=state.activation_count, acting=bool(ctl.acting),
            proximity={e.name: e.proximity for e in evaluations},
            bands={e.name: e.band.value for e in evaluations}, errors=dict(self.errors),
            latch=self.latch_hist, flatten_seconds=self.flatten_seconds,
            open_positions=None if book.taken_at is None else len(book.positions),
            open_orders=None if book.taken_at is None else len(book.orders),
            alerts_pending=pending, alert_failures={s.name: failures.get(s.name, 0) for s in self.sinks},
        )
