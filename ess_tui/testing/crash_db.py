"""The drills' bystander: read a drill's database without the product's help, and latch it as
``ess-tui activate`` does. Shared by the crash drill and the split-brain drill."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = [
    "FLATTEN_ROWS",
    "DrillFailure",
    "Row",
    "audit_rows",
    "check_rows_kept",
    "flatten_rows_per_runner",
    "latch",
    "lease_holder",
    "lease_row",
    "try_rows",
    "verify_chain",
]

#: ``(seq, action, actor, hash, details)`` of one audit row.
Row = tuple[int, str, str, str, dict[str, Any]]

#: The audit actions a flatten ends with.
FLATTEN_ROWS = ("flattened", "flatten_failed")


class DrillFailure(Exception):
    """A promise was broken (or a step did not happen in time); the message says which."""




def _connect_ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(Path(db).resolve().as_uri() + "?mode=ro", uri=True, timeout=2.0)


def audit_rows(db: Path) -> list[Row]:
    """``(seq, action, actor, hash, details)`` of every audit row, oldest first (read-only)."""
    conn = _connect_ro(db)
    try:
        rows = conn.execute(
            "SELECT seq, action, actor, hash, details FROM audit ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    out = []
    for seq, action, actor, digest, details in rows:
        try:
            parsed = json.loads(details)
        except ValueError:
            parsed = {}
        out.append((int(seq), str(action), str(actor), str(digest), parsed))
    return out


def try_rows(db: Path) -> list[Row]:
    try:
        return audit_rows(db) if db.exists() else []
    except sqlite3.Error:
        return []  # still being created


def lease_holder(db: Path) -> str | None:
    try:
        conn = _connect_ro(db)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT holder FROM lease WHERE name = 'runner'").fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return str(row[0]) if row else None


def check_rows_kept(seen: dict[int, str], rows: list[Row]) -> list[str]:
    """Problems if a row seen earlier is gone or changed, or if seqs are not 1..n without gaps."""
    problems: list[str] = []
    now = {seq: digest for seq, _, _, digest, _ in rows}
    for seq, digest in sorted(seen.items()):
        if seq not in now:
            problems.append(f"audit row {seq} was seen before the kill and is now lost")
        elif now[seq] != digest:
            problems.append(f"audit row {seq} changed after the kill")
    seqs = [r[0] for r in rows]
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"audit seqs are not 1..{len(seqs)} without gaps or duplicates: {seqs[:20]}")
    return problems


def flatten_rows_per_runner(rows: list[Row]) -> Counter[str]:
    """How many flatten results each runner (lease holder) wrote while it held the lease."""
    holder = None
    per_holder: Counter[str] = Counter()
    for _, action, actor, _, _ in rows:
        if action == "lease_acquired":
            holder = actor
        elif action in FLATTEN_ROWS and holder is not None:
            per_holder[holder] += 1
    return per_holder


def verify_chain(db: Path, key: str) -> str | None:
    """None when the chain verifies under ``key``; otherwise what ``audit --verify`` would say."""
    from ess_tui.store.sqlite import SQLiteStore

    async def verify() -> Any:
        store = SQLiteStore(db, create=False, audit_key=key)
        try:
            return await store.verify_audit()
        finally:
            await store.close()

    result = asyncio.run(verify())
    if result.ok:
        return None
    return f"audit chain broken at row {result.first_bad_seq}: {result.problem}"


def latch(db: Path, key: str, reason: str) -> int:
    """Latch as ``ess-tui activate`` does (durable, audited, no venue call). Returns the count."""
    from ess_tui.engine.controller import EmergencyStopController
    from ess_tui.store.sqlite import SQLiteStore

    async def latch() -> int:
        store = SQLiteStore(db, audit_key=key)
        try:
            controller = EmergencyStopController(store=store, acting=False, actor="crash-drill")
            state = await controller.latch(reason, source="crash drill")
            if controller.not_durable:
                raise DrillFailure(f"the latch was not durable: {controller.not_durable}")
            return state.activation_count
        finally:
            await store.close()

    return asyncio.run(latch())



def lease_row(db: Path) -> dict[str, Any] | None:
    """The runner lease row as a dict (holder, epoch, ...), None if there is none or it can't be read."""
    try:
        conn = _connect_ro(db)
    except sqlite3.Error:
        return None
    try:
        cur = conn.execute("SELECT * FROM lease WHERE name = 'runner'")
        row = cur.fetchone()
        names = [d[0] for d in cur.description or ()]
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return dict(zip(names, row)) if row else None
