"""System health from real signals: the health monitor the System Health evaluator reads.

:class:`HealthMonitor` answers the seed's ``get_status() -> "HEALTHY" | "DEGRADED" | "CRITICAL"``
from three signals, each graded against a DEGRADED and a CRITICAL threshold (at or above):

* **event-loop lag**: a background task (``start()`` / ``await stop()``) sleeps a short interval
  and measures how late it wakes. If the task itself is overdue, that delay counts as lag too, so a
  loop that is frozen right now reads as lagging even before the task gets to run.
* **venue silence**: age of the last good venue call (a callable returning a datetime or None;
  None means "none yet" and is measured from when the monitor was created).
* **store write latency**: the latest write time in ms (a callable returning a number, or None
  when nothing was written yet; None is ignored).

A probe that raises or answers garbage makes that signal CRITICAL (the seed: an unreadable monitor
activates the ESS). The status is the worst signal; ``detail()`` names the signals that are not
healthy; ``proximity()`` maps each signal onto 0 … 0.5 (healthy) … 1.0 (critical) and takes the
worst. ``force(status)`` / ``clear_force()`` override everything for drills.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import numbers
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from ess_tui.engine.aio import nonblocking
from ess_tui.engine.state import as_utc, clean_text, utcnow

log = logging.getLogger(__name__)

HEALTHY = "HEALTHY"
DEGRADED = "DEGRADED"
CRITICAL = "CRITICAL"
_RANK = {HEALTHY: 0, DEGRADED: 1, CRITICAL: 2}
_FORCED_PROXIMITY = {HEALTHY: 0.0, DEGRADED: 0.5, CRITICAL: 1.0}


@dataclass(frozen=True)
class HealthThresholds:
    """DEGRADED / CRITICAL thresholds; a signal at or above a threshold is in that state."""

    loop_lag_degraded_ms: float = 250.0
    loop_lag_critical_ms: float = 2000.0
    venue_silent_degraded_sec: float = 60.0
    venue_silent_critical_sec: float = 300.0
    store_write_degraded_ms: float = 500.0
    store_write_critical_ms: float = 5000.0

    def __post_init__(self) -> None:
        for signal in ("loop_lag", "venue_silent", "store_write"):
            unit = "sec" if signal == "venue_silent" else "ms"
            degraded = getattr(self, f"{signal}_degraded_{unit}")
            critical = getattr(self, f"{signal}_critical_{unit}")
            if not (0 < degraded < critical and math.isfinite(critical)):
                raise ValueError(
                    f"health thresholds for {signal}: need 0 < degraded < critical, "
                    f"got degraded={degraded!r}, critical={critical!r}"
                )


@dataclass(frozen=True)
class Signal:
    """One graded health signal."""

    name: str
    status: str
    text: str
    proximity: float


def _grade(value: float, degraded: float, critical: float) -> tuple[str, float]:
    """Status and proximity: 0 … 0.5 below degraded, 0.5 … 1.0 up to critical, then 1.0."""
    if value >= critical:
        return CRITICAL, 1.0
    if value >= degraded:
        return DEGRADED, 0.5 + 0.5 * (value - degraded) / (critical - degraded)
    return HEALTHY, 0.5 * max(value, 0.0) / degraded


def _fmt_ms(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def _fmt_sec(sec: float) -> str:
    return f"{sec / 60:.1f} min" if sec >= 120 else f"{sec:.0f} s"


def normalize(status: Any) -> str:
    """``HEALTHY`` / ``DEGRADED`` / ``CRITICAL`` from a string or enum, else ValueError."""
    raw = status.value if isinstance(status, Enum) else status
    text = raw.strip().upper() if isinstance(raw, str) else None
    if text not in _RANK:
        raise ValueError(f"health status must be HEALTHY, DEGRADED or CRITICAL, got {status!r}")
    return text


class HealthMonitor:
    """The seed's system health monitor, measured rather than assumed. See the module docstring."""

    def __init__(
        self,
        *,
        store_write_ms: Callable[[], float | None] | None = None,
        last_venue_ok: Callable[[], datetime | None] | None = None,
        thresholds: HealthThresholds | None = None,
        lag_interval_sec: float = 0.5,
        lag_window: int = 4,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not lag_interval_sec > 0:
            raise ValueError(f"lag_interval_sec must be > 0, got {lag_interval_sec!r}")
        self.thresholds = thresholds or HealthThresholds()
        self.lag_interval_sec = lag_interval_sec
        self._store_write_ms = store_write_ms
        self._last_venue_ok = last_venue_ok
        self._clock = clock or utcnow
        self._mono = monotonic
        self._created_at = as_utc(self._clock())
        self._samples: deque[float] = deque(maxlen=max(1, lag_window))
        self._last_sample_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._forced: str | None = None
        #: Does this process act for the desk (hold the runner lease)? Set by the runtime. A
        #: standby's own loop lag (it was paused, say) is not a desk-wide emergency: it is shown,
        #: capped at DEGRADED, and never latches.
        self.acting: Callable[[], bool] | None = None

    # -- the lag probe -----------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Start measuring event-loop lag on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._samples.clear()
            self._last_sample_at = self._mono()
            self._task = asyncio.get_running_loop().create_task(
                self._measure_lag(), name="ess-health-loop-lag"
            )
        return self._task

    async def stop(self) -> None:
        """Stop measuring lag and wait for the probe task to end."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _measure_lag(self) -> None:
        interval = self.lag_interval_sec
        while True:
            started = self._mono()
            await asyncio.sleep(interval)
            woke = self._mono()
            self._samples.append(max(0.0, woke - started - interval))
            self._last_sample_at = woke

    def loop_lag_ms(self) -> float | None:
        """Worst recent event-loop lag in ms (None when not measuring)."""
        if self._task is None:
            return None
        recent = max(self._samples, default=0.0)
        overdue = 0.0
        if self._last_sample_at is not None:
            overdue = self._mono() - self._last_sample_at - self.lag_interval_sec
        return max(recent, overdue, 0.0) * 1000.0

    # -- signals -------------------------------------------------------------------------------

    def signals(self) -> list[Signal]:
        """Every measured signal, graded. Never raises."""
        t = self.thresholds
        out: list[Signal] = []
        if self._task is not None:
            if self._task.done():
                out.append(Signal("loop lag", CRITICAL, "event-loop lag probe has stopped", 1.0))
            else:
                lag = self.loop_lag_ms() or 0.0
                status, prox = _grade(lag, t.loop_lag_degraded_ms, t.loop_lag_critical_ms)
                text = f"event-loop lag {_fmt_ms(lag)}"
                if status == CRITICAL and not self._acts():
                    status, prox, text = DEGRADED, 0.99, f"{text} (standby: not acting)"
                out.append(Signal("loop lag", status, text, prox))
        if self._last_venue_ok is not None:
            out.append(self._venue_signal())
        if self._store_write_ms is not None:
            signal = self._store_signal()
            if signal is not None:
                out.append(signal)
        return out

    def _acts(self) -> bool:
        try:
            return self.acting is None or bool(self.acting())
        except Exception:  # noqa: BLE001 - unknown: judge as acting (never hide a fault)
            return True

    def _venue_signal(self) -> Signal:
        t = self.thresholds
        try:
            last = _probe(self._last_venue_ok)  # type: ignore[arg-type]
            now = as_utc(self._clock())
        except Exception as exc:
            return Signal("venue", CRITICAL, f"venue probe failed: {_exc(exc)}", 1.0)
        if last is None:
            age = (now - self._created_at).total_seconds()
            text = f"no venue answer yet ({_fmt_sec(max(age, 0.0))})"
        elif isinstance(last, datetime):
            age = (now - as_utc(last)).total_seconds()
            text = f"venue last answered {_fmt_sec(max(age, 0.0))} ago"
        else:
            return Signal("venue", CRITICAL, f"venue probe answered {_short(last)}", 1.0)
        status, prox = _grade(age, t.venue_silent_degraded_sec, t.venue_silent_critical_sec)
        return Signal("venue", status, text, prox)

    def _store_signal(self) -> Signal | None:
        t = self.thresholds
        try:
            value = _probe(self._store_write_ms)  # type: ignore[arg-type]
        except Exception as exc:
            return Signal("store", CRITICAL, f"store latency probe failed: {_exc(exc)}", 1.0)
        if value is None:
            return None
        if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                or not math.isfinite(float(value)) or value < 0):
            return Signal("store", CRITICAL, f"store latency probe answered {_short(value)}", 1.0)
        ms = float(value)
        status, prox = _grade(ms, t.store_write_degraded_ms, t.store_write_critical_ms)
        return Signal("store", status, f"store write {_fmt_ms(ms)}", prox)

    # -- the seed's health monitor contract ------------------------------------------------------

    @nonblocking
    def get_status(self) -> str:
        """``"HEALTHY"``, ``"DEGRADED"`` or ``"CRITICAL"``: the worst signal, unless forced."""
        if self._forced is not None:
            return self._forced
        return max((s.status for s in self.signals()), key=_RANK.__getitem__, default=HEALTHY)

    @nonblocking
    def detail(self) -> str:
        """What drives the status: the unhealthy signals, worst first; else every reading."""
        if self._forced is not None:
            return f"forced {self._forced} (drill)"
        signals = self.signals()
        if not signals:
            return "nothing measured yet"
        bad = sorted((s for s in signals if s.status != HEALTHY), key=lambda s: -_RANK[s.status])
        if bad:
            return " · ".join(f"{s.text} ({s.status.lower()})" for s in bad)
        return " · ".join(s.text for s in signals)

    @nonblocking
    def proximity(self) -> float:
        """0.0 … 1.0, where 0.5 is the DEGRADED threshold and 1.0 the CRITICAL one."""
        if self._forced is not None:
            return _FORCED_PROXIMITY[self._forced]
        return max((s.proximity for s in self.signals()), default=0.0)

    # -- drills --------------------------------------------------------------------------------

    def force(self, status: Any) -> None:
        """Report ``status`` regardless of the signals (a drill) until :meth:`clear_force`."""
        self._forced = normalize(status)
        log.warning("system health forced to %s", self._forced)

    def clear_force(self) -> None:
        if self._forced is not None:
            log.info("system health no longer forced (was %s)", self._forced)
        self._forced = None

    @property
    def forced(self) -> str | None:
        return self._forced


def _probe(fn: Callable[[], Any]) -> Any:
    value = fn()
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()
        raise TypeError("the probe returned an awaitable; health probes must be plain callables")
    return value


def _exc(exc: BaseException) -> str:
    return clean_text(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, limit=120)


def _short(value: Any) -> str:
    return clean_text(repr(value), limit=60)
