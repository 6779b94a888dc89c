"""The LISTENing trade gate on PostgreSQL, tested from outside: separate gate processes, a latch
from yet another process, a server killed with SIGKILL or frozen with SIGSTOP, then restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress

import pytest

from ess_tui.bench.desk_pg import GateProcess
from ess_tui.gate import TradeGate

from pg_server import PASSWORD, PGCluster, own_cluster, pg_cluster, pg_url  # noqa: F401

pytestmark = pytest.mark.slow

MAX_SILENCE = 1.0
#: How late a gate *process* may report an answer that changed: silence has no event, so its loop
#: looks at check() every 20 ms, on two cores shared with everything else. The gate's own bound
#: is MAX_SILENCE.
OBSERVE = 0.25


def latch_from_another_process(url: str, reason: str) -> None:
    code = ("import asyncio, sys\n"
            "from ess_tui.store.postgres import PostgresStore\n"
            "async def main():\n"
            "    s = PostgresStore(sys.argv[1], audit_key=None)\n"
            "    r = await s.latch(sys.argv[2], actor='risk-host')\n"
            "    await s.close()\n"
            "    assert r.new\n"
            "asyncio.run(main())\n")
    subprocess.run([sys.executable, "-c", code, url, reason], check=True, timeout=60)


def store_call(url: str, name: str, *args, **kwargs):
    from ess_tui.store.postgres import PostgresStore

    async def go():
        s = PostgresStore(url, audit_key=None)
        try:
            return await getattr(s, name)(*args, **kwargs)
        finally:
            await s.close()

    return asyncio.run(go())


def server_pids(cluster: PGCluster) -> list[int]:
    pid = cluster.postmaster_pid()
    assert pid is not None
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid, *(int(x) for x in kids.split())]


def start_gates(url: str, n: int) -> list[GateProcess]:
    gates = [GateProcess(url, max_silence=MAX_SILENCE) for _ in range(n)]
    for g in gates:
        assert g.ready.wait(30), g.proc.stderr.read() if g.proc.poll() is not None else "no ready"
        assert g.wait_for(True, timeout=30) is not None, f"gate never allowed: {g.flips}"
    return gates


def test_importing_the_gate_imports_no_postgresql_driver() -> None:
    code = ("import sys, ess_tui.gate\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_pool', "
            "'asyncpg', 'psycopg2')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_latch_in_one_process_blocks_three_gate_processes_and_a_dead_server_blocks_all(
        own_cluster: PGCluster) -> None:
    url = own_cluster.new_database()
    store_call(url, "load_state")  # init
    gates = start_gates(url, 3)
    try:
        # One process latches: every gate process answers blocked with the reason.
        t0 = time.monotonic()
        latch_from_another_process(url, "daily loss -12%")
        for g in gates:
            flip = g.wait_for(False, after=t0, timeout=5, contains="ESS active: daily loss -12%")
            assert flip is not None, g.flips
        store_call(url, "unlatch", "alice", note="reviewed")
        for g in gates:
            assert g.wait_for(True, after=t0, timeout=5) is not None

        # kill -9 the server mid-run: every gate blocked within max_silence.
        t_kill = time.monotonic()
        own_cluster.kill9()
        for g in gates:
            flip = g.wait_for(False, after=t_kill, timeout=5, contains="unreachable")
            assert flip is not None, g.flips
            assert flip[0] - t_kill <= MAX_SILENCE + OBSERVE, (flip, t_kill)
        # While the server is down the gates stay blocked, and say for how long.
        time.sleep(MAX_SILENCE + 0.2)
        assert all(not g.state()[1] and "unreachable" in g.state()[2] for g in gates)

        # Restart while armed: state intact, gates allowed again.
        t_up = time.monotonic()
        own_cluster.start()
        for g in gates:
            assert g.wait_for(True, after=t_up, timeout=15) is not None, g.flips
        state = store_call(url, "load_state")
        assert not state.active and state.activation_count == 1

        # Latch, kill -9, restart: the latch survived and the gates stay blocked.
        latch_from_another_process(url, "feed stale")
        t_latched = time.monotonic()
        for g in gates:
            assert g.wait_for(False, after=t_latched - 1, timeout=5, contains="feed stale")
        own_cluster.kill9()
        t_up = time.monotonic()
        own_cluster.start()
        time.sleep(2 * MAX_SILENCE)
        for g in gates:
            assert g.wait_for(True, after=t_up, timeout=0.01) is None, g.flips
            assert g.state()[2].startswith("ESS active: feed stale"), g.flips
        state = store_call(url, "load_state")
        assert state.active and state.reason == "feed stale" and state.activation_count == 2
        verdict = store_call(url, "verify_audit")
        assert verdict.ok and verdict.rows == 3, verdict
        t_reset = time.monotonic()
        store_call(url, "unlatch", "alice", note="after the restart")
        for g in gates:
            assert g.wait_for(True, after=t_reset, timeout=5) is not None
    finally:
        for g in gates:
            g.stop()


def test_a_frozen_server_blocks_every_gate_by_silence(own_cluster: PGCluster) -> None:
    """SIGSTOP: the connection stays open but nothing answers the gate's keepalive."""
    url = own_cluster.new_database()
    store_call(url, "load_state")
    gates = start_gates(url, 2)
    pids = server_pids(own_cluster)
    try:
        t_stop = time.monotonic()
        for p in pids:
            with suppress(ProcessLookupError):  # a backend may have just exited
                os.kill(p, signal.SIGSTOP)
        for g in gates:
            flip = g.wait_for(False, after=t_stop, timeout=5, contains="unreachable")
            assert flip is not None, g.flips
            assert flip[0] - t_stop <= MAX_SILENCE + OBSERVE, (flip, t_stop)
    finally:
        for p in pids:
            with suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)
    try:
        t_cont = time.monotonic()
        for g in gates:
            assert g.wait_for(True, after=t_cont, timeout=10) is not None, g.flips
    finally:
        for g in gates:
            g.stop()


def test_checks_are_answered_from_memory(pg_url: str, pg_cluster: PGCluster) -> None:
    """Freeze the server for less than max_silence: checks still answer at once (no round trip),
    and the latch notified before the freeze is in memory."""
    store_call(pg_url, "load_state")
    gate = TradeGate(pg_url, max_silence=MAX_SILENCE)
    try:
        assert gate.check().allowed
        store_call(pg_url, "latch", "boom", actor="risk")
        deadline = time.monotonic() + 5
        while gate.check().allowed and time.monotonic() < deadline:
            time.sleep(0.001)
        pids = server_pids(pg_cluster)
        for p in pids:
            with suppress(ProcessLookupError):  # a backend may have just exited
                os.kill(p, signal.SIGSTOP)
        try:
            t0 = time.perf_counter()
            answers = [gate.check() for _ in range(10_000)]
            spent = time.perf_counter() - t0
        finally:
            for p in pids:
                with suppress(ProcessLookupError):
                    os.kill(p, signal.SIGCONT)
        assert spent < 0.2, f"10,000 checks took {spent:.3f} s: a check waits for the server"
        assert all(a.reason == "ESS active: boom" for a in answers)
    finally:
        gate.close()


def test_gate_fails_closed_and_says_why(pg_cluster: PGCluster) -> None:
    down = TradeGate(f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/x", max_silence=0.5)
    d = down.check()
    assert not d.allowed and "unreachable" in d.reason and PASSWORD not in d.reason
    down.close()
    empty = pg_cluster.new_database()
    g = TradeGate(empty, max_silence=0.5)
    d = g.check()
    assert not d.allowed and "no ess-tui schema" in d.reason, d
    g.close()
    store_call(empty, "load_state")
    db = empty.split("/")[3].split("?")[0]
    pg_cluster.admin("UPDATE ess.meta SET value = '42' WHERE key = 'schema_version'", db=db)
    g = TradeGate(empty, max_silence=0.5)
    d = g.check()
    assert not d.allowed and "schema version 42 is newer" in d.reason, d
    g.close()


def test_gate_role_with_select_only_obeys(pg_cluster: PGCluster) -> None:
    from ess_tui.store.postgres.schema import grant_sql

    url = pg_cluster.new_database()
    db = url.split("/")[3].split("?")[0]
    store_call(url, "load_state")
    pg_cluster.admin("DO $$ BEGIN CREATE ROLE ess_gate LOGIN PASSWORD 'gate-pw'; "
                     "EXCEPTION WHEN duplicate_object THEN NULL; END $$; "
                     "DO $$ BEGIN CREATE ROLE ess_runner LOGIN PASSWORD 'runner-pw'; "
                     "EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    pg_cluster.admin("; ".join(grant_sql("ess")), db=db)
    os.environ["ESS_TEST_GATE_PW"] = "gate-pw"
    gate_url = url.replace("postgres@", "ess_gate@").replace(
        "password_env=ESS_TEST_PGPASSWORD", "password_env=ESS_TEST_GATE_PW")
    gate = TradeGate(gate_url)
    try:
        assert gate.check().allowed
        store_call(url, "latch", "manual stop", actor="ops")
        deadline = time.monotonic() + 5
        while gate.check().allowed and time.monotonic() < deadline:
            time.sleep(0.001)
        assert gate.check().reason == "ESS active: manual stop"
    finally:
        gate.close()


RUNNER = """
import asyncio, sys
from ess_tui.engine.state import utcnow
from ess_tui.engine.store import FencedOut
from ess_tui.store.postgres import PostgresStore

async def main():
    s = PostgresStore(sys.argv[1], audit_key=None)
    lease = await s.acquire_lease("host-a:runner", ttl_sec=float(sys.argv[2]), at=utcnow())
    print(lease.holder, lease.epoch, flush=True)
    await asyncio.to_thread(sys.stdin.readline)   # paused here (SIGSTOP), then told to go on
    try:
        await s.check_fence("host-a:runner", lease.epoch, 1)
        print("SEND", flush=True)
    except FencedOut as exc:
        print("FENCED", exc, flush=True)
    await s.close()

asyncio.run(main())
"""


def test_a_paused_runner_is_fenced_after_a_takeover(pg_url: str) -> None:
    """Split brain: runner A holds the lease and is SIGSTOPped; B takes the lease once it
    expired (by the server's clock); A wakes up and its fence check refuses to send."""
    from ess_tui.engine.store import FencedOut
    from ess_tui.engine.state import utcnow

    store_call(pg_url, "latch", "boom", actor="risk")
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, pg_url, "0.5"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        holder, epoch = proc.stdout.readline().split()
        assert holder == "host-a:runner"
        os.kill(proc.pid, signal.SIGSTOP)
        held = store_call(pg_url, "acquire_lease", "host-b:runner", ttl_sec=5, at=utcnow())
        assert held.holder == "host-a:runner", "a live lease is not taken over"
        time.sleep(0.8)
        b = store_call(pg_url, "acquire_lease", "host-b:runner", ttl_sec=5, at=utcnow())
        assert b.holder == "host-b:runner" and b.epoch == int(epoch) + 1
        os.kill(proc.pid, signal.SIGCONT)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        answer = proc.stdout.readline()
        assert answer.startswith("FENCED") and "host-b:runner holds it" in answer, answer
        store_call(pg_url, "check_fence", "host-b:runner", b.epoch, 1)  # B may act
        with pytest.raises(FencedOut):
            store_call(pg_url, "check_fence", "host-a:runner", int(epoch), 1)
    finally:
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(10)


def test_desk_bench_scenario_runs_quick(pg_url: str, tmp_path, monkeypatch) -> None:
    from ess_tui.bench import desk_pg
    from ess_tui.bench.world import BenchContext

    monkeypatch.setenv(desk_pg.URL_ENV, pg_url)
    result = desk_pg.run(BenchContext(quick=True, workdir=tmp_path))
    names = [f.name for f in result.figures]
    assert names == ["latch → all 3 gate processes blocked", "commit → all 3 gate processes blocked",
                     "trigger → durable latch on PostgreSQL", "check() from memory, gate process"]
    assert all(f.error is None and f.n > 0 and f.median is not None for f in result.figures)
    assert result.figures[-1].p99 < 1000, "a check from memory does not take a millisecond"


def test_an_unreadable_notification_blocks_until_the_row_is_read_again(
        pg_url: str, pg_cluster: PGCluster) -> None:
    """A hostile NOTIFY on the channel (anyone who can connect can send one) never allows
    trading: a notification can only block; "armed" always comes from the state row."""
    import psycopg

    from pg_server import PASSWORD

    store_call(pg_url, "latch", "boom", actor="risk")
    gate = TradeGate(pg_url, max_silence=MAX_SILENCE)
    try:
        assert gate.check().reason == "ESS active: boom"
        db = pg_url.split("/")[3].split("?")[0]
        with psycopg.connect(host="127.0.0.1", port=pg_cluster.port, user="postgres",
                             password=PASSWORD, dbname=db, autocommit=True) as conn:
            forged = ('{"active": false, "reason": null, "since": null, '
                      '"activation_count": 1, "change_seq": 99}')
            for payload in (forged, "not json"):
                conn.execute("SELECT pg_notify('ess_state', %s)", (payload,))
                answers = []
                deadline = time.monotonic() + 0.5
                while time.monotonic() < deadline:
                    answers.append(gate.check())
                    time.sleep(0.0005)
                assert not any(a.allowed for a in answers), (payload, answers[-1])
                assert answers[-1].reason == "ESS active: boom"
    finally:
        gate.close()


def test_a_hostile_reason_latches_and_reaches_every_gate_clean(pg_url: str) -> None:
    """Escape sequences, bidi overrides and 20,000 characters: the latch commits, its NOTIFY
    (bounded well under PostgreSQL's 8,000-byte payload limit) reaches the gate, the text is safe."""
    store_call(pg_url, "load_state")
    gate = TradeGate(pg_url)
    try:
        assert gate.check().allowed
        hostile = ("\x1b[2J\x1b[31mALL CLEAR\u202e\u0000 " + "é" * 20_000)
        result = store_call(pg_url, "latch", hostile, actor="\x1b]0;pwned\x07")
        assert result.new
        deadline = time.monotonic() + 5
        while gate.check().allowed and time.monotonic() < deadline:
            time.sleep(0.001)
        reason = gate.check().reason
        assert reason.startswith("ESS active: ") and len(reason) < 600
        assert not any(ch in reason for ch in "\x1b\u202e\x00\x07")
    finally:
        gate.close()


def test_require_runner_blocks_until_a_runner_holds_a_live_lease(pg_url: str) -> None:
    """`[gate] require_runner` on PostgreSQL: armed but nobody watching is blocked; a live lease
    lets it through with the holder named; a lease that runs out blocks again (server's clock)."""
    from datetime import datetime, timezone

    store_call(pg_url, "load_state")
    gate = TradeGate(pg_url, max_silence=MAX_SILENCE, require_runner=True)
    plain = TradeGate(pg_url, max_silence=MAX_SILENCE)
    try:
        first = gate.check()
        assert not first.allowed and "no ESS runner is watching this desk" in first.reason
        assert plain.check().allowed and plain.check().runner_live is False
        store_call(pg_url, "acquire_lease", "host-a:1:abc", ttl_sec=1.5,
                   at=datetime.now(timezone.utc))
        deadline = time.monotonic() + 5
        while not gate.check().allowed and time.monotonic() < deadline:
            time.sleep(0.01)
        ok = gate.check()
        assert ok.allowed and ok.runner_live is True and ok.holder == "host-a:1:abc"
        deadline = time.monotonic() + 6
        while gate.check().allowed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not gate.check().allowed, "a lease that ran out still let trading through"
    finally:
        gate.close()
        plain.close()
