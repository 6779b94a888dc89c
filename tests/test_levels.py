"""Graduated levels and scoped latches (issue 15), from outside: the real CLI in a subprocess
writes the latch, a trade gate in another process answers."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from ess_tui.engine.scopes import HALT, REDUCE_ONLY, Scope
from ess_tui.store.sqlite import SQLiteStore

GATE = r"""
import json, sys
from ess_tui.gate import TradeGate
gate = TradeGate(sys.argv[1])
out = []
for spec in json.loads(sys.argv[2]):
    d = gate.check(**spec)
    out.append({"allowed": d.allowed, "reason": d.reason, "level": d.level, "scope": d.scope})
print(json.dumps(out))
"""


@pytest.fixture
def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
    e.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    return e


def cli(tmp_path, env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ess_tui", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)


def gate(db, env, *specs: dict) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", GATE, str(db), json.dumps(list(specs))],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_reduce_only_lets_reducing_orders_through_and_blocks_the_rest(tmp_path, env):
    db = tmp_path / "ess.db"
    done = cli(tmp_path, env, "activate", "--db", str(db), "--reason", "daily loss -7%",
               "--level", "reduce-only")
    assert done.returncode == 0, done.stderr
    plain, reducing = gate(db, env, {}, {"reduce_only": True})
    assert not plain["allowed"] and plain["level"] == REDUCE_ONLY and plain["scope"] == "desk"
    assert "daily loss -7%" in plain["reason"] and "reduce_only=True" in plain["reason"]
    assert reducing["allowed"] and reducing["level"] == REDUCE_ONLY
    # the seed's view is unchanged: a reduce-only latch is not the desk halt
    status = cli(tmp_path, env, "status", "--db", str(db), "--json")
    info = json.loads(status.stdout)
    assert status.returncode == 0 and info["status"] == "armed"
    assert [x["level"] for x in info["latches"]] == ["reduce-only"]


def test_venue_halt_blocks_that_venue_only_and_strategy_halt_that_strategy_only(tmp_path, env):
    db = tmp_path / "ess.db"
    assert cli(tmp_path, env, "activate", "--db", str(db), "--reason", "okx feed stale",
               "--scope", "venue=okx").returncode == 0
    assert cli(tmp_path, env, "activate", "--db", str(db), "--reason", "mm runaway",
               "--scope", "strategy=mm-btc").returncode == 0
    okx, paper, anyone, mm, mm_paper, other = gate(
        db, env, {"venue": "okx"}, {"venue": "paper", "strategy": "arb"}, {},
        {"strategy": "mm-btc"}, {"venue": "paper", "strategy": "mm-btc"},
        {"venue": "paper", "strategy": "arb", "reduce_only": True})
    assert not okx["allowed"] and okx["scope"] == "venue=okx" and okx["level"] == HALT
    assert paper["allowed"] and other["allowed"]
    assert not anyone["allowed"]  # a caller that gives no scope is covered by every latch
    assert not mm["allowed"]  # no venue given: the okx halt covers it as well (widest shown)
    assert not mm_paper["allowed"] and mm_paper["scope"] == "strategy=mm-btc"
    assert "mm runaway" in mm_paper["reason"]
    text = cli(tmp_path, env, "status", "--db", str(db))
    assert text.returncode == 0 and "venue=okx" in text.stdout and "strategy=mm-btc" in text.stdout


def test_a_latch_only_escalates_until_reset_and_each_reset_clears_one_latch(tmp_path, env):
    db = tmp_path / "ess.db"
    venue = ("--scope", "venue=okx")
    assert cli(tmp_path, env, "activate", "--db", str(db), "--reason", "soft", *venue,
               "--level", "reduce-only").returncode == 0
    assert gate(db, env, {"venue": "okx", "reduce_only": True})[0]["allowed"]
    assert cli(tmp_path, env, "activate", "--db", str(db), "--reason", "hard", *venue).returncode == 0
    assert not gate(db, env, {"venue": "okx", "reduce_only": True})[0]["allowed"]
    again = cli(tmp_path, env, "activate", "--db", str(db), "--reason", "softer", *venue,
                "--level", "reduce-only")
    assert again.returncode == 0 and "only escalates" in again.stderr
    assert not gate(db, env, {"venue": "okx", "reduce_only": True})[0]["allowed"]
    # by hand in SQL: the trigger refuses a de-escalation too
    with sqlite3.connect(db) as conn, pytest.raises(sqlite3.IntegrityError, match="escalates"):
        conn.execute("UPDATE latches SET level = 'reduce_only' WHERE active = 1")
    # a reset of another scope finds nothing; the right one clears it
    assert cli(tmp_path, env, "reset", "--db", str(db), "--by", "bob", "--yes",
               "--scope", "venue=bybit").returncode == 1
    refused = cli(tmp_path, env, "reset", "--db", str(db), "--by", "bob", "--yes", *venue)
    assert refused.returncode == 1 and "not reported done" in refused.stderr  # no runner flattened
    assert not gate(db, env, {"venue": "okx"})[0]["allowed"]
    assert cli(tmp_path, env, "reset", "--db", str(db), "--by", "bob", "--yes", *venue,
               "--override", "no okx positions, checked by hand").returncode == 0
    assert gate(db, env, {"venue": "okx"})[0]["allowed"]
    audit = cli(tmp_path, env, "audit", "--db", str(db), "--verify", "--json", "--limit", "0")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    actions = [json.loads(x)["action"] for x in audit.stdout.splitlines() if x.startswith("{")]
    assert {"scope_latch", "scope_escalate", "scope_extra", "scope_reset",
            "reset_refused"} <= set(actions)


def test_every_scope_latched_and_reset_is_in_a_verifying_chain_and_the_seed_view_holds(tmp_path):
    db = tmp_path / "ess.db"

    async def main() -> None:
        store = SQLiteStore(db)
        from ess_tui.engine.controller import EmergencyStopController

        ctl = EmergencyStopController(store=store, acting=False, actor="t")
        await ctl.start() if hasattr(ctl, "start") else None
        scopes = [Scope(), Scope("venue", "okx"), Scope("strategy", "mm")]
        for s in scopes:
            await store.latch_scope(s, REDUCE_ONLY, f"ro {s}", actor="al")
        for s in scopes[1:]:
            await store.latch_scope(s, HALT, f"halt {s}", actor="al")
        state = await store.load_state()
        assert not state.active  # scoped and reduce-only latches never make the seed view active
        assert len(await store.active_latches()) == 3
        await ctl.activate("desk halt")  # the seed's whole-desk halt is still active=True
        assert ctl.is_active and (await store.load_state()).active
        for s in scopes:
            await store.reset_scope(s, "bob", "fixed")
        assert await store.active_latches() == []
        check = await store.verify_audit()
        assert check.ok and check.state_matches, check.problem
        rows = await store.read_audit(None, newest_first=False)
        latched = [r.details["scope"] for r in rows if r.action in ("scope_latch", "scope_escalate")]
        reset = [r.details["scope"] for r in rows if r.action == "scope_reset"]
        assert sorted(reset) == sorted(map(str, scopes)) and set(latched) == set(reset)
        await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("args, needle", [
    (("--scope", "exchange=okx"), "venue=NAME"),
    (("--scope", "venue="), "printable"),
    (("--scope", "venue=ok x"), "printable"),
    (("--level", "soft"), "reduce-only or halt"),
])
def test_bad_scope_or_level_is_one_line_exit_2_and_latches_nothing(tmp_path, env, args, needle):
    db = tmp_path / "ess.db"
    assert cli(tmp_path, env, "init", "--db", str(db)).returncode == 0
    done = cli(tmp_path, env, "activate", "--db", str(db), "--reason", "x", *args)
    assert done.returncode == 2 and needle in done.stderr and len(done.stderr.splitlines()) == 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM latches").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 0


def test_a_database_without_the_latches_table_blocks_the_gate(tmp_path, env):
    db = tmp_path / "ess.db"
    assert cli(tmp_path, env, "init", "--db", str(db)).returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE latches")
    (decision,) = gate(db, env, {"venue": "paper"})
    assert not decision["allowed"] and "latches" in decision["reason"]


def test_a_scope_that_is_not_text_is_blocked_not_raised(tmp_path):
    from ess_tui.gate import TradeGate

    db = tmp_path / "ess.db"

    async def main() -> None:
        store = SQLiteStore(db)
        await store.latch_scope(Scope("venue", "okx"), REDUCE_ONLY, "x")
        await store.close()

    asyncio.run(main())
    gate_ = TradeGate(db)
    assert not gate_.check(venue=["okx"]).allowed  # type: ignore[arg-type]
    assert gate_.check(venue="paper").allowed


def test_a_latch_cleared_by_hand_in_sql_fails_verification(tmp_path, env):
    db = tmp_path / "ess.db"
    assert cli(tmp_path, env, "activate", "--db", str(db), "--reason", "okx",
               "--scope", "venue=okx").returncode == 0
    assert cli(tmp_path, env, "audit", "--db", str(db), "--verify").returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE latches SET active = 0")
    done = cli(tmp_path, env, "audit", "--db", str(db), "--verify")
    assert done.returncode == 1 and "latches table was edited by hand" in done.stdout + done.stderr
