"""The latch survives a deleted WAL (hole 4) and a held write lock (hole 5), tried from outside."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ess_tui.gate import TradeGate
from ess_tui.store.sqlite import SQLiteStore

RUNNER = """
import asyncio, sys
from ess_tui.store.sqlite import SQLiteStore
async def main():
    store = SQLiteStore(sys.argv[1], audit_key=None)
    await store.latch("Daily PnL catastrophic: -12.00%", actor="drawdown")
    await store.audit("flattened", actor="ess", details={"flat": True})
    print("latched", flush=True)
    sys.stdin.readline()          # stays up, connection open, until the test lets go
    await store.close()
asyncio.run(main())
"""


def main_file_state(db: Path) -> tuple[int, int, int]:
    """(active, activation_count, audit rows) as the main file alone holds them."""
    conn = sqlite3.connect(Path(db).as_uri() + "?mode=ro&immutable=1", uri=True)
    try:
        active, count = conn.execute("SELECT active, activation_count FROM state").fetchone()
        rows = conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        return active, count, rows
    finally:
        conn.close()


def test_deleting_the_wal_after_a_latch_keeps_the_latch_and_the_trail(tmp_path):
    db = tmp_path / "ess.db"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout.readline().strip() == "latched"
        for suffix in ("-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        # The durable main file holds the latch (checkpointed after the commit)...
        active, count, latch_rows = main_file_state(db)
        assert (active, count) == (1, 1) and latch_rows >= 1
        # ...and every new reader sees it, with the trail intact.
        with TradeGate(db) as gate:
            decision = gate.check()
        assert not decision.allowed and "Daily PnL catastrophic" in decision.reason

        async def look() -> None:
            store = SQLiteStore(db, create=False, audit_key=None)
            try:
                state = await store.load_state()
                assert state.active and state.activation_count == 1
                verdict = await store.verify_audit()
                assert verdict.ok and verdict.rows >= 1, verdict
                assert verdict.state_matches is True
            finally:
                await store.close()
        asyncio.run(look())
    finally:
        runner.stdin.close()
        runner.wait(timeout=30)


LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
"""

GATE_WATCH = """
import json, sys, time
from ess_tui.gate import TradeGate
gate = TradeGate(sys.argv[1], busy_timeout_sec=0.02)
assert gate.check().allowed
print("armed", flush=True)
deadline = time.time() + 20
while time.time() < deadline:
    d = gate.check()
    if not d.allowed:
        print(json.dumps({"at": time.time(), "reason": d.reason}), flush=True)
        break
    time.sleep(0.005)
"""

ACTIVATE = """
import asyncio, sys, time
from ess_tui.store.sqlite import SQLiteStore
async def main():
    store = SQLiteStore(sys.argv[1], audit_key=None, busy_timeout_ms=15000)
    print(time.time(), flush=True)
    await store.latch("manual stop: desk halt", actor="cli")
    print("durable", flush=True)
    await store.close()
asyncio.run(main())
"""


@pytest.mark.parametrize("route", ["same path", "gate via a symlink", "latch via a symlink",
                                   "gate via a symlinked folder"])
def test_a_held_write_lock_still_blocks_every_gate_within_a_second(tmp_path, route):
    """The second channel holds whatever path each side reaches the file by (a symlink made the
    gate miss the marker before it was keyed on the real file)."""
    db = tmp_path / "ess.db"
    asyncio.run(_fresh(db))
    (tmp_path / "other").mkdir()
    link = tmp_path / "other" / "link.db"
    link.symlink_to(db)
    (tmp_path / "folder-link").symlink_to(tmp_path, target_is_directory=True)
    gate_path = {"gate via a symlink": link,
                 "gate via a symlinked folder": tmp_path / "folder-link" / "ess.db"}.get(route, db)
    latch_path = link if route == "latch via a symlink" else db
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    gates = [subprocess.Popen([sys.executable, "-c", GATE_WATCH, str(gate_path)],
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    activate = None
    try:
        assert locker.stdout.readline().strip() == "locked"
        for g in gates:
            assert g.stdout.readline().strip() == "armed"
        activate = subprocess.Popen([sys.executable, "-c", ACTIVATE, str(latch_path)],
                                    stdout=subprocess.PIPE, text=True)
        started = float(activate.stdout.readline())
        for g in gates:
            seen = json.loads(g.stdout.readline())
            assert seen["at"] - started < 1.0, f"gate blocked only after {seen['at'] - started:.2f}s"
            assert "manual stop: desk halt" in seen["reason"]
        # The lock is still held: the database itself does not hold the latch yet.
        assert main_file_state(db)[0] == 0 and activate.poll() is None
        locker.stdin.write("\n")
        locker.stdin.flush()
        assert activate.stdout.readline().strip() == "durable"
        assert activate.wait(timeout=30) == 0
        active, count, _rows = main_file_state(db)
        assert (active, count) == (1, 1)
    finally:
        for proc in (locker, activate, *gates):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


async def _fresh(db: Path) -> None:
    store = SQLiteStore(db, audit_key=None)
    await store.load_state()
    await store.close()


async def test_reset_removes_the_marker_and_a_stray_marker_latches(tmp_path):
    db = tmp_path / "ess.db"
    marker = Path(str(db) + ".latched")
    store = SQLiteStore(db, audit_key=None)
    try:
        await store.latch("halt")
        assert json.loads(marker.read_text())["activation"] == 1
        await store.unlatch("alice")
        assert not marker.exists()
        assert TradeGate(db).check().allowed
        # A latch that wrote its marker and then died before its transaction: still latched,
        # and the next opener makes it durable.
        marker.write_text(json.dumps({"activation": 2, "reason": "died mid-latch",
                                      "at": "2026-01-01T00:00:00+00:00"}))
        os.utime(db.parent, (time.time() - 10, time.time() - 10))
        decision = TradeGate(db).check()
        assert not decision.allowed and "died mid-latch" in decision.reason
        other = SQLiteStore(db, audit_key=None)
        state = await other.load_state()
        assert state.active and state.activation_count == 2 and state.reason == "died mid-latch"
        await other.close()
        assert main_file_state(db)[:2] == (1, 2)
    finally:
        await store.close()


GATE_COUNT = """
import sys
from ess_tui.gate import TradeGate
gate = TradeGate(sys.argv[1])
bad = [d.reason for d in (gate.check() for _ in range(int(sys.argv[2])))
       if d.reason and d.reason.startswith("ESS state unavailable")]
print(len(bad), bad[:1])
"""


def test_the_gate_never_reads_a_sound_file_as_damaged_while_it_is_written(tmp_path):
    # The validation reads the state and policy rows in one snapshot: a latch committing
    # between the two reads is not a contradiction (it was, once: 2 in 60,000 checks).
    import threading

    db = tmp_path / "ess.db"
    asyncio.run(_fresh(db))
    stop = threading.Event()

    def writer() -> None:
        async def loop() -> None:
            store = SQLiteStore(db, audit_key=None)
            while not stop.is_set():
                await store.latch("load")
                await store.unlatch("ops")
            await store.close()
        asyncio.run(loop())

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        out = subprocess.run([sys.executable, "-c", GATE_COUNT, str(db), "40000"],
                             capture_output=True, text=True, timeout=120, check=True)
    finally:
        stop.set()
        thread.join()
    assert out.stdout.startswith("0 "), out.stdout


async def test_a_latch_in_flight_elsewhere_is_not_completed_by_a_reader(tmp_path):
    # Another process wrote its marker and is waiting for the write lock: readers say latched
    # but leave the latch to it (no second, misattributed activation); once it is gone, the
    # next reader completes it.
    from datetime import datetime, timezone

    from ess_tui.store import marker as markers

    db = tmp_path / "ess.db"
    await _fresh(db)
    held = markers.write_marker(str(db), 1, "in flight", datetime.now(timezone.utc))
    reader = SQLiteStore(db, audit_key=None)
    try:
        state = await reader.load_state()
        assert state.active and state.reason == "in flight"
        assert main_file_state(db)[0] == 0 and await reader.read_audit() == []
        markers.release(held)  # its writer died
        state = await reader.load_state()
        await reader.change_seq()  # the checkpoint runs as the next job on the store's thread
        assert state.active and main_file_state(db)[:2] == (1, 1)
        assert [r.action for r in await reader.read_audit()] == ["activate"]
    finally:
        await reader.close()


def test_a_latch_against_an_unreadable_database_blocks_and_survives_a_restore(tmp_path):
    """`activate` on a file that cannot be read (0 bytes) cannot make the latch durable, but every
    gate must block anyway; restoring an armed backup over it must not quietly allow trading: the
    next opener latches it durably, and only an audited reset clears it."""
    import shutil

    good = tmp_path / "backup.db"
    asyncio.run(_fresh(good))
    db = tmp_path / "ess.db"
    db.write_bytes(b"")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ess_tui", *args, "--db", str(db)],
                              capture_output=True, text=True, timeout=120)

    done = cli("activate", "--reason", "desk halt while the db is broken", "--by", "ops")
    assert done.returncode == 1, done.stderr
    assert db.read_bytes() == b""  # nothing initialised over it
    assert not TradeGate(db).check().allowed
    shutil.copyfile(good, db)  # the operator restores last night's (armed) backup
    decision = TradeGate(db).check()
    assert not decision.allowed and "desk halt while the db is broken" in decision.reason
    status = cli("status")
    assert status.returncode == 3, status.stdout + status.stderr
    assert "desk halt while the db is broken" in status.stdout
    assert not TradeGate(db).check().allowed
    reset = cli("reset", "--by", "ops", "--yes", "--override", "restored from backup, checked flat")
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert TradeGate(db).check().allowed
    assert cli("status").returncode == 0
