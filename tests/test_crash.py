"""Crash at any moment: SIGKILL ``ess-tui headless`` before, during and after flattening.

The drill itself is ``ess_tui/testing/crash.py`` (also behind ``scripts/soak_crash.py --runs N``).
Here: 20 runs in the suite, and proof that the drill's checks catch what they are meant to catch.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys

import pytest

from ess_tui.store.sqlite import SQLiteStore
from ess_tui.testing.crash import (
    PHASES,
    CrashHarness,
    CrashSettings,
    audit_rows,
    check_rows_kept,
    flatten_rows_per_runner,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


@pytest.mark.slow
def test_twenty_crash_runs_keep_every_promise(tmp_path):
    harness = CrashHarness(tmp_path, CrashSettings(timeout=30.0), seed=20251125)
    report = harness.soak(20, parallel=4)
    assert report.failures == [], "\n".join(report.failures)
    assert report.runs == 20
    assert report.kills >= 20 and report.restarts == report.kills
    # Kills landed before, during and after flattening, as observed from the runners' logs and
    # the audit trail (not just as scheduled).
    assert all(report.phases[p] >= 3 for p in PHASES), report.summary()


async def _trail(path, n: int) -> None:
    store = SQLiteStore(path, audit_key=None)
    for i in range(n):
        await store.audit("note", actor="test", reason=f"row {i + 1}")
    await store.close()


def test_the_drill_notices_lost_changed_and_duplicated_rows(tmp_path):
    db = tmp_path / "ess.db"
    asyncio.run(_trail(db, 4))
    rows = audit_rows(db)
    seen = {seq: digest for seq, _, _, digest, _ in rows}
    assert check_rows_kept(seen, rows) == []

    assert "row 3 was seen before the kill and is now lost" in " ".join(
        check_rows_kept(seen, [r for r in rows if r[0] != 3]))
    changed = [(s, a, b, "0" * 64 if s == 2 else h, d) for s, a, b, h, d in rows]
    assert "audit row 2 changed after the kill" in check_rows_kept(seen, changed)
    assert "without gaps or duplicates" in " ".join(check_rows_kept(seen, rows + [rows[-1]]))

    # The store itself refuses to delete audit rows: the drill reads what is really there.
    with sqlite3.connect(db) as conn, pytest.raises(sqlite3.DatabaseError):
        conn.execute("DELETE FROM audit WHERE seq = 3")


def test_the_drill_notices_a_runner_that_flattens_more_than_once():
    row = lambda seq, action, actor: (seq, action, actor, "h", {})  # noqa: E731
    rows = [row(1, "lease_acquired", "host:1"), row(2, "activate", "drill"),
            row(3, "flattened", "ess"), row(4, "lease_acquired", "host:2"),
            row(5, "flattened", "ess"), row(6, "flattened", "ess")]
    assert flatten_rows_per_runner(rows) == {"host:1": 1, "host:2": 2}
