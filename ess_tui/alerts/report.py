"""The report the spec asks for ("audit: email report with details") and the daily digest.

Both are built from the audit trail and carry its head — sequence number and hash — so the trail
is anchored outside the database: a later truncation or rewrite shows against mail already sent
(``ess-tui audit --verify --anchor SEQ:HASH``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ess_tui.engine.store import AuditRecord

#: Audit actions a report's timeline shows.
TIMELINE = {"activate", "extra_trigger", "flattened", "flatten_failed", "reflatten", "reset",
            "reset_refused", "reset_abandoned", "lease_acquired", "drill"}


def head(rows: list[AuditRecord]) -> str | None:
    """``SEQ:HASH`` of the newest row (rows newest first)."""
    return f"{rows[0].seq}:{rows[0].hash}" if rows else None


def reset_report(rows: list[AuditRecord], activation: int) -> dict[str, Any] | None:
    """The report of ``activation`` from the trail (newest first), or None if its rows are gone."""
    start = next((r for r in rows if r.action == "activate"
                  and r.details.get("activation_count") == activation), None)
    if start is None:
        return None
    span = sorted((r for r in rows if r.seq >= start.seq), key=lambda r: r.seq)
    reset = next((r for r in span if r.action == "reset"), None)
    flat = [r for r in span if r.action in ("flattened", "flatten_failed")]
    last = flat[-1] if flat else None
    flat_at = next((r.at for r in flat if r.action == "flattened"), None)
    timeline = [f"{r.at:%H:%M:%S}Z #{r.seq} {r.action} by {r.actor}" + (f": {r.reason}" if r.reason else "")
                for r in span if r.action in TIMELINE][:40]
    info = reset.details if reset else {}
    return {
        "activation": activation, "reason": start.reason, "since": start.at.isoformat(),
        "reading": start.details.get("reading"), "source": start.details.get("source"),
        "orders_canceled": (last.details.get("orders_canceled") if last else None),
        "positions_closed": (last.details.get("positions_closed") if last else None),
        "flat": last.details.get("flat") if last else None,
        "time_to_flat_sec": (flat_at - start.at).total_seconds() if flat_at else None,
        "who": reset.actor if reset else None, "note": reset.reason if reset else None,
        "overrides": {k: info[k] for k in ("override", "approver") if info.get(k)},
        "timeline": timeline, "audit_head": head(rows),
    }


def digest(rows: list[AuditRecord], pending: list[Any], *, day_end: datetime) -> dict[str, Any]:
    """Counts over the 24 h before ``day_end`` (rows newest first; ``pending`` = outbox events)."""
    since = day_end - timedelta(days=1)
    day = [r for r in rows if since <= r.at < day_end]
    count = lambda *actions: sum(1 for r in day if r.action in actions)  # noqa: E731
    warnings = sum(1 for e in pending if e.kind == "trigger_warn" and since <= e.created_at < day_end)
    faults = sum(1 for e in pending if e.kind in ("evaluator_fault", "runner_fault", "store_unavailable")
                 and since <= e.created_at < day_end)
    return {"day": since.date().isoformat(), "activations": count("activate"),
            "resets": count("reset"), "drills": count("drill", "alert_drill"),
            "warnings": warnings, "faults": faults, "audit_head": head(rows),
            "message": (f"{count('activate')} activations, {warnings} warnings, "
                        f"{count('drill', 'alert_drill')} drills, {faults} faults")}
