"""SQLiteStore: the durable latch, its audit chain, the runner lease and the seed's get/set."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ess_tui.engine.state import ESSStatus
from ess_tui.engine.store import NotLatchedError, StateStore, StoreError, StoreUnavailable
from ess_tui.engine import audit_chain
from ess_tui.store.schema import SCHEMA_VERSION
from ess_tui.store.sqlite import SQLiteStore

T0 = datetime(2025, 11, 30, 4, 3, 31, tzinfo=timezone.utc)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ess.db"


@pytest.fixture
async def store(db_path: Path):
    s = SQLiteStore(db_path, audit_key=None)
    yield s
    await s.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def drop_audit_triggers(conn: sqlite3.Connection) -> None:
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("DROP TRIGGER audit_no_delete")


async def three_rows(store: SQLiteStore) -> None:
    await store.latch("Daily PnL catastrophic: -12.00%", at=T0, actor="drawdown")
    await store.latch("Excessive SL hits: 15 in 15 min", at=T0 + timedelta(seconds=1))
    await store.unlatch("alice", at=T0 + timedelta(minutes=5), note="root cause fixed")


class TestLatch:
    async def test_store_satisfies_the_engine_protocol(self, store):
        assert isinstance(store, StateStore)

    async def test_fresh_store_is_armed(self, store):
        state = await store.load_state()
        assert state.status is ESSStatus.INACTIVE
        assert state.activation_count == 0

    async def test_latch_writes_state_policy_and_audit_together(self, store, db_path):
        result = await store.latch("Daily PnL catastrophic: -12.00%", at=T0, actor="drawdown")
        assert result.new and result.state.active and result.state.activation_count == 1
        conn = raw(db_path)
        active, reason, count = conn.execute(
            "SELECT active, reason, activation_count FROM state").fetchone()
        assert (active, reason, count) == (1, "Daily PnL catastrophic: -12.00%", 1)
        policy = json.loads(conn.execute(
            "SELECT value FROM policy WHERE key = 'emergency_stop'").fetchone()[0])
        assert policy["active"] is True and policy["status"] == "active"
        assert policy["auto_recover"] is False and policy["activation_count"] == 1
        rows = conn.execute("SELECT action, actor, reason FROM audit").fetchall()
        assert rows == [("activate", "drawdown", "Daily PnL catastrophic: -12.00%")]
        conn.close()
        assert store.write_latency_ms is not None and store.write_latency_ms > 0

    async def test_failure_midway_leaves_nothing_partial(self, store, db_path, monkeypatch):
        await store.load_state()

        def audit_write_fails(*args, **kwargs):
            raise RuntimeError("disk pulled out while writing the audit row")

        # the latch writes its audit row on the database thread, in the same transaction
        monkeypatch.setattr(store, "_append", audit_write_fails)
        with pytest.raises(StoreError, match="disk pulled out"):
            await store.latch("manual stop", at=T0)
        conn = raw(db_path)
        state_row = conn.execute("SELECT active, activation_count, change_seq FROM state")
        assert state_row.fetchone() == (0, 0, 0)
        policy = json.loads(conn.execute(
            "SELECT value FROM policy WHERE key = 'emergency_stop'").fetchone()[0])
        assert policy["active"] is False
        assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 0
        conn.close()
        monkeypatch.undo()
        result = await store.latch("manual stop", at=T0)
        assert result.new and result.state.activation_count == 1

    async def test_cancelled_caller_does_not_cut_the_latch_in_half(self, store):
        await store.load_state()
        task = asyncio.create_task(store.latch("manual stop", at=T0))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        state = await store.load_state()  # queued behind the latch, which finishes
        assert state.active and state.activation_count == 1
        assert [r.action for r in await store.read_audit()] == ["activate"]

    async def test_restart_keeps_the_latch(self, store, db_path):
        await store.latch("System health CRITICAL", at=T0, actor="health")
        await store.close()
        again = SQLiteStore(db_path, audit_key=None)
        try:
            state = await again.load_state()
            assert state.active and state.reason == "System health CRITICAL"
            assert state.activation_count == 1 and state.timestamp == T0
        finally:
            await again.close()

    async def test_double_latch_keeps_first_reason_and_count(self, store):
        await store.latch("Daily PnL catastrophic: -12.00%", at=T0)
        second = await store.latch("Data feed stale: 7 min", at=T0 + timedelta(seconds=3))
        assert not second.new
        assert second.state.reason == "Daily PnL catastrophic: -12.00%"
        assert second.state.activation_count == 1
        rows = await store.read_audit(newest_first=False)
        assert [r.action for r in rows] == ["activate", "extra_trigger"]
        assert rows[1].reason == "Data feed stale: 7 min"
        assert rows[1].details["latched_reason"] == "Daily PnL catastrophic: -12.00%"
        assert await store.change_seq() == 1

    async def test_latch_reset_latch_counts_two(self, store):
        await three_rows(store)
        after_reset = await store.load_state()
        assert not after_reset.active and after_reset.reason is None
        assert after_reset.last_reset_by == "alice"
        assert after_reset.activation_count == 1
        again = await store.latch("manual stop", at=T0 + timedelta(minutes=9))
        assert again.new and again.state.activation_count == 2
        assert await store.change_seq() == 3
        policy = await store.get_policy("emergency_stop")
        assert policy["active"] is True and policy["activation_count"] == 2

    async def test_reset_when_armed_is_refused_and_audited(self, store):
        with pytest.raises(NotLatchedError):
            await store.unlatch("bob", at=T0, note="just checking")
        (row,) = await store.read_audit()
        assert (row.action, row.actor, row.reason) == ("reset_refused", "bob", "not latched")
        assert not (await store.load_state()).active

    async def test_texts_are_cleaned_and_details_made_safe(self, store):
        nasty = "\x1b[31mRED\x1b[0m\nline two" + "x" * 2000

        class Weird:
            def __str__(self) -> str:
                return "weird object"

        await store.latch(nasty, at=T0, details={
            "ratio": float("nan"), "obj": Weird(), 3: "int key", "api_key": "abc123",
            "blob": "y" * 50_000,
        })
        state = await store.load_state()
        assert "\x1b" not in state.reason and "\n" not in state.reason
        assert len(state.reason) <= 500
        (row,) = await store.read_audit()
        assert row.details["api_key"] == "***" and row.details["obj"] == "weird object"
        assert row.details["ratio"] == "nan" and row.details["3"] == "int key"
        assert len(row.details["blob"]) <= 2_000
        fills = [{"id": i, "note": "z" * 150} for i in range(190)]
        big = await store.audit("flatten", actor="ess", details={"fills": fills})
        assert big.details["truncated"] is True  # ~30 kB of details: bounded
        assert len(json.dumps(big.details)) < audit_chain.MAX_DETAILS_CHARS
        record = await store.audit("note", actor="ops", details={"api_key": "abc123", "n": 1})
        assert record.details == {"api_key": "***", "n": 1}
        assert (await store.verify_audit()).ok


class TestAuditChain:
    async def test_audit_rows_cannot_be_updated_or_deleted(self, store, db_path):
        await three_rows(store)
        conn = raw(db_path)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE audit SET reason = 'nothing happened' WHERE seq = 1")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM audit WHERE seq = 1")
        conn.close()
        assert (await store.verify_audit()).ok

    async def test_intact_chain_verifies(self, store):
        await three_rows(store)
        result = await store.verify_audit()
        assert result.ok and result.rows == 3 and result.first_bad_seq is None

    async def test_altered_row_is_named(self, store, db_path):
        await three_rows(store)
        conn = raw(db_path)
        drop_audit_triggers(conn)
        conn.execute("UPDATE audit SET reason = 'routine test' WHERE seq = 2")
        conn.close()
        result = await store.verify_audit()
        assert not result.ok and result.first_bad_seq == 2
        assert "altered" in result.problem

    async def test_removed_row_is_named(self, store, db_path):
        await three_rows(store)
        conn = raw(db_path)
        drop_audit_triggers(conn)
        conn.execute("DELETE FROM audit WHERE seq = 2")
        conn.close()
        result = await store.verify_audit()
        assert not result.ok and result.first_bad_seq == 2
        assert "missing" in result.problem

    async def test_removed_last_row_is_named(self, store, db_path):
        await three_rows(store)
        conn = raw(db_path)
        drop_audit_triggers(conn)
        conn.execute("DELETE FROM audit WHERE seq = 3")
        conn.close()
        result = await store.verify_audit()
        assert not result.ok and result.first_bad_seq == 3

    async def test_inserted_row_is_named(self, store, db_path):
        await three_rows(store)
        conn = raw(db_path)
        drop_audit_triggers(conn)
        # A forged row, correctly hashed, that claims to follow row 2 instead of row 3.
        prev = conn.execute("SELECT hash FROM audit WHERE seq = 2").fetchone()[0]
        at = (T0 + timedelta(minutes=6)).isoformat()
        digest = audit_chain.compute_hash(prev, 4, at, "reset", "mallory", "ok", {})
        conn.execute("INSERT INTO audit VALUES (4, ?, 'reset', 'mallory', 'ok', '{}', ?, ?)",
                     (at, prev, digest))
        conn.close()
        result = await store.verify_audit()
        assert not result.ok and result.first_bad_seq == 4
        assert "prev_hash" in result.problem

    async def test_hmac_mode_needs_the_same_key(self, db_path):
        keyed = SQLiteStore(db_path, audit_key=b"desk-secret-1")
        try:
            await three_rows(keyed)
            assert keyed.audit_mode == audit_chain.MODE_HMAC
            assert (await keyed.verify_audit()).ok
        finally:
            await keyed.close()
        for f in db_path.parent.iterdir():
            assert b"desk-secret-1" not in f.read_bytes()  # the key is never stored

        wrong = SQLiteStore(db_path, audit_key=b"another-key")
        try:
            result = await wrong.verify_audit()
            assert not result.ok and result.first_bad_seq == 1
        finally:
            await wrong.close()
        keyless = SQLiteStore(db_path, audit_key=None)
        try:
            result = await keyless.verify_audit()
            assert not result.ok and "QT_ESS_AUDIT_KEY" in result.problem
            assert keyless.audit_warning and "QT_ESS_AUDIT_KEY" in keyless.audit_warning
        finally:
            await keyless.close()

    async def test_rows_written_without_the_key_are_flagged(self, db_path):
        keyed = SQLiteStore(db_path, audit_key=b"desk-secret-3")
        await keyed.latch("manual stop", at=T0)
        await keyed.close()
        keyless = SQLiteStore(db_path, audit_key=None)
        await keyless.unlatch("alice", at=T0 + timedelta(minutes=1))  # a reset still works
        await keyless.close()
        try:
            result = await keyed.verify_audit()
            assert not result.ok and result.first_bad_seq == 2
            assert "without the audit key" in result.problem
        finally:
            await keyed.close()

    async def test_hmac_rows_rehashed_without_the_key_fail(self, db_path, monkeypatch):
        monkeypatch.setenv("QT_ESS_AUDIT_KEY", "desk-secret-2")
        keyed = SQLiteStore(db_path)
        try:
            await three_rows(keyed)
            conn = raw(db_path)
            drop_audit_triggers(conn)
            seq, at, action, actor, prev = conn.execute(
                "SELECT seq, at, action, actor, prev_hash FROM audit WHERE seq = 3").fetchone()
            forged = audit_chain.compute_hash(prev, seq, at, action, actor, "forged", {})
            conn.execute("UPDATE audit SET reason = 'forged', details = '{}', hash = ? "
                         "WHERE seq = 3", (forged,))
            conn.close()
            result = await keyed.verify_audit()
            assert not result.ok and result.first_bad_seq == 3
        finally:
            await keyed.close()


class TestFileAndFailures:
    async def test_file_is_private_and_parent_created(self, store, db_path):
        await store.latch("manual stop", at=T0)
        for f in db_path.parent.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name

    async def test_create_false_does_not_create(self, db_path):
        s = SQLiteStore(db_path, create=False)
        try:
            with pytest.raises(StoreUnavailable, match="not found"):
                await s.load_state()
        finally:
            await s.close()
        assert not db_path.exists()

    async def test_newer_schema_is_refused(self, store, db_path):
        await store.load_state()
        await store.close()
        conn = raw(db_path)
        conn.execute("PRAGMA user_version = 9")
        conn.close()
        newer = SQLiteStore(db_path)
        try:
            newer_than = rf"schema version 9 is newer than this ess-tui \({SCHEMA_VERSION}\)"
            with pytest.raises(StoreUnavailable, match=newer_than):
                await newer.load_state()
            seed_view = newer.get("emergency_stop")
            assert seed_view["active"] is True and "newer" in seed_view["reason"]
        finally:
            await newer.close()

    async def test_someone_elses_database_is_refused(self, db_path):
        db_path.parent.mkdir(parents=True)
        conn = raw(db_path)
        conn.execute("CREATE TABLE trades (id INTEGER PRIMARY KEY)")
        conn.close()
        s = SQLiteStore(db_path)
        try:
            with pytest.raises(StoreUnavailable, match="not an ess-tui database"):
                await s.load_state()
        finally:
            await s.close()

    @pytest.mark.parametrize("damage", ["garbage", "truncated"])
    async def test_damaged_file_is_unavailable_and_reads_latched(self, store, db_path, damage):
        await store.latch("manual stop", at=T0)
        for i in range(10):
            await store.audit("note", actor="ops", details={"pad": "x" * 1500, "i": i})
        await store.close()
        if damage == "garbage":
            db_path.write_bytes(b"this is not a database " * 400)
        else:
            size = db_path.stat().st_size
            with open(db_path, "r+b") as f:
                f.truncate(size // 2)
        s = SQLiteStore(db_path)
        try:
            with pytest.raises(StoreUnavailable, match="database is corrupt"):
                await s.load_state()
            view = s.get("emergency_stop")
            assert view["active"] is True and view["reason"].startswith("ESS state unavailable")
        finally:
            await s.close()

    async def test_locked_database_is_unavailable(self, store, db_path):
        await store.load_state()
        await store.close()
        holder = raw(db_path)
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE policy SET updated_at = updated_at")
        s = SQLiteStore(db_path, busy_timeout_ms=50)
        try:
            with pytest.raises(StoreUnavailable, match="database is locked"):
                await s.load_state()
            assert s.get("emergency_stop")["active"] is True
        finally:
            holder.execute("ROLLBACK")
            holder.close()
            await s.close()

    @pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                        reason="root reads files whatever their mode")
    async def test_unreadable_file_is_unavailable(self, store, db_path):
        await store.load_state()
        await store.close()
        db_path.chmod(0)
        try:
            s = SQLiteStore(db_path)
            try:
                with pytest.raises(StoreUnavailable, match="permission denied"):
                    await s.load_state()
            finally:
                await s.close()
        finally:
            db_path.chmod(0o600)

    async def test_vanished_file_is_not_recreated_armed(self, store, db_path):
        await store.latch("manual stop", at=T0)
        assert store.get("emergency_stop")["active"] is True
        await store.close()
        for f in db_path.parent.iterdir():
            f.unlink()
        view = store.get("emergency_stop")
        assert view["active"] is True and "not found" in view["reason"]
        assert not db_path.exists()


class TestLease:
    async def test_lease_is_held_until_it_expires_then_taken_over(self, db_path):
        # Expiry is judged by the standby's own monotonic clock watching the beat, not by `at`.
        clock = [1000.0]
        store = SQLiteStore(db_path, audit_key=None, monotonic=lambda: clock[0])
        try:
            first = await store.acquire_lease("runner-a", ttl_sec=10, at=T0)
            assert first.holder == "runner-a" and first.epoch == 1 and first.beat == 0
            renewed = await store.acquire_lease("runner-a", ttl_sec=10,
                                                at=T0 + timedelta(seconds=5))
            assert renewed.acquired_at == T0 and renewed.expires_at == T0 + timedelta(seconds=15)
            assert renewed.epoch == 1 and renewed.beat == 1
            refused = await store.acquire_lease("runner-b", ttl_sec=10, at=T0)  # first sight
            assert refused.holder == "runner-a"
            clock[0] += 9.5
            refused = await store.acquire_lease("runner-b", ttl_sec=10, at=T0)
            assert refused.holder == "runner-a"
            clock[0] += 1.0  # 10.5 s on the standby's clock without a new beat
            taken = await store.acquire_lease("runner-b", ttl_sec=10, at=T0)
            assert taken.holder == "runner-b" and taken.epoch == 2
            assert (await store.read_lease()).holder == "runner-b"
            acquired = [r for r in await store.read_audit(newest_first=False)
                        if r.action == "lease_acquired"]
            assert [r.actor for r in acquired] == ["runner-a", "runner-b"]
            assert acquired[1].details["previous_holder"] == "runner-a"
        finally:
            await store.close()

    async def test_release_frees_the_lease_for_its_holder_only(self, store):
        await store.acquire_lease("runner-a", ttl_sec=60, at=T0)
        await store.release_lease("runner-b")
        assert (await store.read_lease()).holder == "runner-a"
        await store.release_lease("runner-a")
        assert await store.read_lease() is None
        assert (await store.acquire_lease("runner-b", ttl_sec=60, at=T0)).holder == "runner-b"


class TestSeedPolicyStore:
    async def test_seed_get_and_set(self, store):
        assert store.get("risk_limits") == {}
        store.set("risk_limits", {"max_leverage": 3})
        assert store.get("risk_limits") == {"max_leverage": 3}
        assert await store.get_policy("risk_limits") == {"max_leverage": 3}
        assert await store.read_audit() == []  # frequent keys do not flood the trail
        await store.set_policy("risk_limits", {"max_leverage": 2}, audit=True, actor="carol")
        (row,) = await store.read_audit()
        assert (row.action, row.actor) == ("policy_set", "carol")
        assert row.details == {"key": "risk_limits", "value": {"max_leverage": 2}}
        assert store.get("risk_limits") == {"max_leverage": 2}

    async def test_seed_get_sees_the_latch(self, store):
        assert store.get("emergency_stop")["active"] is False
        await store.latch("Daily PnL catastrophic: -12.00%", at=T0)
        value = store.get("emergency_stop")
        assert value["active"] is True and value["status"] == "active"
        assert value["reason"] == "Daily PnL catastrophic: -12.00%"
        assert value["activation_count"] == 1 and value["auto_recover"] is False

    async def test_nothing_unlatches_by_writing_the_policy_key(self, store):
        await store.latch("manual stop", at=T0)
        inactive = {"active": False, "status": "inactive", "reason": None}
        with pytest.raises(ValueError, match="emergency_stop"):
            store.set("emergency_stop", inactive)
        with pytest.raises(ValueError, match="emergency_stop"):
            await store.set_policy("emergency_stop", inactive)
        assert (await store.load_state()).active
        assert store.get("emergency_stop")["active"] is True

    async def test_policy_values_must_be_json(self, store):
        with pytest.raises(ValueError, match="not plain JSON"):
            await store.set_policy("limits", {"when": object()})
