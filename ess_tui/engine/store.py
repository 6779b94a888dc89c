"""The store protocol the engine keeps its latch, policy keys, audit trail and lease in.

The engine reaches its store only through :class:`StateStore`, so that something other than the
SQLite file (``ess_tui.store.sqlite.SQLiteStore``) can stand in for it, e.g. a shared database
server. Nothing here is SQLite-specific.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ess_tui.engine.state import EmergencyState
from ess_tui.engine.text import as_utc, clean_text, os_user, utcnow


class StoreError(Exception):
    """The store could not be read or written. Callers treat the ESS as latched (fail closed)."""


class StoreUnavailable(StoreError):
    """The store cannot be read at all: corrupt, locked, unreadable, or from a newer version."""


class NotLatchedError(Exception):
    """A reset was asked for while the ESS is armed: there is nothing to reset."""


class StaleResetError(Exception):
    """A reset reviewed one activation, but another is latched now: it is refused (audited)."""


class FencedOut(StoreError):
    """This runner may no longer act on the venue: it lost the lease (a higher epoch holds it), or
    the activation it is flattening is no longer the latched one. Nothing may be sent."""


def entry_at(at: datetime | None) -> datetime:
    """When a store entry happened: ``at`` in UTC, or now."""
    return as_utc(at) if at is not None else utcnow()


def entry_actor(name: str | None) -> str:
    """Who an entry names: the given name made safe and bounded, or the OS user."""
    return (clean_text(name, limit=200) if name else "") or os_user()


def stale_reset_reason(latched: int, reviewed: int) -> str:
    """Why a reset that reviewed activation ``reviewed`` is refused while ``latched`` is latched."""
    return (
        f"activation #{latched} is latched now, but this reset reviewed #{reviewed}: "
        "review the new activation first"
    )


@dataclass(frozen=True)
class LatchResult:
    """What :meth:`StateStore.latch` did: ``new`` is False when the ESS was already latched."""

    state: EmergencyState
    new: bool


@dataclass(frozen=True)
class AuditRecord:
    """One row of the append-only audit trail."""

    seq: int
    at: datetime
    action: str
    actor: str
    reason: str | None
    details: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = ""
    hash: str = ""


@dataclass(frozen=True)
class AuditVerification:
    """Result of walking the audit chain. ``first_bad_seq`` names where it breaks."""

    ok: bool
    rows: int
    first_bad_seq: int | None = None
    problem: str | None = None
    #: True when the trail was verified under the audit key (HMAC), rows and keyed head alike.
    keyed: bool = False
    #: The latch as replayed from the trail: (active, activation_count, reason); None if unknown.
    replayed: tuple[bool, int, str | None] | None = None
    #: Whether the state row agrees with the replayed trail (None when not compared).
    state_matches: bool | None = None


@dataclass(frozen=True)
class LeaseInfo:
    """The runner lease. ``epoch`` grows by one with every change of holder (the fencing token);
    ``beat`` grows with every renewal, so a standby judges expiry by how long *its own* monotonic
    clock has seen the beat unchanged, never by comparing two hosts' wall clocks."""

    holder: str
    acquired_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    epoch: int = 0
    beat: int = 0


@dataclass(frozen=True)
class OutboxEvent:
    """One alert-worthy event waiting in the store's outbox (see :class:`Outbox`).

    ``key`` is the idempotency key, unique per event: ``"latched:3"`` for activation 3's latch,
    ``"reset:3"``, ``"flattened:3"``, ``"warn:daily_loss:<ts>"`` ... A second enqueue with the same
    key is a no-op. ``level`` is ``info`` | ``warning`` | ``critical``."""

    id: int
    kind: str
    level: str
    key: str
    created_at: datetime
    payload: dict[str, Any] = field(default_factory=dict)
    activation: int | None = None
    audit_seq: int | None = None


@dataclass(frozen=True)
class SinkDelivery:
    """Delivery state of one outbox event to one sink."""

    event_id: int
    sink: str
    attempts: int
    delivered_at: datetime | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = None


@runtime_checkable
class Outbox(Protocol):
    """The transactional outbox. ``latch`` and ``unlatch`` enqueue their ``latched`` / ``reset``
    events in the same transaction as the state change; everything else is enqueued right after
    its cause. Delivery is at-least-once, tracked per (event, sink)."""

    async def enqueue(
        self, kind: str, *, level: str, key: str, payload: dict[str, Any],
        activation: int | None = None, at: datetime | None = None,
    ) -> int | None:
        """Append an event; returns its id, or None when ``key`` is already in the outbox."""
        ...

    async def pending(self, sink: str, *, now: datetime, limit: int = 100) -> list[OutboxEvent]:
        """Events not yet delivered to ``sink`` whose next attempt is due, oldest first."""
        ...

    async def mark_delivered(self, event_id: int, sink: str, *, at: datetime) -> None: ...

    async def mark_failed(
        self, event_id: int, sink: str, *, at: datetime, error: str, next_attempt_at: datetime,
    ) -> None: ...

    async def deliveries(self, sink: str | None = None) -> list[SinkDelivery]:
        """Delivery rows (newest first), for ``ess-tui alerts`` and the control room."""
        ...


#: The reset policy as the store runs it inside the un-latching transaction:
#: ``guard(latched_state, last_flatten_details_or_None) -> refusal reason or None``. Synchronous and
#: pure, so any store (a database thread, a server transaction) can call it at the right moment.
ResetGuard = Callable[[EmergencyState, "dict[str, Any] | None"], "str | None"]


@runtime_checkable
class StateStore(Protocol):
    """Durable home of the latch. Every write that changes the latch is one atomic transaction
    that also appends its audit row and updates the ``emergency_stop`` policy key."""

    async def load_state(self) -> EmergencyState:
        """The latch as stored. Raises :class:`StoreUnavailable` if it cannot be known."""
        ...

    async def latch(
        self, reason: str, *, at: datetime, actor: str, details: dict[str, Any] | None = None
    ) -> LatchResult:
        """Latch durably (fsync'd) in one transaction with its audit row and policy key.

        If already latched, the stored reason and count are kept, an ``extra_trigger`` audit row is
        appended and ``new`` is False.
        """
        ...

    async def unlatch(
        self, reset_by: str, *, at: datetime, note: str | None = None,
        details: dict[str, Any] | None = None, expected_activation: int | None = None,
        guard: ResetGuard | None = None,
    ) -> EmergencyState:
        """Reset durably with its audit row. Raises :class:`NotLatchedError` when not latched,
        and :class:`StaleResetError` when ``expected_activation`` is not the one latched now
        (both audit the refused attempt).

        ``guard`` is the reset policy, run *inside* the un-latching transaction on what the store
        holds at that moment (the latched state, and the newest flatten outcome of that activation
        from the audit trail, or None). If it returns a reason, the store audits ``reset_refused``
        with it and raises :class:`~ess_tui.engine.reset_policy.ResetRefused`; nothing un-latches."""
        ...

    async def audit(
        self, action: str, *, actor: str, reason: str | None = None,
        details: dict[str, Any] | None = None, at: datetime | None = None,
    ) -> AuditRecord:
        """Append one audit row."""
        ...

    async def read_audit(self, limit: int | None = None, *, newest_first: bool = True) -> list[AuditRecord]: ...

    async def verify_audit(self) -> AuditVerification: ...

    async def get_policy(self, key: str) -> dict[str, Any] | None: ...

    async def set_policy(self, key: str, value: dict[str, Any]) -> None: ...

    async def acquire_lease(self, holder: str, *, ttl_sec: float, at: datetime) -> LeaseInfo:
        """Take the runner lease if it is free or expired, renew it if ``holder`` has it.

        Returns the lease as it stands after the attempt: ``.holder == holder`` means the caller
        holds it; otherwise it names who does and until when. Audits a change of holder."""
        ...

    async def read_lease(self) -> LeaseInfo | None: ...

    async def release_lease(self, holder: str) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class FencedStore(Protocol):
    """A store that can fence a runner (every store a lease-holding runner uses)."""

    async def check_fence(self, holder: str, epoch: int, activation: int | None) -> None:
        """Raise :class:`FencedOut` unless ``holder`` holds the live lease at ``epoch`` and (when
        ``activation`` is given) that activation is still the latched one. Called immediately
        before every venue call the runner makes; must be cheap (one indexed read)."""
        ...
