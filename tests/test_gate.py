"""TradeGate: allowed while armed, blocked while latched, and blocked whenever it cannot know."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ess_tui.gate import GateDecision, TradeGate
from ess_tui.store.sqlite import SQLiteStore

T0 = datetime(2025, 11, 30, 4, 3, 31, tzinfo=timezone.utc)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "ess.db"


@pytest.fixture
async def store(db_path: Path):
    s = SQLiteStore(db_path, audit_key=None)
    await s.load_state()
    yield s
    await s.close()


@pytest.fixture
def gate(db_path: Path):
    g = TradeGate(db_path, busy_timeout_sec=0.02)
    yield g
    g.close()


def blocked_because(decision: GateDecision, *words: str) -> bool:
    return (not decision.allowed and decision.reason is not None
            and all(w in decision.reason for w in words))


async def test_missing_file_blocks(gate, db_path):
    decision = gate.check()
    assert blocked_because(decision, "not found", str(db_path))
    assert not db_path.exists()  # the gate never creates the database


async def test_armed_allows_latched_blocks_reset_allows(store, gate):
    assert gate.check() == GateDecision(True, None, 0, None)
    await store.latch("Daily PnL catastrophic: -12.00%", at=T0)
    decision = gate.check()
    assert not decision
    assert decision.reason == "ESS active: Daily PnL catastrophic: -12.00%"
    assert decision.activation_count == 1 and decision.since == T0
    await store.unlatch("alice", note="fixed")
    assert gate.check().allowed


async def test_latch_from_another_process_seen_on_next_check(store, gate, db_path):
    assert gate.check().allowed
    script = (
        "import asyncio, sys\n"
        "from ess_tui.store.sqlite import SQLiteStore\n"
        "async def main():\n"
        "    s = SQLiteStore(sys.argv[1])\n"
        "    await s.latch('Manual stop from the desk', actor='cli')\n"
        "    await s.close()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", script, str(db_path)], check=True, timeout=30)
    assert gate.check().reason == "ESS active: Manual stop from the desk"


@pytest.mark.parametrize("content", [b"", b"not a database at all " * 300])
async def test_empty_or_garbage_file_blocks(gate, db_path, content):
    db_path.write_bytes(content)
    decision = gate.check()
    assert blocked_because(decision, "ESS state unavailable")
    assert "corrupt" in decision.reason or "not an initialised" in decision.reason


async def test_corrupt_file_blocks(store, gate, db_path):
    await store.close()
    with open(db_path, "r+b") as f:
        f.write(b"\x00" * 100)  # wipe the header
    assert blocked_because(gate.check(), "database is corrupt", str(db_path))


async def test_truncated_file_blocks(store, gate, db_path):
    for i in range(10):
        await store.audit("note", actor="ops", details={"pad": "x" * 1500, "i": i})
    await store.close()
    size = db_path.stat().st_size
    with open(db_path, "r+b") as f:
        f.truncate(size // 2)
    assert blocked_because(gate.check(), "database is corrupt")


async def test_locked_file_blocks_then_recovers(store, gate, db_path):
    await store.close()
    holder = sqlite3.connect(db_path, isolation_level=None, timeout=0.5)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE policy SET updated_at = updated_at")
    try:
        started = time.perf_counter()
        decision = gate.check()
        assert time.perf_counter() - started < 1.0
        assert blocked_because(decision, "database is locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert gate.check().allowed  # reopened after the error


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root reads files whatever their mode")
async def test_unreadable_file_blocks(store, gate, db_path):
    await store.close()
    db_path.chmod(0)
    try:
        assert blocked_because(gate.check(), "permission denied")
    finally:
        db_path.chmod(0o600)


async def test_newer_schema_blocks(store, gate, db_path):
    await store.close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA user_version = 9")
    conn.close()
    assert blocked_because(gate.check(), "schema version 9 is newer")


async def test_missing_state_row_blocks(store, gate, db_path):
    await store.close()
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("DROP TRIGGER state_no_delete")
    conn.execute("DELETE FROM state")
    conn.close()
    assert blocked_because(gate.check(), "state row is missing")


async def test_replaced_file_is_read_afresh(store, gate, db_path, tmp_path):
    assert gate.check().allowed  # connection now open on the armed file
    other = SQLiteStore(tmp_path / "latched.db", audit_key=None)
    await other.latch("Equity drawdown catastrophic: 30.00%", at=T0)
    await other.close()
    os.replace(tmp_path / "latched.db", db_path)
    for suffix in ("-wal", "-shm"):
        Path(str(db_path) + suffix).unlink(missing_ok=True)
    assert gate.check().reason == "ESS active: Equity drawdown catastrophic: 30.00%"


async def test_removed_file_blocks_even_with_an_open_connection(store, gate, db_path):
    assert gate.check().allowed
    await store.close()
    shutil.rmtree(db_path.parent)
    assert blocked_because(gate.check(), "not found")


async def test_gate_works_from_many_threads(store, gate):
    await store.latch("manual stop", at=T0)
    answers: list[GateDecision] = []

    def worker() -> None:
        for _ in range(50):
            answers.append(gate.check())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 200
    assert all(a.reason == "ESS active: manual stop" for a in answers)


def test_importing_the_gate_stays_light():
    code = (
        "import sys, ess_tui.gate\n"
        "heavy = {'ccxt', 'textual', 'aiosqlite', 'pydantic', 'pydantic_settings', 'rich'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30)
    assert out.stdout.strip() == "[]"
