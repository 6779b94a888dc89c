"""Small pieces the SQLite store's modules share: SQL texts, time text, rows to records."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ess_tui.engine.audit_chain import (
    ChainRow,
    chain_row,  # noqa: F401 - re-exported for the store's modules
    )
from ess_tui.engine.policy_keys import policy_json  # noqa: F401 - re-exported for the store's modules
from ess_tui.engine.state import ESSStatus, as_utc, clean_text, utcnow
from ess_tui.engine.store import AuditRecord

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
