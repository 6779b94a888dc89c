"""The reduce-only triggers from ``[levels]`` (issue 15): the built-in evaluators again, at the
reduce-only thresholds. A threshold left out gives no trigger for it."""

from __future__ import annotations

from typing import Any

from ess_tui.config import Settings
from ess_tui.engine.evaluators import DrawdownEmergencyEvaluator, ExecutionErrorEmergencyEvaluator


def level_triggers(settings: Settings, metrics: Any, clock: Any) -> list[Any]:
    lv = settings.levels
    found: list[Any] = []
    if lv.reduce_only_daily_loss is not None or lv.reduce_only_equity_dd is not None:
        found.append(DrawdownEmergencyEvaluator(
            metrics, lv.reduce_only_daily_loss or 100.0, lv.reduce_only_equity_dd or 100.0,
            clock=clock, name="Drawdown (reduce-only)"))
    if lv.reduce_only_sl_hits is not None:
        found.append(ExecutionErrorEmergencyEvaluator(
            metrics, lv.reduce_only_sl_hits, settings.sl_period_minutes, None, clock=clock,
            name="Execution (reduce-only)"))
    return found
