"""The store contract, the same assertions against the SQLite file and a real PostgreSQL server;
then what only the server adds: append-only by privileges, the runner role, schema versions,
the password kept out of every text."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ess_tui.engine.state import EmergencyState
from ess_tui.engine.store import (
    FencedOut,
    NotLatchedError,
    StaleResetError,
    StateStore,
    StoreUnavailable,
)
from ess_tui.store.sqlite import SQLiteStore

from pg_server import (  # noqa: F401 - fixtures
    PASSWORD, PASSWORD_ENV, PGCluster, own_cluster, pg_cluster, pg_url,
)

T0 = datetime(2026, 1, 5, 9, 0, 0, tzinfo=timezone.utc)


class Backend:
    """One store under test, plus a way to tamper with it from outside (as an attacker would)."""

    def __init__(self, kind: str, tmp: Path, cluster: PGCluster | None) -> None:
        self.kind = kind
        if kind == "sqlite":
            self.path = tmp / "ess.db"
            self.store: Any = SQLiteStore(self.path, audit_key=None)
        else:
            from ess_tui.store.postgres import PostgresStore

            assert cluster is not None
            self.url = cluster.new_database()
            self.dbname = self.url.split("/")[3].split("?")[0]
            self.cluster = cluster
            self.store = PostgresStore(self.url, audit_key=None)

    def tamper(self, sql_sqlite: str, sql_pg: str) -> None:
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
            conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
            conn.execute(sql_sqlite)
            conn.close()
        else:
            self.cluster.admin("ALTER TABLE ess.audit DISABLE TRIGGER audit_append_only; "
                               + sql_pg, db=self.dbname)


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path):
    cluster = request.getfixturevalue("pg_cluster") if request.param == "postgres" else None
    b = Backend(request.param, tmp_path, cluster)
    yield b
    await b.store.close()


def needs(store: Any, method: str, param: str | None = None) -> None:
    """Skip on a store that does not have this part of the contract yet (the SQLite store gains
    it on another branch); the PostgreSQL store must have it."""
    fn = getattr(store, method, None)
    ok = fn is not None and (param is None or param in inspect.signature(fn).parameters)
    if not ok:
        assert type(store).__name__ != "PostgresStore", f"PostgresStore lacks {method}({param})"
        pytest.skip(f"{type(store).__name__} has no {method}({param or ''}) on this branch")


# --- the contract, both stores --------------------------------------------------------------


async def test_store_is_a_state_store(backend: Backend) -> None:
    assert isinstance(backend.store, StateStore)
    state = await backend.store.load_state()
    assert not state.active and state.activation_count == 0


async def test_latch_is_idempotent_and_counts(backend: Backend) -> None:
    s = backend.store
    first = await s.latch("daily loss -12%", at=T0, actor="risk")
    again = await s.latch("feed stale", at=T0 + timedelta(seconds=1), actor="risk")
    assert first.new and not again.new
    assert again.state.reason == "daily loss -12%" and again.state.activation_count == 1
    state = await s.load_state()
    assert state.active and state.activation_count == 1 and state.reason == "daily loss -12%"
    policy = await s.get_policy("emergency_stop")
    assert policy["active"] is True and policy["activation_count"] == 1
    actions = [r.action for r in await s.read_audit(newest_first=False)]
    assert actions == ["activate", "extra_trigger"]
    await s.unlatch("alice", at=T0 + timedelta(minutes=1), note="checked")
    second = await s.latch("again", at=T0 + timedelta(minutes=2), actor="risk")
    assert second.new and second.state.activation_count == 2


async def test_reset_refusals_are_audited(backend: Backend) -> None:
    s = backend.store
    with pytest.raises(NotLatchedError):
        await s.unlatch("alice", at=T0)
    await s.latch("one", at=T0, actor="risk")
    await s.unlatch("alice", at=T0 + timedelta(seconds=1), expected_activation=1)
    await s.latch("two", at=T0 + timedelta(seconds=2), actor="risk")
    with pytest.raises(StaleResetError, match="#2 is latched now"):
        await s.unlatch("alice", at=T0 + timedelta(seconds=3), expected_activation=1)
    assert (await s.load_state()).active
    rows = await s.read_audit(newest_first=False)
    refused = [r for r in rows if r.action == "reset_refused"]
    assert [r.reason.split(":")[0] for r in refused] == ["not latched", "activation #2 is latched now, but this reset reviewed #1"]


async def test_guard_runs_inside_the_reset_and_refusal_is_audited(backend: Backend) -> None:
    s = backend.store
    needs(s, "unlatch", "guard")
    from ess_tui.engine.reset_policy import ResetRefused

    await s.latch("boom", at=T0, actor="risk")
    await s.audit("flattened", actor="ess", details={"flat": False, "open_orders": 2})
    seen: list[tuple[EmergencyState, Any]] = []

    def guard(state: EmergencyState, last_flatten: dict[str, Any] | None) -> str | None:
        seen.append((state, last_flatten))
        return None if last_flatten and last_flatten.get("flat") else "the venue is not flat"

    with pytest.raises(ResetRefused, match="not flat"):
        await s.unlatch("alice", at=T0 + timedelta(seconds=5), guard=guard)
    assert (await s.load_state()).active
    assert seen[0][0].activation_count == 1 and seen[0][1]["action"] == "flattened"
    last = (await s.read_audit(1))[0]
    assert last.action == "reset_refused" and last.reason == "the venue is not flat"
    await s.audit("flattened", actor="ess", details={"flat": True})
    state = await s.unlatch("alice", at=T0 + timedelta(seconds=9), guard=guard)
    assert not state.active and state.last_reset_by == "alice"


async def test_audit_chain_verifies_and_detects_tampering(backend: Backend) -> None:
    s = backend.store
    await s.latch("boom", at=T0, actor="risk")
    await s.audit("note", actor="bob", reason="looked at it")
    await s.unlatch("alice", at=T0 + timedelta(minutes=1))
    ok = await s.verify_audit()
    assert ok.ok and ok.rows == 3
    await s.close()
    backend.tamper("UPDATE audit SET reason = 'nothing to see' WHERE seq = 2",
                   "UPDATE ess.audit SET reason = 'nothing to see' WHERE seq = 2")
    bad = await s.verify_audit()
    assert not bad.ok and bad.first_bad_seq == 2 and "altered" in bad.problem


async def test_audit_rows_removed_from_the_end_are_detected(backend: Backend) -> None:
    s = backend.store
    for i in range(3):
        await s.audit("note", actor="bob", reason=f"n{i}")
    await s.close()
    backend.tamper("DELETE FROM audit WHERE seq = 3", "DELETE FROM ess.audit WHERE seq = 3")
    bad = await s.verify_audit()
    assert not bad.ok and bad.first_bad_seq == 3 and "missing" in bad.problem


async def test_emergency_key_is_written_only_by_latch_and_reset(backend: Backend) -> None:
    s = backend.store
    with pytest.raises(ValueError, match="only by latch and reset"):
        await s.set_policy("emergency_stop", {"active": False})
    await s.set_policy("equity_baseline", {"equity": 1000.0})
    assert await s.get_policy("equity_baseline") == {"equity": 1000.0}
    assert await s.get_policy("nope") is None


async def test_lease_epoch_grows_with_each_holder_and_fences_the_old_one(backend: Backend) -> None:
    s = backend.store
    needs(s, "check_fence")
    a = await s.acquire_lease("host-a:1", ttl_sec=0.4, at=datetime.now(timezone.utc))
    assert a.holder == "host-a:1" and a.epoch >= 1
    renewed = await s.acquire_lease("host-a:1", ttl_sec=0.4, at=datetime.now(timezone.utc))
    assert renewed.epoch == a.epoch and renewed.beat > a.beat
    held = await s.acquire_lease("host-b:2", ttl_sec=0.4, at=datetime.now(timezone.utc))
    assert held.holder == "host-a:1"
    await s.check_fence("host-a:1", a.epoch, None)
    await asyncio.sleep(0.6)
    with pytest.raises(FencedOut, match="expired|has not renewed"):
        await s.check_fence("host-a:1", a.epoch, None)
    b = await s.acquire_lease("host-b:2", ttl_sec=5, at=datetime.now(timezone.utc))
    assert b.holder == "host-b:2" and b.epoch == a.epoch + 1
    with pytest.raises(FencedOut, match="lost the runner lease|no longer holds the runner lease"):
        await s.check_fence("host-a:1", a.epoch, None)
    await s.latch("boom", at=datetime.now(timezone.utc), actor="risk")
    await s.check_fence("host-b:2", b.epoch, 1)
    await s.unlatch("alice", at=datetime.now(timezone.utc))
    with pytest.raises(FencedOut, match="no longer the latched one"):
        await s.check_fence("host-b:2", b.epoch, 1)
    await s.release_lease("host-b:2")
    c = await s.acquire_lease("host-a:1", ttl_sec=5, at=datetime.now(timezone.utc))
    assert c.epoch == b.epoch + 1, "an epoch is never handed out twice, even after a release"


async def test_latch_and_reset_enqueue_their_outbox_events(backend: Backend) -> None:
    s = backend.store
    needs(s, "pending")
    await s.latch("boom", at=T0, actor="risk")
    await s.unlatch("alice", at=T0 + timedelta(minutes=1))
    events = await s.pending("log", now=T0 + timedelta(minutes=2))
    assert [e.key for e in events] == ["latched:1", "reset:1"]
    assert events[0].level == "critical" and events[0].activation == 1
    assert await s.enqueue("latched", level="critical", key="latched:1", payload={}) is None
    await s.mark_failed(events[0].id, "log", at=T0, error="sink down",
                        next_attempt_at=T0 + timedelta(hours=1))
    await s.mark_delivered(events[1].id, "log", at=T0)
    assert await s.pending("log", now=T0 + timedelta(minutes=2)) == []
    assert [e.key for e in await s.pending("log", now=T0 + timedelta(hours=2))] == ["latched:1"]
    rows = await s.deliveries("log")
    assert {(d.event_id, d.attempts, d.last_error) for d in rows} == {
        (events[0].id, 1, "sink down"), (events[1].id, 1, None)}


# --- PostgreSQL only -------------------------------------------------------------------------


async def test_latch_rolls_back_whole_when_the_audit_insert_fails(pg_cluster: PGCluster) -> None:
    """The latch, its policy key, audit row and outbox row are one transaction: make the audit
    INSERT fail on the server and nothing of the latch remains."""
    from ess_tui.store.postgres import PostgresStore

    url = pg_cluster.new_database()
    db = url.split("/")[3].split("?")[0]
    s = PostgresStore(url, audit_key=None)
    await s.load_state()
    pg_cluster.admin("CREATE FUNCTION ess.boom() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$; "
                     "CREATE TRIGGER boom BEFORE INSERT ON ess.audit FOR EACH ROW "
                     "EXECUTE FUNCTION ess.boom()", db=db)
    with pytest.raises(StoreUnavailable, match="disk on fire"):
        await s.latch("boom", at=T0, actor="risk")
    pg_cluster.admin("DROP TRIGGER boom ON ess.audit", db=db)
    state = await s.load_state()
    assert not state.active and state.activation_count == 0
    assert (await s.get_policy("emergency_stop"))["active"] is False
    assert await s.pending("log", now=T0) == []
    await s.close()


async def test_audit_is_append_only_for_the_owner_and_by_privilege_for_the_runner(
        pg_cluster: PGCluster) -> None:
    from ess_tui.store.postgres import PostgresStore
    from ess_tui.store.postgres.schema import grant_sql

    url = pg_cluster.new_database()
    db = url.split("/")[3].split("?")[0]
    owner = PostgresStore(url, audit_key=None)
    await owner.latch("boom", at=T0, actor="risk")
    await owner.close()
    # The owner (a superuser here) is stopped by the triggers.
    for sql in ("UPDATE ess.audit SET reason = 'x'", "DELETE FROM ess.audit",
                "TRUNCATE ess.audit"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            pg_cluster.admin(sql, db=db)
    # The runner role has no UPDATE/DELETE on the audit table at all.
    pg_cluster.admin("DO $$ BEGIN CREATE ROLE ess_runner LOGIN PASSWORD 'runner-pw'; "
                     "EXCEPTION WHEN duplicate_object THEN NULL; END $$; "
                     "DO $$ BEGIN CREATE ROLE ess_gate LOGIN PASSWORD 'gate-pw'; "
                     "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    pg_cluster.admin("; ".join(grant_sql("ess")), db=db)
    runner_url = url.replace("postgres@", "ess_runner@").replace(
        f"password_env={PASSWORD_ENV}", "password_env=ESS_TEST_RUNNER_PW")
    import os

    os.environ["ESS_TEST_RUNNER_PW"] = "runner-pw"
    runner = PostgresStore(runner_url, audit_key=None)
    await runner.unlatch("alice", at=T0 + timedelta(minutes=1))
    await runner.latch("again", at=T0 + timedelta(minutes=2), actor="risk")
    assert (await runner.verify_audit()).ok
    await runner.close()
    with psycopg.connect(host="127.0.0.1", port=pg_cluster.port, user="ess_runner",
                         password="runner-pw", dbname=db, autocommit=True) as conn:
        for sql in ("UPDATE ess.audit SET reason = 'x'", "DELETE FROM ess.audit",
                    "TRUNCATE ess.audit", "ALTER TABLE ess.audit DISABLE TRIGGER ALL"):
            # Refused by the privileges themselves, before any trigger runs.
            with pytest.raises(psycopg.errors.InsufficientPrivilege,
                               match="permission denied|must be owner"):
                conn.execute(sql)
    with psycopg.connect(host="127.0.0.1", port=pg_cluster.port, user="ess_gate",
                         password="gate-pw", dbname=db, autocommit=True) as conn:
        assert conn.execute("SELECT active FROM ess.state").fetchone() == (True,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE ess.state SET active = false")


async def test_newer_schema_is_refused_and_init_is_idempotent(pg_cluster: PGCluster) -> None:
    from ess_tui.store.postgres import PostgresStore

    url = pg_cluster.new_database()
    db = url.split("/")[3].split("?")[0]
    for _ in range(2):  # a second open migrates nothing and keeps the data
        s = PostgresStore(url, audit_key=None)
        await s.audit("note", actor="bob")
        await s.close()
    assert (await PostgresStore(url, audit_key=None).verify_audit()).rows == 2
    pg_cluster.admin("UPDATE ess.meta SET value = '99' WHERE key = 'schema_version'", db=db)
    s = PostgresStore(url, audit_key=None)
    with pytest.raises(StoreUnavailable, match="schema version 99 is newer"):
        await s.load_state()
    await s.close()


async def test_foreign_tables_in_the_schema_are_refused(pg_cluster: PGCluster) -> None:
    from ess_tui.store.postgres import PostgresStore

    url = pg_cluster.new_database()
    db = url.split("/")[3].split("?")[0]
    pg_cluster.admin("CREATE SCHEMA ess; CREATE TABLE ess.orders (id int)", db=db)
    s = PostgresStore(url, audit_key=None)
    with pytest.raises(StoreUnavailable, match="already holds other tables"):
        await s.load_state()
    await s.close()


async def test_password_never_reaches_errors_or_the_audit_trail(pg_cluster: PGCluster) -> None:
    from ess_tui.store.postgres import PostgresStore

    url = pg_cluster.new_database()
    with_pw = url.replace("postgres@", f"postgres:{PASSWORD}@").split("?")[0]
    s = PostgresStore(with_pw, audit_key=None)
    assert PASSWORD not in repr(s) and PASSWORD not in s.url
    await s.latch("boom", at=T0, actor="risk", details={"url": with_pw})
    rows = await s.read_audit()
    assert all(PASSWORD not in repr(r) for r in rows)
    await s.close()
    wrong = with_pw.replace(PASSWORD, "wrong-" + PASSWORD)
    bad = PostgresStore(wrong, audit_key=None)
    with pytest.raises(StoreUnavailable) as info:
        await bad.load_state()
    assert "authentication" in str(info.value) and PASSWORD not in str(info.value)
    await bad.close()
    down = PostgresStore(f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/x", audit_key=None,
                         connect_timeout_sec=1)
    with pytest.raises(StoreUnavailable, match="unreachable") as info:
        await down.load_state()
    assert PASSWORD not in str(info.value)
    await down.close()


async def test_wiring_opens_the_right_store_and_init_keeps_an_existing_trail(
        pg_cluster: PGCluster, tmp_path: Path) -> None:
    from ess_tui.store.postgres.store import PostgresStore
    from ess_tui.store.postgres.wiring import describe_db, init_postgres, open_store

    url = pg_cluster.new_database()
    assert isinstance(open_store(url), PostgresStore)
    assert isinstance(open_store(tmp_path / "ess.db"), SQLiteStore)
    assert "initialised the ESS store" in await init_postgres(url)
    s = open_store(url, audit_key=None)
    await s.latch("boom", at=T0, actor="risk")
    await s.close()
    assert "already exists" in await init_postgres(url)
    s = open_store(url, audit_key=None)
    assert (await s.load_state()).active
    await s.close()
    shown = describe_db(f"postgresql://ess:{PASSWORD}@db.example:5432/desk?password_env=X")
    assert shown == "postgresql://ess:***@db.example:5432/desk"


async def test_concurrent_latches_from_many_connections_make_one_activation(
        pg_cluster: PGCluster) -> None:
    """Eight stores (eight connections, as eight hosts would have) latch at once: the state row
    lock makes exactly one of them the activation, the rest extra triggers, one unbroken chain."""
    from ess_tui.store.postgres import PostgresStore

    url = pg_cluster.new_database()
    stores = [PostgresStore(url, audit_key=None) for _ in range(8)]
    await stores[0].load_state()
    try:
        for round_ in range(3):
            results = await asyncio.gather(*(s.latch(f"host {i}", actor=f"h{i}")
                                             for i, s in enumerate(stores)))
            assert sum(r.new for r in results) == 1
            assert {r.state.activation_count for r in results} == {round_ + 1}
            await stores[0].unlatch("alice")
        verdict = await stores[0].verify_audit()
        assert verdict.ok and verdict.rows == 3 * 9, verdict
    finally:
        for s in stores:
            await s.close()


async def test_store_fails_closed_while_the_server_is_down_and_recovers(
        own_cluster: PGCluster) -> None:
    """One store object across a kill -9 of the server: reads and writes raise
    StoreUnavailable (never "armed"), and the same object works again after the restart."""
    from ess_tui.store.postgres import PostgresStore

    url = own_cluster.new_database()
    s = PostgresStore(url, audit_key=None, connect_timeout_sec=2)
    try:
        await s.latch("before", at=T0, actor="risk")
        await s.unlatch("alice", at=T0 + timedelta(seconds=1))
        own_cluster.kill9()
        with pytest.raises(StoreUnavailable, match="unreachable|PostgreSQL error|no connection"):
            await s.load_state()
        with pytest.raises(StoreUnavailable):
            await s.latch("during", at=T0 + timedelta(seconds=2), actor="risk")
        own_cluster.start()
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            try:
                result = await s.latch("after", at=T0 + timedelta(seconds=3), actor="risk")
                break
            except StoreUnavailable:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)
        assert result.new and result.state.activation_count == 2
        verdict = await s.verify_audit()
        assert verdict.ok and verdict.rows == 3
    finally:
        await s.close()
