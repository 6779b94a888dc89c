"""Reduce-only triggers (issue 15): built-in evaluators at their lower, reduce-only thresholds.

A trigger that fires latches the whole desk *reduce-only* (durable, audited, never cleared by
itself); the same evaluator at its halt threshold, in the runner's ordinary list, still latches the
desk halt and flattens. An erroring reduce-only trigger latches nothing here: failing closed is the
halt evaluator's job (it reads the same numbers and latches after ``fail_closed_after`` faults).
"""

from __future__ import annotations

import logging
from typing import Any

from ess_tui.engine.evaluators.base import evaluate_any
from ess_tui.engine.scopes import DESK, REDUCE_ONLY

log = logging.getLogger("ess_tui.engine.levels")


async def apply_levels(store: Any, triggers: list[Any], *, actor: str) -> str | None:
    """Evaluate the reduce-only triggers; latch the desk reduce-only on the first that fires.
    Returns the reason latched, or None."""
    latch_scope = getattr(store, "latch_scope", None)
    if not triggers or latch_scope is None:
        return None
    if any(x.scope == DESK for x in await store.active_latches()):
        return None  # already reduce-only (a latch only escalates; the halt is the evaluators')
    for trigger in triggers:
        evaluation = await evaluate_any(trigger)
        if evaluation.error is None and evaluation.triggered:
            reason = f"reduce-only: {evaluation.reason or evaluation.name}"
            await latch_scope(DESK, REDUCE_ONLY, reason, actor=actor,
                              details={"source": evaluation.name, "reading": evaluation.reading})
            log.warning("desk latched reduce-only: %s", reason)
            return reason
    return None
