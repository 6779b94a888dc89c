"""Messages the engine host posts to the control room.

The engine runs on its own thread and event loop; everything it tells the UI arrives as one of
these messages (``post_message`` is thread-safe in Textual). Evaluations are *not* sent one by one:
the host keeps only the newest set and the UI picks it up at most ``tui.refresh_hz`` times a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from textual.message import Message

from ess_tui.engine.state import (
    EmergencyState,
    FlattenProgressEvent,
    FlattenReport,
    WarningEvent,
)


@dataclass
class EngineReady(Message):
    """The engine is built and its loop is running."""

    venue: str
    paper: bool


@dataclass
class EngineFailed(Message):
    """The engine could not be built or crashed. The control room shows STATE UNAVAILABLE."""

    error: str


@dataclass
class Latched(Message):
    """The latch is durable (made here, by the runner, or by another process)."""

    state: EmergencyState
    new: bool


@dataclass
class Reset(Message):
    """The latch was reset (here or by another process)."""

    state: EmergencyState
    reset_by: str
    note: str | None = None


@dataclass
class FlattenProgress(Message):
    """One step of flattening."""

    event: FlattenProgressEvent


@dataclass
class FlattenDone(Message):
    """Flattening ended: flat, or what is still open."""

    report: FlattenReport
    at: datetime


@dataclass
class EngineWarning(Message):
    """Something an operator should see: a store fault, a venue error, an evaluator fault."""

    event: WarningEvent
