"""The guided reset's steps, its attestations, and how it reads the activation's audit rows."""

from __future__ import annotations

from ess_tui.engine.store import AuditRecord

CONFIRM_WORD = "RESET"

STEPS: tuple[tuple[str, str], ...] = (
    ("review", "What happened"),
    ("checks", "Live checks"),
    ("attest", "Attestation"),
    ("operator", "Operator"),
    ("confirm", "Confirm"),
)

ATTESTATIONS: tuple[tuple[str, str], ...] = (
    ("root_cause", "I found the root cause of this activation"),
    ("fix_in_place", "A fix (or a decision not to fix, with reason) is in place"),
    ("paper_checked", "I checked the fix on paper before resuming live trading"),
)


def activation_timeline(rows: list[AuditRecord]) -> list[AuditRecord]:
    """Audit rows of the current activation, oldest first (from the newest ``activate`` row on)."""
    timeline: list[AuditRecord] = []
    for row in rows:  # newest first
        timeline.append(row)
        if row.action in ("activate", "latch", "latched"):
            break
    return list(reversed(timeline))


def describe_row(row: AuditRecord) -> str:
    """One line for an audit row: its reason, or its most telling details."""
    if row.reason:
        return row.reason
    d = row.details or {}
    if "orders_canceled" in d or "positions_closed" in d:
        flat = {True: "flat", False: "NOT flat", None: "flat unknown"}.get(d.get("flat"), "")
        return (f"cancelled {d.get('orders_canceled', 0)} orders, closed "
                f"{d.get('positions_closed', 0)} positions, {flat}")
    if "step" in d:
        return f"step {d['step']}"
    if "drill" in d:
        return f"drill {d['drill']}"
    return ", ".join(f"{k}={v}" for k, v in list(d.items())[:3])
