"""The ESS's data: latch state, evaluations, bands and the events it publishes.

Everything here is plain data with no I/O, shared by the engine, the store, the gate and the
control room. The seed's names (``ESSStatus``, ``EmergencyState``, ``EmergencyStopEvent``,
``EmergencyResetEvent``) keep the seed's shape; the rest is ess-tui's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

# Re-exported: these lived here before engine/text.py; importers may use either.
from ess_tui.engine.text import MAX_TEXT, as_utc, clean_text, os_user, utcnow  # noqa: F401

#: Proximity at or above which a gauge is in the warning band.
WARN_PROXIMITY = 0.8


class ESSStatus(str, Enum):
    """The seed's two states: ACTIVE means the emergency stop is latched."""

    ACTIVE = "active"
    INACTIVE = "inactive"


@dataclass
class EmergencyState:
    """The latch as the seed describes it, plus when and by whom it was last reset."""

    status: ESSStatus = ESSStatus.INACTIVE
    reason: str | None = None
    timestamp: datetime | None = None
    activation_count: int = 0
    last_reset_by: str | None = None
    last_reset_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status is ESSStatus.ACTIVE

    def to_policy(self) -> dict[str, Any]:
        """The seed's ``emergency_stop`` policy value. ``auto_recover`` is always false."""
        return {
            "active": self.active,
            "status": self.status.value,
            "reason": self.reason,
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
            "activation_count": self.activation_count,
            "auto_recover": False,
        }

    @classmethod
    def from_policy(cls, value: dict[str, Any] | None) -> EmergencyState:
        """Read the seed's policy value back. Anything unreadable is an error, never "inactive"."""
        if not value:
            return cls()
        if not isinstance(value, dict):
            raise ValueError(f"emergency_stop policy is not an object: {value!r:.80}")
        active = bool(value.get("active"))
        ts = value.get("timestamp")
        return cls(
            status=ESSStatus.ACTIVE if active else ESSStatus.INACTIVE,
            reason=value.get("reason"),
            timestamp=as_utc(datetime.fromisoformat(ts)) if ts else None,
            activation_count=int(value.get("activation_count") or 0),
        )


class Band(str, Enum):
    """How close a trigger is to firing, as a gauge shows it."""

    OK = "ok"
    WARN = "warn"
    FIRE = "fire"
    ERROR = "error"
    UNKNOWN = "unknown"


def clamp_proximity(value: float | None) -> float | None:
    """Proximity in [0, 1]; NaN or None is unknown."""
    if value is None or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return max(0.0, min(1.0, float(value)))


@dataclass(frozen=True)
class Evaluation:
    """One evaluator's answer at one moment: what the gauges draw and the runner acts on."""

    name: str
    triggered: bool
    reason: str | None = None
    proximity: float | None = None
    reading: str = ""
    checked_at: datetime = field(default_factory=utcnow)
    error: str | None = None
    duration_ms: float = 0.0

    @property
    def band(self) -> Band:
        if self.error is not None:
            return Band.ERROR
        if self.triggered:
            return Band.FIRE
        if self.proximity is None:
            return Band.UNKNOWN
        if self.proximity >= 1.0:
            return Band.FIRE
        if self.proximity >= WARN_PROXIMITY:
            return Band.WARN
        return Band.OK


# --- The seed's events: the only things a user's event_bus ever receives. -----------------------


@dataclass
class EmergencyStopEvent:
    """Published once per activation, after flattening has been attempted."""

    reason: str
    timestamp: datetime
    positions_closed: int = 0
    orders_canceled: int = 0
    type: str = "emergency.stop"


@dataclass
class EmergencyResetEvent:
    """Published once per reset."""

    timestamp: datetime
    reset_by: str
    type: str = "emergency.reset"


# --- ess-tui's own notifications, on the internal bus. ------------------------------------------


@dataclass(frozen=True)
class LatchedEvent:
    """The latch is durable. Published before any venue call."""

    state: EmergencyState
    new: bool
    type: str = "emergency.latched"


@dataclass(frozen=True)
class FlattenProgressEvent:
    """One step of flattening: a cancel, a close, a verify, a retry or a failure."""

    step: str
    message: str
    attempt: int = 1
    error: str | None = None
    timestamp: datetime = field(default_factory=utcnow)
    type: str = "emergency.flatten"


@dataclass(frozen=True)
class FlattenReport:
    """What a flatten achieved: counts, whether the venue is verified flat, what is still open."""

    orders_canceled: int = 0
    positions_closed: int = 0
    flat: bool | None = None  # None: the venue cannot say (seed-shaped exchange)
    attempts: int = 0
    remaining_positions: tuple[str, ...] = ()
    remaining_orders: tuple[str, ...] = ()
    last_error: str | None = None
    fatal: bool = False  # e.g. API key rejected: retrying cannot help
    venue_calls: int = 0
    fenced: bool = False  # stopped by the fence: this runner may no longer act


@dataclass(frozen=True)
class FlattenDoneEvent:
    report: FlattenReport
    timestamp: datetime = field(default_factory=utcnow)
    type: str = "emergency.flattened"


@dataclass(frozen=True)
class EvaluationsEvent:
    """A runner cycle finished; ``evaluations`` is in evaluator list order."""

    evaluations: tuple[Evaluation, ...]
    timestamp: datetime = field(default_factory=utcnow)
    type: str = "ess.evaluations"


@dataclass(frozen=True)
class ResetEvent:
    state: EmergencyState
    reset_by: str
    note: str | None = None
    type: str = "emergency.reset"


@dataclass(frozen=True)
class WarningEvent:
    """Something an operator should see (a store fault, a venue error, an evaluator fault)."""

    source: str
    message: str
    timestamp: datetime = field(default_factory=utcnow)
    type: str = "ess.warning"
