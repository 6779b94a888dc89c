"""With QT_ESS_AUDIT_KEY, the trail cannot be quietly shortened or downgraded, and a hand-edited
state row is named (issue 10, hole 9). Also: the reset policy runs inside the un-latching
transaction (the ``guard`` of the store protocol)."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ess_tui.engine import audit_chain
from ess_tui.engine.reset_policy import ResetRefused
from ess_tui.store.sqlite import SQLiteStore

KEY = b"desk-audit-key-7"
T0 = datetime(2025, 11, 30, 4, 3, 31, tzinfo=timezone.utc)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ess.db"


async def history(db: Path) -> None:
    store = SQLiteStore(db, audit_key=KEY)
    await store.latch("Daily PnL catastrophic: -12.00%", at=T0, actor="drawdown")
    await store.audit("flattened", actor="ess", details={"flat": True}, at=T0)
    await store.unlatch("alice", at=T0 + timedelta(minutes=5), note="fixed")
    await store.latch("Excessive SL hits: 15 in 15 min", at=T0 + timedelta(minutes=9))
    await store.audit("note", actor="ops", at=T0 + timedelta(minutes=10))
    await store.close()


def tamper(db: Path, *sql: str, params: list[tuple] | None = None) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    for statement in sql:
        conn.execute(statement)
    return conn


async def verify(db: Path, key: bytes | None = KEY):
    store = SQLiteStore(db, create=False, audit_key=key)
    try:
        return await store.verify_audit()
    finally:
        await store.close()


async def test_an_intact_keyed_trail_verifies_and_replays_to_the_state_row(db):
    await history(db)
    result = await verify(db)
    assert result.ok and result.keyed and result.state_matches is True, result
    assert result.replayed == (True, 2, "Excessive SL hits: 15 in 15 min")


async def test_cutting_rows_from_the_end_and_lowering_the_head_is_detected(db):
    await history(db)
    conn = tamper(db, "DELETE FROM audit WHERE seq >= 5",
                  "UPDATE meta SET value = '4' WHERE key = 'audit_head_seq'")
    conn.close()
    result = await verify(db)
    assert not result.ok and "removed from the end" in result.problem, result


async def test_a_downgrade_to_plain_sha256_with_rewritten_rows_is_detected(db):
    await history(db)
    conn = tamper(db)
    rows = conn.execute("SELECT seq, at, action, actor, reason, details FROM audit "
                        "ORDER BY seq").fetchall()
    prev = audit_chain.GENESIS_HASH
    for seq, at, action, actor, reason, details in rows:
        if seq == 3:
            reason = "all good"  # the rewrite the downgrade was for
        digest = audit_chain.compute_hash(prev, seq, at, action, actor, reason,
                                          json.loads(details))
        conn.execute("UPDATE audit SET reason = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                     (reason, prev, digest, seq))
        prev = digest
    conn.execute("UPDATE meta SET value = 'sha256' WHERE key = 'audit_mode'")
    conn.execute("DELETE FROM meta WHERE key = 'audit_head_mac'")
    conn.close()
    assert (await verify(db, key=None)).ok  # without the key it looks fine...
    result = await verify(db)
    assert not result.ok and "downgraded" in result.problem, result  # ...with it, it does not


async def test_a_hand_edited_state_row_is_named(db):
    await history(db)
    armed = json.dumps({"active": False, "status": "inactive", "reason": None,
                        "timestamp": None, "activation_count": 2, "auto_recover": False})
    conn = tamper(db, "UPDATE state SET active = 0, reason = NULL WHERE id = 1")
    conn.execute("UPDATE policy SET value = ? WHERE key = 'emergency_stop'", (armed,))
    conn.close()
    result = await verify(db)
    assert not result.ok and result.state_matches is False
    assert "state row was edited by hand" in result.problem and "latched #2" in result.problem
    assert (await verify(db, key=None)).state_matches is False  # replay needs no key


async def test_the_reset_guard_runs_inside_the_transaction_and_its_refusal_is_audited(db):
    store = SQLiteStore(db, audit_key=None)
    seen = []

    def guard(state, flatten):
        seen.append((state.activation_count, flatten))
        return None if flatten and flatten.get("flat") else "the venue is not verified flat"

    try:
        await store.latch("halt", at=T0)
        with pytest.raises(ResetRefused, match="not verified flat"):
            await store.unlatch("alice", guard=guard)
        assert (await store.load_state()).active
        assert (await store.read_audit(1))[0].action == "reset_refused"
        await store.audit("flattened", actor="ess", details={"flat": True})
        state = await store.unlatch("alice", guard=guard)
        assert not state.active
        assert seen == [(1, None), (1, {"action": "flattened", "flat": True})]
    finally:
        await store.close()
