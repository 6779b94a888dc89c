"""System health emergency: the health monitor says CRITICAL, or cannot be read.

As the seed says, a monitor that raises, hangs past ``timeout_sec`` or answers something other
than HEALTHY / DEGRADED / CRITICAL is treated as CRITICAL: the evaluator *fires* with
"System health monitor unavailable: …" (not a mere gauge ERROR). The default timeout (0.8 s) is
below the runner's shortest per-check timeout (1 s), so a hung monitor fires rather than errors.
"""

from __future__ import annotations

import asyncio
import math
import numbers
from enum import Enum
from typing import Any

from ess_tui.engine.aio import call_off_loop
from ess_tui.engine.evaluators.base import BaseEvaluator, Clock, Reading, positive_limit
from ess_tui.engine.text import clean_text

HEALTHY = "HEALTHY"
DEGRADED = "DEGRADED"
CRITICAL = "CRITICAL"

_ALIASES = {"HEALTHY": HEALTHY, "OK": HEALTHY, "DEGRADED": DEGRADED, "CRITICAL": CRITICAL}


def normalize_status(raw: Any) -> str | None:
    """``"HEALTHY"``, ``"DEGRADED"`` or ``"CRITICAL"`` from a string or an enum; None if unknown."""
    candidates: list[Any] = [raw]
    if isinstance(raw, Enum):
        candidates = [raw.value, raw.name]
    for candidate in candidates:
        if isinstance(candidate, str):
            status = _ALIASES.get(candidate.strip().upper())
            if status is not None:
                return status
    return None


class SystemHealthEmergencyEvaluator(BaseEvaluator):
    """Fires on ``health_monitor.get_status() == "CRITICAL"`` or when the monitor is unavailable.

    Proximity: HEALTHY 0.0, DEGRADED 0.5, CRITICAL 1.0. If the monitor offers ``proximity()``
    (as :class:`ess_tui.market.health.HealthMonitor` does) its figure is used, kept inside the
    status's band (HEALTHY < 0.5 ≤ DEGRADED < 1.0). If it offers ``detail()``, that text is the
    gauge reading and is appended to the CRITICAL reason.
    """

    default_name = "System Health Emergency"

    def __init__(
        self,
        health_monitor: Any,
        *,
        timeout_sec: float = 0.8,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(clock=clock, name=name)
        self.health_monitor = health_monitor
        self.timeout_sec = positive_limit(timeout_sec, "timeout_sec")

    async def _read(self) -> Reading:
        monitor = self.health_monitor
        try:
            raw = await asyncio.wait_for(
                _call_async(monitor, "get_status"), timeout=self.timeout_sec
            )
        except TimeoutError:
            return _unavailable(f"no answer within {self.timeout_sec:g} s")
        except Exception as exc:
            return _unavailable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        status = normalize_status(raw)
        if status is None:
            return _unavailable(
                f"unknown status {clean_text(repr(raw), limit=60)} "
                "(expected HEALTHY, DEGRADED or CRITICAL)"
            )
        detail = await self._optional_text("detail")
        reading = f"{status}: {detail}" if detail and detail.upper() != status else status
        if status == CRITICAL:
            reason = f"System health CRITICAL: {detail}" if detail and detail.upper() != status \
                else "System health CRITICAL"
            return Reading(triggered=True, reason=reason, proximity=1.0, reading=reading)
        hint = await self._optional_proximity()
        if status == DEGRADED:
            proximity = 0.5 if hint is None else min(max(hint, 0.5), 0.99)
        else:
            proximity = 0.0 if hint is None else min(max(hint, 0.0), 0.49)
        return Reading(triggered=False, proximity=proximity, reading=reading)

    async def _optional_text(self, method: str) -> str | None:
        """An optional monitor extra; its failure never changes the verdict."""
        if not callable(getattr(self.health_monitor, method, None)):
            return None
        try:
            value = await asyncio.wait_for(
                _call_async(self.health_monitor, method), timeout=self.timeout_sec
            )
        except Exception:
            return None
        return clean_text(value, limit=160) if value else None

    async def _optional_proximity(self) -> float | None:
        if not callable(getattr(self.health_monitor, "proximity", None)):
            return None
        try:
            value = await asyncio.wait_for(
                _call_async(self.health_monitor, "proximity"), timeout=self.timeout_sec
            )
        except Exception:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return None
        value = float(value)
        return value if math.isfinite(value) else None


async def _call_async(obj: Any, method: str) -> Any:
    return await call_off_loop(getattr(obj, method))


def _unavailable(why: str) -> Reading:
    return Reading(
        triggered=True,
        reason=f"System health monitor unavailable: {why}",
        proximity=1.0,
        reading="monitor unavailable",
    )
