"""The guided reset's steps, its attestations, and how it reads the activation's audit rows."""

from __future__ import annotations

from rich.table import Table

from ess_tui.engine.store import AuditRecord
from ess_tui.tui import format as fmt

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


def timeline_table(timeline: list[AuditRecord]) -> Table:
    """The activation's audit rows as a table (the newest 14)."""
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False, expand=True)
    table.add_column("Time (UTC)", no_wrap=True, width=19)
    table.add_column("Action", no_wrap=True, width=16)
    table.add_column("Who", no_wrap=True, width=16)
    table.add_column("What", ratio=1)
    for row in timeline[-14:]:
        table.add_row(fmt.date_time(row.at)[:19], row.action, row.actor, describe_row(row))
    return table
