"""Execution error emergency: too many stop-losses hit, or orders failing, in a short window.

Counts fire **above** their limit, as the seed says (">10 in 15 minutes"): with the default limit
of 10, the 11th stop-loss hit in 15 minutes fires. Proximity is ``count / (limit + 1)``, so it
reaches 1.0 exactly at the count that fires (a gauge at 1.0 always means "fired"), and a limit
of 0 means "the first one fires".
"""

from __future__ import annotations

from typing import Any

from ess_tui.engine.aio import call_off_loop
from ess_tui.engine.evaluators.base import (
    BaseEvaluator,
    Clock,
    Reading,
    as_count,
    count_limit,
    fmt_number,
    positive_limit,
)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class ExecutionErrorEmergencyEvaluator(BaseEvaluator):
    """Fires when stop-loss hits (or order failures) in the last ``period_minutes`` exceed a limit.

    ``metrics_repo.get_recent_sl_hits(minutes)`` is required (sync or async). Order failures are
    watched only when ``max_order_failures`` is given, through
    ``metrics_repo.get_recent_order_failures(minutes)``; asking for that limit with a repository
    that cannot count failures is a :class:`TypeError` at construction.
    """

    default_name = "Execution Error Emergency"

    def __init__(
        self,
        metrics_repo: Any,
        max_sl_hits_per_period: int = 10,
        period_minutes: float = 15,
        max_order_failures: int | None = None,
        *,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(clock=clock, name=name)
        self.metrics_repo = metrics_repo
        self.max_sl_hits = count_limit(max_sl_hits_per_period, "max_sl_hits_per_period")
        positive_limit(period_minutes, "period_minutes")
        self.period_minutes = period_minutes
        self.max_order_failures = (
            None if max_order_failures is None
            else count_limit(max_order_failures, "max_order_failures")
        )
        if self.max_order_failures is not None and not callable(
            getattr(metrics_repo, "get_recent_order_failures", None)
        ):
            raise TypeError(
                f"max_order_failures={self.max_order_failures} needs a metrics repository with "
                f"get_recent_order_failures(minutes); {type(metrics_repo).__name__} has none"
            )

    async def _read(self) -> Reading:
        minutes = self.period_minutes
        window = f"{fmt_number(float(minutes))} min"
        hits = as_count(
            await call_off_loop(self.metrics_repo.get_recent_sl_hits, minutes),
            f"stop-loss hits in the last {window}",
        )
        reasons: list[str] = []
        if hits > self.max_sl_hits:
            reasons.append(f"Excessive SL hits: {hits} in {window}")
        proximity = hits / (self.max_sl_hits + 1)
        parts = [f"{_plural(hits, 'SL hit')} in {window} (fires above {self.max_sl_hits})"]

        if self.max_order_failures is not None:
            failures = as_count(
                await call_off_loop(self.metrics_repo.get_recent_order_failures, minutes),
                f"order failures in the last {window}",
            )
            if failures > self.max_order_failures:
                reasons.append(f"Repeated order failures: {failures} in {window}")
            proximity = max(proximity, failures / (self.max_order_failures + 1))
            parts.append(
                f"{_plural(failures, 'order failure')} (fires above {self.max_order_failures})"
            )
        return Reading(
            triggered=bool(reasons),
            reason="; ".join(reasons) or None,
            proximity=proximity,
            reading=" · ".join(parts),
        )
