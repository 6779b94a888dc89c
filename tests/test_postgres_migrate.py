"""``ess-tui migrate --from ess.db --to postgresql://…``: the SQLite store copied to a real
server with its audit chain intact and verified, refusals that copy nothing."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ess_tui.store.postgres.migrate import MigrationError, migrate_sqlite_to_postgres
from ess_tui.store.sqlite import SQLiteStore

from pg_server import PGCluster, pg_cluster, pg_url  # noqa: F401

T0 = datetime(2026, 2, 1, 8, 0, tzinfo=timezone.utc)


async def make_sqlite(path: Path, key: bytes | None = None) -> list[str]:
    s = SQLiteStore(path, audit_key=key)
    await s.latch("daily loss -12%", at=T0, actor="risk")
    await s.audit("flattened", actor="ess", details={"flat": True, "orders_cancelled": 3})
    await s.unlatch("alice", at=T0 + timedelta(minutes=5), note="reviewed")
    await s.set_policy("equity_baseline", {"equity": 10_000.0})
    await s.latch("feed stale 31 s", at=T0 + timedelta(hours=1), actor="risk")
    hashes = [r.hash for r in await s.read_audit(newest_first=False)]
    await s.close()
    return hashes


async def test_migrate_copies_the_chain_and_the_latch(tmp_path: Path, pg_url: str) -> None:
    from ess_tui.gate import TradeGate
    from ess_tui.store.postgres import PostgresStore

    db = tmp_path / "ess.db"
    hashes = await make_sqlite(db)
    report = await migrate_sqlite_to_postgres(db, pg_url, audit_key=None)
    assert report.audit_rows == 4 and report.latched and report.activation_count == 2
    assert "chain verified" in report.summary()
    pg = PostgresStore(pg_url, audit_key=None)
    state = await pg.load_state()
    assert state.active and state.reason == "feed stale 31 s" and state.activation_count == 2
    assert state.last_reset_by == "alice" and state.timestamp == T0 + timedelta(hours=1)
    rows = await pg.read_audit(newest_first=False)
    assert [r.hash for r in rows[:4]] == hashes, "the rows arrive verbatim, hashes and all"
    assert rows[-1].action == "migrated_from_sqlite"
    assert (await pg.verify_audit()).ok
    assert await pg.get_policy("equity_baseline") == {"equity": 10_000.0}
    # It carries on as the desk's store: a gate obeys it, a reset extends the same chain.
    gate = TradeGate(pg_url)
    assert gate.check().reason == "ESS active: feed stale 31 s"
    gate.close()
    await pg.unlatch("alice", at=T0 + timedelta(hours=2), expected_activation=2)
    verdict = await pg.verify_audit()
    assert verdict.ok and verdict.rows == 6
    await pg.close()
    with pytest.raises(MigrationError, match="already holds an ESS audit trail"):
        await migrate_sqlite_to_postgres(db, pg_url, audit_key=None)


async def test_keyed_trail_keeps_its_mode(tmp_path: Path, pg_url: str) -> None:
    from ess_tui.store.postgres import PostgresStore

    db = tmp_path / "ess.db"
    await make_sqlite(db, key=b"desk-key")
    with pytest.raises(MigrationError, match="does not verify"):
        await migrate_sqlite_to_postgres(db, pg_url, audit_key=None)
    await migrate_sqlite_to_postgres(db, pg_url, audit_key=b"desk-key")
    pg = PostgresStore(pg_url, audit_key=b"desk-key")
    assert (await pg.verify_audit()).ok
    await pg.audit("note", actor="bob")
    assert (await pg.verify_audit()).ok
    await pg.close()
    wrong = PostgresStore(pg_url, audit_key=b"other-key")
    assert not (await wrong.verify_audit()).ok
    await wrong.close()


async def test_a_tampered_source_is_not_copied(tmp_path: Path, pg_url: str) -> None:
    from ess_tui.store.postgres import PostgresStore

    db = tmp_path / "ess.db"
    await make_sqlite(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET reason = 'all fine' WHERE seq = 1")
    conn.close()
    with pytest.raises(MigrationError, match="row 1 was altered"):
        await migrate_sqlite_to_postgres(db, pg_url, audit_key=None)
    pg = PostgresStore(pg_url, audit_key=None)
    assert (await pg.read_audit()) == [] and not (await pg.load_state()).active
    await pg.close()


async def test_missing_or_foreign_source_is_refused(tmp_path: Path, pg_url: str) -> None:
    with pytest.raises(MigrationError, match="not found"):
        await migrate_sqlite_to_postgres(tmp_path / "nope.db", pg_url, audit_key=None)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(MigrationError, match="not an ess-tui database"):
        await migrate_sqlite_to_postgres(other, pg_url, audit_key=None)


def test_migrate_verb_exit_codes_and_no_password(tmp_path: Path, pg_cluster: PGCluster) -> None:
    import asyncio
    import subprocess
    import sys

    from pg_server import PASSWORD

    db = tmp_path / "ess.db"
    asyncio.run(make_sqlite(db))
    target = pg_cluster.new_database()
    with_pw = target.replace("postgres@", f"postgres:{PASSWORD}@").split("?")[0]
    code = ("import sys\nfrom ess_tui.store.postgres.wiring import migrate_main\n"
            "sys.exit(migrate_main(sys.argv[1], sys.argv[2]))\n")
    ok = subprocess.run([sys.executable, "-c", code, str(db), with_pw], capture_output=True,
                        text=True, timeout=60, env={**__import__("os").environ, "QT_ESS_AUDIT_KEY": ""})
    assert ok.returncode == 0, ok.stderr
    assert "4 audit rows (chain verified on arrival)" in ok.stdout and PASSWORD not in ok.stdout
    again = subprocess.run([sys.executable, "-c", code, str(db), with_pw], capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 2 and "already holds" in again.stderr
    assert PASSWORD not in again.stderr and again.stderr.count("\n") == 1
    bad = subprocess.run([sys.executable, "-c", code, str(db), str(tmp_path / "x.db")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--to must be a postgresql:// URL" in bad.stderr


async def test_a_source_with_active_scoped_latches_is_not_copied(tmp_path: Path, pg_url: str) -> None:
    from ess_tui.engine.scopes import HALT, Scope

    src = tmp_path / "ess.db"
    store = SQLiteStore(src)
    await store.latch_scope(Scope("venue", "okx"), HALT, "okx halted", actor="al")
    await store.close()
    with pytest.raises(MigrationError, match="scoped or reduce-only latch"):
        await migrate_sqlite_to_postgres(src, pg_url, audit_key=None)
