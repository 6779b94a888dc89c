"""Data feed emergency: market data is corrupted, or has stopped arriving.

* Corrupted: the monitor's ``is_corrupted()`` says so (its ``corruption_reason()``, if any, is
  the detail), or the last update is in the future beyond ``max_clock_skew_sec``.
* Stale: no update for ``max_staleness_minutes`` or more (fires **at** the limit: staleness is
  continuous, and a gauge at 1.0 always means "fired"). A monitor that has never seen an update
  (``get_last_update_time()`` is None) is measured from this evaluator's first check, so a feed
  that never delivers fires after one staleness period.

Ages run on the monotonic clock where they can, so a wall-clock step neither hides a dead feed
("waiting 0 s" for an hour after a back-step) nor fires a live one: the wait since the first check
always, and the age of the last update when the monitor can tell it
(``last_update_age_sec()``, as :class:`ess_tui.market.feed.FeedMonitor` does). A seed-shaped
monitor with only ``get_last_update_time()`` is compared with the wall clock, as the seed does.

A monitor answering something that is not a datetime / bool is a fault (ERROR), not "all clear".
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ess_tui.engine.aio import call_off_loop
from ess_tui.engine.evaluators.base import (
    BaseEvaluator,
    Clock,
    EvaluatorFault,
    Reading,
    WakeCallback,
    fmt_number,
    positive_limit,
)
from ess_tui.engine.text import as_utc, clean_text


def fmt_age(seconds: float) -> str:
    """``12 s`` under a minute, ``6.2 min`` above."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


class DataFeedEmergencyEvaluator(BaseEvaluator):
    """Fires when the data feed is corrupted or stale. Proximity = age / limit.

    If the monitor has ``bind_wake`` (as :class:`ess_tui.market.feed.FeedMonitor` does), binding
    this evaluator's wake hook binds the monitor's too, so corruption wakes the runner at once.
    """

    default_name = "Data Feed Emergency"

    def __init__(
        self,
        data_feed_monitor: Any,
        max_staleness_minutes: float = 5,
        *,
        max_clock_skew_sec: float = 5.0,
        clock: Clock | None = None,
        name: str | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(clock=clock, name=name)
        self._mono: Callable[[], float] = (
            monotonic or getattr(clock, "monotonic", None) or time.monotonic
        )
        self.data_feed_monitor = data_feed_monitor
        self.max_staleness_minutes = positive_limit(max_staleness_minutes, "max_staleness_minutes")
        self.max_clock_skew_sec = positive_limit(max_clock_skew_sec, "max_clock_skew_sec")
        self._watching_since: float | None = None  # monotonic

    def bind_wake(self, callback: WakeCallback | None) -> None:
        super().bind_wake(callback)
        bind = getattr(self.data_feed_monitor, "bind_wake", None)
        if callable(bind):
            bind(self.wake if callback is not None else None)

    async def _read(self) -> Reading:
        monitor = self.data_feed_monitor
        now = self.now()
        mono = float(self._mono())
        if self._watching_since is None:
            self._watching_since = mono
        limit_sec = self.max_staleness_minutes * 60.0
        limit = f"limit {fmt_number(self.max_staleness_minutes)} min"

        corrupted = await call_off_loop(monitor.is_corrupted)
        if isinstance(corrupted, numbers.Integral) and corrupted in (0, 1):
            corrupted = bool(corrupted)
        if not isinstance(corrupted, bool):
            raise EvaluatorFault(
                f"is_corrupted() answered {clean_text(repr(corrupted), limit=60)}, "
                "expected True/False"
            )
        if corrupted:
            detail = await self._corruption_detail()
            return Reading(
                triggered=True,
                reason=f"Data feed corrupted: {detail}",
                proximity=1.0,
                reading=f"corrupted: {detail}",
            )

        mono_age = await self._monotonic_age()
        last = None if mono_age is not None else await call_off_loop(monitor.get_last_update_time)
        if mono_age is not None:
            age, never = mono_age, False
        elif last is None:
            age = max(mono - self._watching_since, 0.0)
            never = True
        elif isinstance(last, datetime):
            age = (now - as_utc(last)).total_seconds()
            never = False
        else:
            raise EvaluatorFault(
                f"get_last_update_time() answered {clean_text(repr(last), limit=60)}, "
                "expected a datetime"
            )

        if age < -self.max_clock_skew_sec:
            detail = (
                f"last update is {fmt_age(-age)} in the future "
                "(a bad timestamp, or this machine's clock is wrong)"
            )
            return Reading(
                triggered=True,
                reason=f"Data feed corrupted: {detail}",
                proximity=1.0,
                reading=f"corrupted: {detail}",
            )
        age = max(age, 0.0)
        proximity = age / limit_sec
        if never:
            reading = f"no update yet, waiting {fmt_age(age)} ({limit})"
        else:
            reading = f"last update {fmt_age(age)} ago ({limit})"
        if age >= limit_sec:
            suffix = "; none received since monitoring started" if never else ""
            return Reading(
                triggered=True,
                reason=f"Data feed stale: no update for {age / 60:.1f} min ({limit}){suffix}",
                proximity=proximity,
                reading=reading,
            )
        return Reading(triggered=False, proximity=proximity, reading=reading)

    async def _monotonic_age(self) -> float | None:
        """The monitor's own monotonic age of the last update, when it offers one."""
        ask = getattr(self.data_feed_monitor, "last_update_age_sec", None)
        if not callable(ask):
            return None
        age = await call_off_loop(ask)
        if age is None:
            return None
        if isinstance(age, bool) or not isinstance(age, numbers.Real) or not math.isfinite(age):
            raise EvaluatorFault(
                f"last_update_age_sec() answered {clean_text(repr(age), limit=60)}, "
                "expected seconds"
            )
        return max(float(age), 0.0)

    async def _corruption_detail(self) -> str:
        explain = getattr(self.data_feed_monitor, "corruption_reason", None)
        if callable(explain):
            try:
                detail = await call_off_loop(explain)
            except Exception as exc:
                return f"the feed monitor reports corrupted data (its detail failed: {exc})"
            if detail:
                return clean_text(detail, limit=300)
        return "the feed monitor reports corrupted data"
