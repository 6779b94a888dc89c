"""Fail closed, end to end: an armed ESS whose database is damaged never reads as armed.

For a truncated, corrupt, locked, unreadable or newer-schema database: ``ess-tui status`` (a real
process) exits 4 and says STATE UNAVAILABLE with the reason; the trade gate answers blocked with the
reason; the engine (what the control room and the headless runner show) reads as latched with
"ESS state unavailable"; the seed's ``policy_store.get("emergency_stop")`` answers active. None of
them "repairs" the file into a fresh, armed one.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ess_tui.cli import main
from ess_tui.engine.controller import EmergencyStopController
from ess_tui.gate import TradeGate
from ess_tui.store.sqlite import SQLiteStore

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


async def armed_database(path: Path) -> None:
    """A healthy, armed database with enough audit rows that truncation cuts into data."""
    store = SQLiteStore(path, audit_key=None)
    await store.latch("earlier stop")
    await store.unlatch("alice", note="checked")
    for i in range(12):
        await store.audit("note", actor="ops", details={"pad": "x" * 1500, "i": i})
    assert not (await store.load_state()).active
    await store.close()


LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
conn.execute("PRAGMA locking_mode = EXCLUSIVE")
conn.execute("BEGIN EXCLUSIVE")
conn.execute("UPDATE policy SET updated_at = updated_at")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@contextmanager
def damaged(path: Path, damage: str) -> Iterator[str]:
    """Apply ``damage`` for the duration; yields words the reason must contain."""
    if damage == "truncated":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
        yield "database is corrupt"
    elif damage == "corrupt":
        with open(path, "r+b") as f:
            f.write(b"\x00" * 100)  # the SQLite header is gone
        yield "database is corrupt"
    elif damage == "newer_schema":
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA user_version = 99")
        conn.close()
        yield "schema version 99 is newer"
    elif damage == "locked":
        # Another process holds an exclusive lock (POSIX locks are per process: a holder in this
        # process would lose its lock the moment the test opened and closed the file).
        holder = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            yield "database is locked"
        finally:
            holder.communicate("", timeout=30)
    elif damage == "unreadable":
        path.chmod(0)
        try:
            yield "permission denied"
        finally:
            path.chmod(0o600)
    else:  # pragma: no cover
        raise ValueError(damage)


def status_process(db: Path) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
    proc = subprocess.run(
        [sys.executable, "-m", "ess_tui", "status", "--db", str(db), "--json"],
        cwd=db.parent, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.stderr == "" or "Traceback" not in proc.stderr
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


DAMAGES = [
    "truncated",
    "corrupt",
    "newer_schema",
    pytest.param("locked", marks=pytest.mark.slow),  # status waits out its 5 s busy timeout
    pytest.param("unreadable", marks=pytest.mark.skipif(
        IS_ROOT, reason="root reads files whatever their mode")),
]


async def engine_view(db: Path, words: str) -> None:
    """What the control room's banner and the headless runner read, and the seed's view."""
    store = SQLiteStore(db, busy_timeout_ms=50, audit_key=None)
    controller = EmergencyStopController(store=store, acting=False)
    try:
        state = await controller.refresh()
        assert controller.is_active and state.active
        assert state.reason.startswith("ESS state unavailable") and words in state.reason
        assert controller.unavailable is not None
        # The seed's policy store answers "active" rather than raise or say inactive.
        seed_view = store.get("emergency_stop")
        assert seed_view["active"] is True and words in seed_view["reason"]
    finally:
        await store.close()


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_database_reads_as_blocked_everywhere(tmp_path, monkeypatch, capsys, damage):
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("QT_ESS_"):
            monkeypatch.delenv(key)
    db = tmp_path / "ess.db"
    asyncio.run(armed_database(db))

    with damaged(db, damage) as words:
        before = db.read_bytes() if damage != "unreadable" else None

        # 1. `ess-tui status`, as a script would run it.
        code, info = status_process(db)
        assert code == 4, info
        assert info["status"] == "unavailable" and info["trading_allowed"] is False
        assert words in info["reason"]

        # 2. The trade gate every trading process calls.
        with TradeGate(db, busy_timeout_sec=0.05) as gate:
            decision = gate.check()
        assert not decision.allowed
        assert decision.reason.startswith("ESS state unavailable, trading blocked")
        assert words in decision.reason

        # 3. The engine's view (the control room, the headless runner) and the seed's.
        asyncio.run(engine_view(db, words))

        if damage != "locked":  # the human line (locked: the CLI waits 5 s; once is enough)
            assert main(["status", "--db", str(db)]) == 4
            out = capsys.readouterr().out
            assert "STATE UNAVAILABLE — trading blocked" in out and "ARMED" not in out

        if before is not None:
            assert db.read_bytes() == before, "the damaged file was rewritten"

    if damage in ("locked", "unreadable"):  # once the cause is gone, the truth is back
        assert TradeGate(db).check().allowed
        assert main(["status", "--db", str(db)]) == 0


def test_missing_database_is_not_created_by_looking(tmp_path):
    db = tmp_path / "ess.db"
    code, info = status_process(db)
    assert code == 4 and "not found" in info["reason"]
    assert not TradeGate(db).check().allowed
    assert not db.exists(), "looking must never create an empty, armed database"


# --- a tampered audit trail is named, end to end ---------------------------------------------------

AUDIT_KEY = "test-audit-key-2f9c"


def tamper(db: Path, how: str) -> None:
    """What someone with write access to the file but not the key could do."""
    from ess_tui.engine import audit_chain

    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER audit_no_update")
        conn.execute("DROP TRIGGER audit_no_delete")
        if how == "altered":  # change the reason and re-hash the row with the public algorithm
            seq, at, action, actor, details, prev = conn.execute(
                "SELECT seq, at, action, actor, details, prev_hash FROM audit WHERE seq = 2").fetchone()
            digest = audit_chain.compute_hash(prev, seq, at, action, actor, "routine test",
                                              json.loads(details))
            conn.execute("UPDATE audit SET reason = 'routine test', hash = ? WHERE seq = 2", (digest,))
        elif how == "removed":
            conn.execute("DELETE FROM audit WHERE seq = 2")
        elif how == "inserted":  # a forged reset appended after the last row, chained correctly
            last, prev = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            at = "2030-01-01T00:00:00.000000+00:00"
            digest = audit_chain.compute_hash(prev, last + 1, at, "reset", "mallory", "ok", {})
            conn.execute("INSERT INTO audit VALUES (?, ?, 'reset', 'mallory', 'ok', '{}', ?, ?)",
                         (last + 1, at, prev, digest))
    finally:
        conn.close()


@pytest.mark.parametrize("how, row", [("altered", 2), ("removed", 2), ("inserted", 4)])
def test_audit_verify_names_the_first_tampered_row(tmp_path, monkeypatch, capsys, how, row):
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("QT_ESS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("QT_ESS_AUDIT_KEY", AUDIT_KEY)
    db = str(tmp_path / "ess.db")
    assert main(["activate", "--db", db, "--reason", "desk halt", "--by", "alice"]) == 0
    assert main(["reset", "--db", db, "--by", "alice", "--yes"]) == 1  # not flat: refused
    assert main(["reset", "--db", db, "--by", "alice", "--yes", "--override", "no book"]) == 0
    assert main(["audit", "--db", db, "--verify", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "audit chain OK: 3 rows verified"
    rows = {r["action"]: r for r in map(json.loads, [x for x in lines if x.startswith("{")])}
    assert "not verified flat" in rows["reset_refused"]["reason"]  # the refusal is audited...
    assert rows["reset"]["details"]["override"] == "no book"  # ...and so is the override

    tamper(Path(db), how)
    assert main(["audit", "--db", db, "--verify"]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"audit chain BROKEN at row {row}:"), last
