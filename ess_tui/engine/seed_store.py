"""Running the ESS on a seed-shaped policy store (``get(key)`` / ``set(key, dict)``).

``SeedPolicyStoreAdapter`` gives such a store the engine's ``StateStore`` protocol: the latch is
the seed's ``emergency_stop`` key (written before anything else happens), the audit trail is kept
in memory with the same hash chain as the SQLite store, and the runner lease is always granted
(one process, one runner). ``as_state_store`` picks the adapter only when it is needed, and
``MemoryPolicyStore`` is a dict-backed seed policy store for examples and tests.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ess_tui.engine import audit_chain
from ess_tui.engine.aio import call
from ess_tui.engine.audit_chain import MODE_HMAC, MODE_SHA256, ChainRow
from ess_tui.engine.policy_keys import EMERGENCY_KEY, policy_json
from ess_tui.engine.reset_policy import ResetRefused
from ess_tui.engine.state import EmergencyState, ESSStatus
from ess_tui.engine.store import (
    AuditRecord,
    AuditVerification,
    FencedOut,
    LatchResult,
    LeaseInfo,
    NotLatchedError,
    ResetGuard,
    StaleResetError,
    StateStore,
    StoreError,
    StoreUnavailable,
    entry_actor,
    entry_at,
    stale_reset_reason,
)
from ess_tui.engine.text import clean_text, os_user, utcnow


class MemoryPolicyStore:
    """A seed-shaped policy store backed by a dict: sync ``get(key) -> dict`` and ``set``.

    ``writes`` records every ``set`` in order, so a test can see what was written and when.
    """

    def __init__(self, initial: Mapping[str, dict[str, Any]] | None = None) -> None:
        self._data: dict[str, dict[str, Any]] = copy.deepcopy(dict(initial or {}))
        self.writes: list[tuple[str, dict[str, Any]]] = []

    def get(self, key: str) -> dict[str, Any]:
        return copy.deepcopy(self._data.get(key, {}))

    def set(self, key: str, value: dict[str, Any]) -> None:
        stored = copy.deepcopy(dict(value))
        self._data[key] = stored
        self.writes.append((key, copy.deepcopy(stored)))

    def __repr__(self) -> str:
        return f"MemoryPolicyStore(keys={sorted(self._data)})"


class SeedPolicyStoreAdapter:
    """The ``StateStore`` protocol over a seed-shaped policy store (sync or async get/set)."""

    def __init__(self, policy_store: Any, *, audit_key: bytes | None = None) -> None:
        self.policy_store = policy_store
        self._key = audit_key if audit_key is not None else audit_chain.audit_key_from_env()
        self._mode = MODE_HMAC if self._key else MODE_SHA256
        self._rows: list[ChainRow] = []
        self._lock = asyncio.Lock()
        self._lease: LeaseInfo | None = None
        self._epoch = 0
        self._last_reset_by: str | None = None
        self._last_reset_at: datetime | None = None
        self._change_seq = 0
        #: Milliseconds the last write of the ``emergency_stop`` key took.
        self.write_latency_ms: float | None = None
        self.audit_warning: str | None = None

    def __repr__(self) -> str:
        return f"SeedPolicyStoreAdapter({self.policy_store!r})"

    # --- helpers -----------------------------------------------------------------------------

    async def _read(self) -> EmergencyState:
        try:
            value = await call(self.policy_store, "get", EMERGENCY_KEY)
            state = EmergencyState.from_policy(value)
        except Exception as exc:  # noqa: BLE001 - unreadable is never "inactive"
            raise StoreUnavailable(
                f"policy store {type(self.policy_store).__name__}.get('emergency_stop') failed: "
                f"{type(exc).__name__}: {clean_text(exc, limit=200)}"
            ) from exc
        state.last_reset_by = self._last_reset_by
        state.last_reset_at = self._last_reset_at
        return state

    async def _write(self, state: EmergencyState) -> None:
        started = time.perf_counter()
        try:
            await call(self.policy_store, "set", EMERGENCY_KEY, state.to_policy())
        except Exception as exc:  # noqa: BLE001
            raise StoreError(
                f"policy store {type(self.policy_store).__name__}.set('emergency_stop') failed: "
                f"{type(exc).__name__}: {clean_text(exc, limit=200)}"
            ) from exc
        self.write_latency_ms = (time.perf_counter() - started) * 1000
        self._change_seq += 1

    def _append(self, *, at: datetime, action: str, actor: str, reason: str | None,
                details: Mapping[str, Any] | None) -> ChainRow:
        last = (self._rows[-1].seq, self._rows[-1].hash) if self._rows else None
        row = audit_chain.next_row(last, at=at, action=action, actor=actor, reason=reason,
                                   details=details, key=self._key)
        self._rows.append(row)
        return row

    @staticmethod
    def _record(row: ChainRow) -> AuditRecord:
        return AuditRecord(row.seq, datetime.fromisoformat(row.at), row.action, row.actor,
                           row.reason, dict(row.details), row.prev_hash, row.hash)

    def _last_flatten(self) -> dict[str, Any] | None:
        """The newest flatten outcome since the newest activation (the guard's second argument)."""
        for row in reversed(self._rows):
            if row.action in ("flattened", "flatten_failed"):
                return {"action": row.action, **row.details}
            if row.action == "activate":
                return None
        return None

    # --- StateStore --------------------------------------------------------------------------

    async def load_state(self) -> EmergencyState:
        return await self._read()

    async def change_seq(self) -> int:
        return self._change_seq

    async def latch(
        self, reason: str, *, at: datetime | None = None, actor: str = "ess",
        details: dict[str, Any] | None = None,
    ) -> LatchResult:
        # Text arrives cleaned: the controller makes operator text safe where it enters.
        when = entry_at(at)
        why = reason or "(no reason given)"
        who = entry_actor(actor)
        extra = dict(details) if isinstance(details, Mapping) else {}
        async with self._lock:
            try:
                state = await self._read()
            except StoreUnavailable as exc:
                # Cannot read the old value: latch anyway, the count is unknown.
                state = EmergencyState()
                extra["state_read_error"] = str(exc)
            if state.active:
                self._append(at=when, action="extra_trigger", actor=who, reason=why,
                             details={**extra, "latched_reason": state.reason,
                                      "activation_count": state.activation_count})
                return LatchResult(state, False)
            new = EmergencyState(
                status=ESSStatus.ACTIVE, reason=why, timestamp=when,
                activation_count=state.activation_count + 1,
                last_reset_by=self._last_reset_by, last_reset_at=self._last_reset_at,
            )
            await self._write(new)
            self._append(at=when, action="activate", actor=who, reason=why,
                         details={**extra, "activation_count": new.activation_count})
            return LatchResult(new, True)

    async def unlatch(
        self, reset_by: str, *, at: datetime | None = None, note: str | None = None,
        details: dict[str, Any] | None = None, expected_activation: int | None = None,
        guard: ResetGuard | None = None,
    ) -> EmergencyState:
        when = entry_at(at)
        who = entry_actor(reset_by)
        why = note or None
        extra = dict(details) if isinstance(details, Mapping) else {}
        async with self._lock:
            state = await self._read()
            if not state.active:
                self._append(at=when, action="reset_refused", actor=who, reason="not latched",
                             details={**extra, "note": why})
                raise NotLatchedError(
                    "the ESS is not latched: there is nothing to reset (the attempt was audited)"
                )
            if expected_activation is not None and expected_activation != state.activation_count:
                why_stale = stale_reset_reason(state.activation_count, expected_activation)
                self._append(at=when, action="reset_refused", actor=who, reason=why_stale,
                             details={**extra, "note": why})
                raise StaleResetError(why_stale)
            if guard is not None:
                # The reset policy, on what the store holds now, under the same lock as the
                # write below: nothing can latch anew or record a flatten in between.
                refused = guard(state, self._last_flatten())
                if refused is not None:
                    self._append(at=when, action="reset_refused", actor=who, reason=refused,
                                 details={**extra, "note": why,
                                          "activation_count": state.activation_count})
                    raise ResetRefused(refused)
            new = EmergencyState(
                status=ESSStatus.INACTIVE, reason=None, timestamp=when,
                activation_count=state.activation_count, last_reset_by=who, last_reset_at=when,
            )
            await self._write(new)
            self._last_reset_by, self._last_reset_at = who, when
            self._append(at=when, action="reset", actor=who, reason=why,
                         details={**extra, "previous_reason": state.reason,
                                  "latched_since": state.timestamp,
                                  "activation_count": state.activation_count})
            return new

    async def audit(
        self, action: str, *, actor: str, reason: str | None = None,
        details: dict[str, Any] | None = None, at: datetime | None = None,
    ) -> AuditRecord:
        when = entry_at(at)
        return self._record(self._append(at=when, action=action, actor=actor, reason=reason,
                                         details=details))

    async def read_audit(
        self, limit: int | None = None, *, newest_first: bool = True
    ) -> list[AuditRecord]:
        if limit is None:
            rows = self._rows
        else:
            count = max(0, int(limit))
            rows = self._rows[max(0, len(self._rows) - count):] if count else []
        records = [self._record(r) for r in rows]
        return records[::-1] if newest_first else records

    async def verify_audit(self) -> AuditVerification:
        head = self._rows[-1].seq if self._rows else 0
        return audit_chain.verify_chain(self._rows, mode=self._mode, key=self._key, head_seq=head)

    async def get_policy(self, key: str) -> dict[str, Any] | None:
        if key == EMERGENCY_KEY:
            return (await self._read()).to_policy()
        try:
            value = await call(self.policy_store, "get", key)
        except Exception as exc:  # noqa: BLE001
            raise StoreUnavailable(f"policy store get({key!r}) failed: {exc}") from exc
        return dict(value) if value else None

    async def set_policy(
        self, key: str, value: dict[str, Any], *, audit: bool = False, actor: str | None = None
    ) -> None:
        policy_json(key, value)  # the rule both stores apply: never the emergency_stop key
        try:
            await call(self.policy_store, "set", key, dict(value))
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"policy store set({key!r}) failed: {exc}") from exc
        if audit:
            self._append(at=utcnow(), action="policy_set", actor=actor or os_user(),
                         reason=None, details={"key": key, "value": value})

    async def acquire_lease(
        self, holder: str, *, ttl_sec: float, at: datetime | None = None
    ) -> LeaseInfo:
        """Always granted: a seed policy store has no notion of competing runners."""
        when = entry_at(at)
        who = entry_actor(holder)
        expires = when + timedelta(seconds=float(ttl_sec))
        previous = self._lease
        same = previous is not None and previous.holder == who
        acquired = previous.acquired_at if same else when
        if not same:
            self._epoch += 1  # grows with every change of holder, a release in between too
        beat = previous.beat + 1 if same and previous is not None else 0
        self._lease = LeaseInfo(who, acquired, when, expires, epoch=self._epoch, beat=beat)
        if previous is None or previous.holder != who:
            self._append(at=when, action="lease_acquired", actor=who, reason=None,
                         details={"previous_holder": previous.holder if previous else None,
                                  "ttl_sec": float(ttl_sec)})
        return self._lease

    async def read_lease(self) -> LeaseInfo | None:
        return self._lease

    async def check_fence(self, holder: str, epoch: int, activation: int | None) -> None:
        """``FencedStore``: raise :class:`FencedOut` unless ``holder`` holds the lease at
        ``epoch`` and ``activation`` (when given) is still the latched one."""
        lease = self._lease
        if lease is None or lease.holder != holder or lease.epoch != epoch:
            raise FencedOut(
                f"runner {holder} no longer holds the lease at epoch {epoch} "
                f"(held by {lease.holder if lease else 'nobody'}"
                f"{f' at epoch {lease.epoch}' if lease else ''})"
            )
        if activation is not None:
            state = await self._read()
            if not state.active or state.activation_count != activation:
                raise FencedOut(f"activation #{activation} is no longer the latched one")

    async def release_lease(self, holder: str) -> None:
        if self._lease is not None and self._lease.holder == clean_text(holder, limit=200):
            self._lease = None

    async def close(self) -> None:
        return None


def _implements_state_store(obj: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(obj, "latch", None))


def as_state_store(obj: Any) -> StateStore:
    """``obj`` itself if it already is a ``StateStore`` (has an async ``latch``), else a
    ``SeedPolicyStoreAdapter`` around a seed-shaped policy store."""
    if _implements_state_store(obj):
        return obj  # type: ignore[no-any-return]
    if callable(getattr(obj, "get", None)) and callable(getattr(obj, "set", None)):
        return SeedPolicyStoreAdapter(obj)
    raise TypeError(
        f"policy_store must be a StateStore (e.g. SQLiteStore) or have get(key) and "
        f"set(key, dict) methods; got {type(obj).__name__}"
    )
