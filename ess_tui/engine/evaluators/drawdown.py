"""Drawdown emergency: the account has lost too much today, or is too far below its peak.

Fires **at** the limit, not only beyond it: a daily PnL of exactly -10.00% with a 10% limit fires,
as does a drawdown of exactly 25.00% with a 25% limit. (The seed writes ``<`` and ``>``; ess-tui
fires at the limit so that a gauge at proximity 1.0 always means "fired", and because a stop one
tick early costs less than one tick late.)
"""

from __future__ import annotations

from typing import Any

from ess_tui.engine.aio import call_off_loop
from ess_tui.engine.evaluators.base import (
    BaseEvaluator,
    Clock,
    EvaluatorFault,
    Reading,
    as_number,
    positive_limit,
)

#: A drawdown slightly below zero is float rounding; clearly negative means the repo's sign is
#: wrong.
_NEGATIVE_DRAWDOWN_TOLERANCE = 1e-6


class DrawdownEmergencyEvaluator(BaseEvaluator):
    """Fires when daily PnL ≤ -``max_daily_loss_percent`` or drawdown ≥
    ``max_equity_drawdown_percent``.

    ``metrics_repo`` answers ``get_daily_pnl_percent()`` (negative = loss) and
    ``get_equity_drawdown_percent()`` (positive = below peak), sync or async. If it also has a
    ``refresh()`` method (as :class:`ess_tui.market.metrics.AccountMetrics` does), it is called
    first so each check reads fresh equity. A missing, NaN or non-numeric metric is a fault
    (ERROR on the gauge), never "all clear".
    """

    default_name = "Drawdown Emergency"

    def __init__(
        self,
        metrics_repo: Any,
        max_daily_loss_percent: float = 10.0,
        max_equity_drawdown_percent: float = 25.0,
        *,
        clock: Clock | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(clock=clock, name=name)
        self.metrics_repo = metrics_repo
        self.max_daily_loss_percent = positive_limit(
            max_daily_loss_percent, "max_daily_loss_percent"
        )
        self.max_equity_drawdown_percent = positive_limit(
            max_equity_drawdown_percent, "max_equity_drawdown_percent"
        )

    async def _read(self) -> Reading:
        repo = self.metrics_repo
        refresh = getattr(repo, "refresh", None)
        if callable(refresh):
            await call_off_loop(refresh)
        pnl = as_number(await call_off_loop(repo.get_daily_pnl_percent), "daily PnL %")
        drawdown = as_number(
            await call_off_loop(repo.get_equity_drawdown_percent), "equity drawdown %"
        )
        if drawdown < -_NEGATIVE_DRAWDOWN_TOLERANCE:
            raise EvaluatorFault(
                f"equity drawdown is negative ({drawdown:.2f}%): the metrics repository must "
                "report drawdown as a positive percent below the equity peak"
            )
        drawdown = max(drawdown, 0.0)

        max_loss = self.max_daily_loss_percent
        max_dd = self.max_equity_drawdown_percent
        reasons: list[str] = []
        if pnl <= -max_loss:
            reasons.append(f"Daily PnL catastrophic: {pnl:.2f}%")
        if drawdown >= max_dd:
            reasons.append(f"Equity drawdown catastrophic: {drawdown:.2f}%")
        proximity = max(max(-pnl, 0.0) / max_loss, drawdown / max_dd)
        reading = (
            f"daily PnL {pnl:+.2f}% of -{max_loss:.2f}% · drawdown {drawdown:.2f}% of {max_dd:.2f}%"
        )
        return Reading(
            triggered=bool(reasons),
            reason="; ".join(reasons) or None,
            proximity=proximity,
            reading=reading,
        )
