"""Manual trigger: an operator (or an admin script) fires the ESS by hand.

``trigger(reason)`` is sticky until ``reset()``, callable from any thread, and wakes the runner at
once through the wake hook. A second ``trigger()`` while already triggered keeps the first reason
(the latch keeps the first reason too) but still wakes the runner.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from ess_tui.engine.evaluators.base import BaseEvaluator, Clock, Reading
from ess_tui.engine.text import clean_text

log = logging.getLogger(__name__)

DEFAULT_REASON = "Manual emergency stop"


class ManualTriggerEmergencyEvaluator(BaseEvaluator):
    """Fires from the moment :meth:`trigger` is called until :meth:`reset`."""

    default_name = "Manual Trigger"

    def __init__(self, *, clock: Clock | None = None, name: str | None = None) -> None:
        super().__init__(clock=clock, name=name)
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._triggered_at: datetime | None = None

    @property
    def is_triggered(self) -> bool:
        with self._lock:
            return self._reason is not None

    @property
    def reason(self) -> str | None:
        with self._lock:
            return self._reason

    @property
    def triggered_at(self) -> datetime | None:
        with self._lock:
            return self._triggered_at

    def trigger(self, reason: str = DEFAULT_REASON) -> bool:
        """Fire by hand. Returns True if this call triggered it, False if it already was."""
        text = clean_text(reason) if reason else ""
        text = text or DEFAULT_REASON
        with self._lock:
            new = self._reason is None
            if new:
                self._reason = text
                self._triggered_at = self._safe_now()
        if new:
            log.warning("%s: triggered by hand: %s", self.name, text)
        self.wake()
        return new

    def reset(self) -> None:
        """Clear the trigger (the ESS latch itself is reset separately, with an audit row)."""
        with self._lock:
            was = self._reason
            self._reason = None
            self._triggered_at = None
        if was is not None:
            log.info("%s: manual trigger cleared", self.name)

    async def _read(self) -> Reading:
        with self._lock:
            reason = self._reason
        if reason is None:
            return Reading(triggered=False, proximity=0.0, reading="not triggered")
        return Reading(triggered=True, reason=reason, proximity=1.0, reading="triggered by hand")
