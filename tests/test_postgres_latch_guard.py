"""F6: the runner's role cannot un-latch by plain SQL, and a hand-edited state row is named by
``verify`` (a real PostgreSQL server, connecting as the runner's role with the documented grants)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from pg_server import PASSWORD_ENV, PGCluster, pg_cluster  # noqa: F401 - fixture


T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _runner(pg_cluster: PGCluster, url: str, db: str) -> str:
    from ess_tui.store.postgres.schema import grant_sql

    pg_cluster.admin("DO $$ BEGIN CREATE ROLE ess_runner LOGIN PASSWORD 'runner-pw'; "
                     "EXCEPTION WHEN duplicate_object THEN NULL; END $$; "
                     "DO $$ BEGIN CREATE ROLE ess_gate LOGIN PASSWORD 'gate-pw'; "
                     "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    pg_cluster.admin("; ".join(grant_sql("ess")), db=db)
    os.environ["ESS_TEST_RUNNER_PW"] = "runner-pw"
    return url.replace("postgres@", "ess_runner@").replace(
        f"password_env={PASSWORD_ENV}", "password_env=ESS_TEST_RUNNER_PW")


async def test_runner_role_cannot_unlatch_by_sql_and_verify_names_a_hand_edit(
        pg_cluster: PGCluster) -> None:
    from ess_tui.store.postgres import PostgresStore

    url = pg_cluster.new_database()
    db = url.split("/")[3].split("?")[0]
    owner = PostgresStore(url, audit_key=None)
    await owner.latch("boom", at=T0, actor="risk")
    await owner.close()
    runner = PostgresStore(_runner(pg_cluster, url, db), audit_key=None)
    try:
        with psycopg.connect(host="127.0.0.1", port=pg_cluster.port, user="ess_runner",
                             password="runner-pw", dbname=db, autocommit=True) as conn:
            for sql in ("UPDATE ess.state SET active = false, reason = null",
                        "UPDATE ess.policy SET value = jsonb_set(value, '{active}', 'false') "
                        "WHERE key = 'emergency_stop'"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="audit row"):
                    conn.execute(sql)
        state = await runner.load_state()
        assert state.active and state.reason == "boom"
        # The store's own audited paths still work for the runner's role.
        await runner.unlatch("alice", at=T0 + timedelta(minutes=1))
        await runner.latch("again", at=T0 + timedelta(minutes=2), actor="risk")
        assert (await runner.verify_audit()).ok

        # Someone who gets past the trigger (its owner, disabling it) edits the row by hand:
        # verify replays the trail and names the edit.
        pg_cluster.admin("ALTER TABLE ess.state DISABLE TRIGGER state_change_audited; "
                         "UPDATE ess.state SET active = false, reason = null; "
                         "ALTER TABLE ess.state ENABLE TRIGGER state_change_audited", db=db)
        result = await runner.verify_audit()
        assert not result.ok and result.state_matches is False
        assert "state row was edited by hand" in (result.problem or ""), result
    finally:
        await runner.close()
