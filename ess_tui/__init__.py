"""ess-tui: an Emergency Stop System for trading desks, with a terminal control room.

The seed's Python API, with ``ess_tui`` as the import path::

    from ess_tui import (
        EmergencyStopSystem, EmergencyStopController,
        DrawdownEmergencyEvaluator, SystemHealthEmergencyEvaluator,
    )

Names are loaded on first use, so ``import ess_tui.gate`` in a trading process stays cheap and
never pulls in the engine, ccxt or Textual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "EmergencyStopSystem": "ess_tui.engine.system",
    "EmergencyStopController": "ess_tui.engine.controller",
    "EmergencyState": "ess_tui.engine.state",
    "ESSStatus": "ess_tui.engine.state",
    "Evaluation": "ess_tui.engine.state",
    "Band": "ess_tui.engine.state",
    "EmergencyStopEvent": "ess_tui.engine.state",
    "EmergencyResetEvent": "ess_tui.engine.state",
    "EmergencyConditionEvaluator": "ess_tui.engine.evaluators",
    "DrawdownEmergencyEvaluator": "ess_tui.engine.evaluators",
    "SystemHealthEmergencyEvaluator": "ess_tui.engine.evaluators",
    "ExecutionErrorEmergencyEvaluator": "ess_tui.engine.evaluators",
    "DataFeedEmergencyEvaluator": "ess_tui.engine.evaluators",
    "ManualTriggerEmergencyEvaluator": "ess_tui.engine.evaluators",
    "EventBus": "ess_tui.engine.bus",
    "NotLatchedError": "ess_tui.engine.store",
    "StoreUnavailable": "ess_tui.engine.store",
    "SQLiteStore": "ess_tui.store.sqlite",
    "MemoryPolicyStore": "ess_tui.engine.seed_store",
    "PaperExchange": "ess_tui.venues.paper.exchange",
    "TradeGate": "ess_tui.gate",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ess_tui' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from ess_tui.engine.bus import EventBus
    from ess_tui.engine.controller import EmergencyStopController
    from ess_tui.engine.evaluators import (
        DataFeedEmergencyEvaluator,
        DrawdownEmergencyEvaluator,
        EmergencyConditionEvaluator,
        ExecutionErrorEmergencyEvaluator,
        ManualTriggerEmergencyEvaluator,
        SystemHealthEmergencyEvaluator,
    )
    from ess_tui.engine.state import (
        Band,
        EmergencyResetEvent,
        EmergencyState,
        EmergencyStopEvent,
        ESSStatus,
        Evaluation,
    )
    from ess_tui.engine.store import NotLatchedError, StoreUnavailable
    from ess_tui.gate import TradeGate
    from ess_tui.engine.seed_store import MemoryPolicyStore
    from ess_tui.store.sqlite import SQLiteStore
    from ess_tui.venues.paper.exchange import PaperExchange
