"""Small pieces the SQLite store's modules share: SQL texts, time text, rows to records."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ess_tui.engine.audit_chain import ChainRow
from ess_tui.engine.state import ESSStatus, as_utc, clean_text, utcnow
from ess_tui.engine.store import AuditRecord
from ess_tui.store.schema import EMERGENCY_KEY

LAST_AUDIT_SQL = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
INSERT_AUDIT_SQL = (
    "INSERT INTO audit (seq, at, action, actor, reason, details, prev_hash, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
AUDIT_HEAD_SQL = "UPDATE meta SET value = ? WHERE key = 'audit_head_seq'"
AUDIT_MAC_SQL = "INSERT OR REPLACE INTO meta (key, value) VALUES ('audit_head_mac', ?)"
UPSERT_POLICY_SQL = (
    "INSERT INTO policy (key, value, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
AUDIT_COLUMNS = "seq, at, action, actor, reason, details, prev_hash, hash"


def iso(value: datetime) -> str:
    return as_utc(value).isoformat(timespec="microseconds")


def parse_time(text: str | None) -> datetime | None:
    return as_utc(datetime.fromisoformat(text)) if text else None


def with_details(details: Mapping[str, Any] | Any | None, **ours: Any) -> dict[str, Any]:
    """The caller's details with ours on top (ours win on a name clash)."""
    if details is None:
        base: dict[str, Any] = {}
    elif isinstance(details, Mapping):
        base = dict(details)
    else:
        base = {"details": details}
    base.update(ours)
    return base


def policy_json(key: str, value: Any) -> str:
    """Validate a policy write from outside latch/reset and return its JSON text."""
    if not isinstance(key, str) or not key.strip() or len(key) > 200:
        raise ValueError("policy key must be a non-empty text of at most 200 characters")
    if key == EMERGENCY_KEY:
        raise ValueError(
            "the 'emergency_stop' policy key is written only by latch and reset: nothing may "
            "un-latch the ESS by writing it (use an audited reset)"
        )
    if not isinstance(value, Mapping):
        raise ValueError(f"policy value for {key!r} must be a dict, not {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"policy value for {key!r} is not plain JSON: {exc}") from exc


def fail_closed_policy(why: str) -> dict[str, Any]:
    """The ``emergency_stop`` value given when the real one cannot be read: latched."""
    return {
        "active": True,
        "status": ESSStatus.ACTIVE.value,
        "reason": clean_text(f"ESS state unavailable: {why}"),
        "timestamp": utcnow().isoformat(),
        "activation_count": 0,
        "auto_recover": False,
        "unavailable": True,
    }


def record(row: ChainRow) -> AuditRecord:
    return AuditRecord(
        seq=row.seq, at=parse_time(row.at) or datetime.fromtimestamp(0, timezone.utc),
        action=row.action, actor=row.actor, reason=row.reason, details=row.details,
        prev_hash=row.prev_hash, hash=row.hash,
    )


def chain_row(raw: tuple[Any, ...]) -> ChainRow:
    seq, at, action, actor, reason, details, prev_hash, digest = raw
    try:
        parsed = json.loads(details)
        if not isinstance(parsed, dict):
            parsed = {"unreadable": str(details)[:200]}
    except (TypeError, ValueError):
        parsed = {"unreadable": str(details)[:200]}
    return ChainRow(int(seq), str(at), str(action), str(actor), reason, parsed,
                    str(prev_hash), str(digest))
