"""The outbox relay: at-least-once delivery of the store's alert events to every sink.

Run by the acting runner (the lease holder) as its own asyncio task, one task per sink, so a sink
that hangs or refuses delays neither the latch, nor the flatten, nor another sink. Per sink, events
go out oldest first; a failed one is retried with jittered exponential backoff (capped) and nothing
overtakes it, so a sink that was down gets everything afterwards, in order. Each delivery carries
the event's idempotency key (and, for latched / reset, one dedup key per activation): a crash
between sending and recording may repeat an alert, never lose one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ess_tui.alerts.messages import AlertMessage, render
from ess_tui.alerts.sinks import SinkError, levels_from
from ess_tui.engine.state import clean_text, utcnow
from ess_tui.engine.store import OutboxEvent

log = logging.getLogger(__name__)

#: Consecutive failed deliveries after which the relay raises ``alert_failing`` to the other sinks.
FAILING_AFTER = 3


@dataclass
class SinkHealth:
    """What the control room and ``/metrics`` show of one sink."""

    name: str
    target: str = ""
    last_delivered_at: datetime | None = None
    last_failed_at: datetime | None = None
    last_error: str | None = None
    streak: int = 0
    delivered: int = 0
    failed: int = 0


def backoff(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): base·2^(n-1), ±25% jitter, at most ``cap``."""
    raw = min(cap, base * (2 ** max(0, attempt - 1)))
    return max(0.05, min(cap, raw * rng.uniform(0.75, 1.25)))


class AlertRelay:
    def __init__(
        self, outbox: Any, sinks: list[Any], *, acting: Callable[[], bool] = lambda: True,
        clock: Callable[[], datetime] = utcnow, poll_sec: float = 2.0, retry_base: float = 0.5,
        retry_max: float = 60.0, max_age: timedelta = timedelta(hours=24), seed: int | None = None,
    ) -> None:
        self.outbox = outbox
        self.sinks = list(sinks)
        self.acting = acting
        self.clock = clock
        self.poll_sec = poll_sec
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_age = max_age
        self.health = {s.name: SinkHealth(s.name, getattr(s, "target", "")) for s in self.sinks}
        self._wake = {s.name: asyncio.Event() for s in self.sinks}
        self._attempts: dict[tuple[str, int], int] = {}
        self._last_delay: dict[tuple[str, int], float] = {}
        self._rng = random.Random(seed)
        self._tasks: list[asyncio.Task[Any]] = []
        #: How many sinks have loaded their library (apprise takes ~0.4 s the first time).
        self.prepared = 0
        self._stopping = False
        #: Called with (sink name, event, None | error) after every attempt (bench, tests).
        self.on_attempt: Callable[[str, OutboxEvent, str | None], Any] | None = None

    def kick(self) -> None:
        """Look at the outbox now (called right after something was enqueued)."""
        for event in self._wake.values():
            event.set()

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.ensure_future(self._sink_loop(s)) for s in self.sinks]

    async def stop(self, grace: float = 3.0) -> None:
        """Let deliveries in flight finish (up to ``grace`` seconds, so a clean restart does not
        send them again), then stop."""
        self._stopping = True
        self.kick()
        tasks, self._tasks = self._tasks, []
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def levels(self, sink: Any) -> tuple[str, ...]:
        return levels_from(sink.min_level)

    async def _sink_loop(self, sink: Any) -> None:
        wake = self._wake[sink.name]
        prepare = getattr(sink, "prepare", None)
        if callable(prepare):
            try:
                await asyncio.to_thread(prepare)
            except Exception as exc:  # noqa: BLE001 - reported at the first delivery
                log.warning("alert sink %s not ready: %s", sink.name, exc)
        self.prepared += 1
        while not self._stopping:
            wait = self.poll_sec
            try:
                if self.acting():
                    wait = await self.deliver_due(sink)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the outbox may come back; keep trying
                log.warning("alert relay for %s: %s", sink.name, exc)
            try:
                await asyncio.wait_for(wake.wait(), max(0.01, wait))
            except asyncio.TimeoutError:
                pass
            wake.clear()

    async def deliver_due(self, sink: Any) -> float:
        """Deliver what is due to ``sink``, in order; returns seconds until it should look again."""
        now = self.clock()
        events = await self.outbox.pending(sink.name, now=now, limit=100, levels=self.levels(sink),
                                           not_before=now - self.max_age)
        for event in events:
            if self._stopping:
                return 0.0
            error = await self._attempt(sink, event)
            if error is not None:
                return min(self.poll_sec, self._last_delay.get((sink.name, event.id), self.poll_sec))
        if len(events) >= 100:
            return 0.0
        nxt = await self.outbox.next_attempt(sink.name, self.levels(sink))
        if nxt is not None:
            return max(0.01, min(self.poll_sec, (nxt - self.clock()).total_seconds()))
        return self.poll_sec

    async def _attempt(self, sink: Any, event: OutboxEvent) -> str | None:
        health = self.health[sink.name]
        if event.kind == "alert_failing" and event.payload.get("sink") == sink.name:
            await self.outbox.mark_delivered(event.id, sink.name, at=self.clock())
            return None  # news about this sink is for the others
        message = render(event)
        error = await self.send(sink, message, event)
        now = self.clock()
        key = (sink.name, event.id)
        if error is None:
            await self.outbox.mark_delivered(event.id, sink.name, at=now)
            self._attempts.pop(key, None)
            self._last_delay.pop(key, None)
            health.last_delivered_at, health.streak = now, 0
            health.delivered += 1
        else:
            attempt = self._attempts.get(key, 0) + 1
            self._attempts[key] = attempt
            delay = backoff(attempt, base=self.retry_base, cap=self.retry_max, rng=self._rng)
            self._last_delay[key] = delay
            await self.outbox.mark_failed(event.id, sink.name, at=now, error=error,
                                          next_attempt_at=now + timedelta(seconds=delay))
            health.last_failed_at, health.last_error = now, error
            health.streak += 1
            health.failed += 1
            log.warning("alert %s to %s failed (attempt %d, retry in %.1fs): %s",
                        event.key, sink.name, attempt, delay, error)
            if health.streak == FAILING_AFTER:
                await self._raise_failing(sink, event, error)
        if self.on_attempt is not None:
            self.on_attempt(sink.name, event, error)
        return error

    async def send(self, sink: Any, message: AlertMessage, event: OutboxEvent) -> str | None:
        """One delivery under the sink's timeout. Returns None, or why it failed (safe text)."""
        try:
            await asyncio.wait_for(sink.send(message, event), sink.timeout + 1.0)
        except asyncio.TimeoutError:
            return f"no answer within {sink.timeout:g}s"
        except SinkError as exc:
            return clean_text(str(exc), limit=300) or "failed"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a sink bug is a failed delivery, not a crash
            return clean_text(f"{type(exc).__name__}: {exc}", limit=300)
        return None

    async def _raise_failing(self, sink: Any, event: OutboxEvent, error: str) -> None:
        try:
            await self.outbox.enqueue(
                "alert_failing", level="warning", key=f"alert_failing:{sink.name}:{event.id}",
                payload={"sink": sink.name, "message": f"alerts to {sink.name} are failing: {error}",
                         "do": f"check the sink {sink.name} ({getattr(sink, 'target', '')}); "
                               "alerts wait in the outbox and go out once it works"},
                activation=event.activation)
            self.kick()
        except Exception as exc:  # noqa: BLE001
            log.warning("could not record that alerts to %s fail: %s", sink.name, exc)
