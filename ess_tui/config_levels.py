"""``[levels]``: the reduce-only thresholds of the built-in triggers (issue 15)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class LevelSettings(BaseModel):
    """Reduce-only thresholds (issue 15): each built-in trigger may latch the desk reduce-only
    below its halt threshold. None: that trigger goes straight to halt, as before."""

    model_config = ConfigDict(extra="forbid")

    reduce_only_daily_loss: float | None = Field(
        None, gt=0, le=100, description="daily loss %% that latches the desk reduce-only")
    reduce_only_equity_dd: float | None = Field(
        None, gt=0, le=100, description="equity drawdown %% that latches the desk reduce-only")
    reduce_only_sl_hits: int | None = Field(
        None, ge=1, le=100_000, description="stop-loss hits in the period that latch reduce-only")


def reduce_only_below_halt(settings: Any) -> None:
    """Refuse a reduce-only threshold at or above its halt threshold."""
    lv = settings.levels
    pairs = (("reduce_only_daily_loss", lv.reduce_only_daily_loss,
              "max_daily_loss", settings.max_daily_loss),
             ("reduce_only_equity_dd", lv.reduce_only_equity_dd,
              "max_equity_dd", settings.max_equity_dd),
             ("reduce_only_sl_hits", lv.reduce_only_sl_hits, "max_sl_hits", settings.max_sl_hits))
    for name, soft, halt_name, halt in pairs:
        if soft is not None and soft >= halt:
            raise ValueError(f"levels.{name} = {soft:g} must be below {halt_name} = {halt:g} "
                             "(reduce-only comes before the halt)")
