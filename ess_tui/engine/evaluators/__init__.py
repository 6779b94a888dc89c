"""The evaluators: the seed's protocol and its five built-in trigger conditions."""

from __future__ import annotations

from ess_tui.engine.evaluators.base import (
    BaseEvaluator,
    EmergencyConditionEvaluator,
    EvaluatorFault,
    add_unbound_wake,
    evaluate_any,
)
from ess_tui.engine.evaluators.datafeed import DataFeedEmergencyEvaluator
from ess_tui.engine.evaluators.drawdown import DrawdownEmergencyEvaluator
from ess_tui.engine.evaluators.execution import ExecutionErrorEmergencyEvaluator
from ess_tui.engine.evaluators.health import SystemHealthEmergencyEvaluator
from ess_tui.engine.evaluators.manual import ManualTriggerEmergencyEvaluator

__all__ = [
    "BaseEvaluator",
    "DataFeedEmergencyEvaluator",
    "DrawdownEmergencyEvaluator",
    "EmergencyConditionEvaluator",
    "EvaluatorFault",
    "ExecutionErrorEmergencyEvaluator",
    "ManualTriggerEmergencyEvaluator",
    "SystemHealthEmergencyEvaluator",
    "add_unbound_wake",
    "evaluate_any",
]
