"""The real ``ess-tui`` in a subprocess: the wrong desk (hole 10), terminal injection (hole 11),
``init``, the exit codes of ``activate``, and whether anyone is watching.

Every test points the user's state and config dirs at its own temp dir (XDG_*), so "the default
database" is a file the test can look at and require untouched.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

EVIL = "\x1b]0;pwn\x07\x1b[2J\x1b[31m\x9b31m\u202eevil\u2066\x08\r\n"  # argv holds no NUL
EVIL_DB = EVIL + "\x00"  # a database field can
BAD_BYTES = (b"\x1b", b"\x07", b"\xc2\x9b", b"\xe2\x80\xae", b"\xe2\x81\xa6", b"\x00", b"\x08", b"\r")


@pytest.fixture
def desk(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    work = tmp_path / "work"
    work.mkdir()

    class Desk:
        root = tmp_path
        default_db = tmp_path / "state" / "ess-tui" / "ess.db"
        other_db = tmp_path / "other.db"

        def cli(self, *args: str, extra_env: dict[str, str] | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                [sys.executable, "-m", "ess_tui", *args], cwd=work,
                env={**env, **(extra_env or {})}, capture_output=True, timeout=timeout,
            )

    return Desk()


def one_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in lines[0]
    return lines[0]


def assert_clean(data: bytes, bound: int) -> None:
    for bad in BAD_BYTES:
        assert bad not in data, (bad, data[:400])
    assert len(data) <= bound, len(data)


def latched(path: Path) -> bool:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT active FROM state").fetchone()[0] == 1


# --- init ---------------------------------------------------------------------------------------


def test_init_creates_an_armed_database_and_refuses_an_existing_path(desk):
    db = desk.root / "new" / "ess.db"
    proc = desk.cli("init", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    assert db.exists() and not latched(db)
    assert desk.cli("status", "--db", str(db)).returncode == 0

    desk.cli("activate", "--db", str(db), "--reason", "halt")
    before = db.read_bytes()
    proc = desk.cli("--db", str(db), "init")
    assert proc.returncode == 2
    assert "already exists" in one_line(proc)
    assert db.read_bytes() == before and latched(db)

    empty = desk.root / "empty.db"
    empty.write_bytes(b"")
    proc = desk.cli("init", "--db", str(empty))
    assert proc.returncode == 2 and "already exists" in one_line(proc)
    assert empty.read_bytes() == b""


# --- hole 10: the wrong desk ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["before", "after"])
def test_db_acts_on_the_named_desk_in_either_position(desk, where):
    args = ["activate", "--reason", "stop the other desk"]
    args = ["--db", str(desk.other_db), *args] if where == "before" else [*args, "--db", str(desk.other_db)]
    proc = desk.cli(*args)
    assert not desk.default_db.exists(), "the default desk was touched"
    assert latched(desk.other_db)
    assert proc.returncode == 0, proc.stderr
    assert desk.cli("--db", str(desk.other_db), "status").returncode == 3
    assert desk.cli("status", "--db", str(desk.other_db)).returncode == 3


@pytest.mark.parametrize("where", ["before", "after"])
def test_config_and_check_interval_are_read_in_either_position(desk, where):
    cfg = desk.root / "bad.toml"
    cfg.write_text("max_sl_hits = 0\n")
    for opt, command in ((["--config", str(cfg)], "status"), (["--check-interval", "0.01"], "headless")):
        args = [*opt, command] if where == "before" else [command, *opt]
        proc = desk.cli(*args, "--db", str(desk.other_db), timeout=30)
        assert proc.returncode == 2, (args, proc.stderr)
        line = one_line(proc)
        assert "max_sl_hits" in line or "check-interval" in line.replace("_", "-"), line


def test_an_option_that_would_be_lost_is_refused(desk):
    proc = desk.cli("--db", str(desk.other_db), "activate", "--reason", "x", "--db", str(desk.root / "y.db"))
    assert proc.returncode == 2 and "--db given both before and after" in one_line(proc)
    assert not desk.other_db.exists() and not (desk.root / "y.db").exists()
    assert not desk.default_db.exists()

    proc = desk.cli("--db", "a.db", "--db", "b.db", "status")
    assert proc.returncode == 2 and "given twice" in one_line(proc)

    proc = desk.cli("--check-interval", "1", "status")
    assert proc.returncode == 2 and "no effect on `status`" in one_line(proc)

    proc = desk.cli("--db", "", "activate", "--reason", "x")
    assert proc.returncode == 2 and "--db" in one_line(proc)
    assert not desk.default_db.exists()


# --- hole 11: terminal injection ----------------------------------------------------------------


def test_reset_by_escape_sequences_is_echoed_clean_and_bounded(desk):
    db = str(desk.other_db)
    assert desk.cli("activate", "--db", db, "--reason", "x" + EVIL).returncode in (0, 3)  # 3: before
    by = EVIL + "A" * 50_000
    proc = desk.cli("reset", "--db", db, "--by", by, "--yes", "--override", EVIL * 100)
    assert proc.returncode == 0, proc.stderr[:300]
    assert proc.stdout.startswith("ARMED — reset by ".encode())
    assert_clean(proc.stdout + proc.stderr, 1000)


def _tamper(db: Path, evil: str) -> None:
    """Rewrite every text field with raw escape sequences, as an attacker with file access would
    (the append-only triggers dropped, then put back so the schema still looks right)."""
    conn = sqlite3.connect(db)
    triggers = conn.execute("SELECT sql FROM sqlite_master WHERE type='trigger'").fetchall()
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("UPDATE state SET reason=?, last_reset_by=?", (evil, evil))
    conn.execute("UPDATE audit SET action=?, actor=?, reason=?, details=?",
                 (evil, evil, evil, json.dumps({evil: evil, "n": [evil] * 5}, ensure_ascii=False)))
    assert conn.execute("UPDATE lease SET holder=?", (evil,)).rowcount == 1
    for (sql,) in triggers:
        conn.execute(sql)
    conn.commit()
    conn.close()


def test_status_and_audit_over_a_tampered_database_print_no_escape(desk):
    db = desk.other_db
    assert desk.cli("activate", "--db", str(db), "--reason", "halt").returncode in (0, 3)  # 3: before
    _hold_lease(db, "honest:1", datetime.now(timezone.utc), ttl=600)
    _tamper(db, EVIL_DB + "B" * 20_000)
    outputs = []
    for args in (("status",), ("status", "--json"), ("audit",), ("audit", "--json"),
                 ("audit", "--verify"), ("audit", "--verify", "--json")):
        proc = desk.cli(*args, "--db", str(db))
        assert proc.returncode in (0, 1, 3, 4), (args, proc.returncode, proc.stderr[:300])
        assert_clean(proc.stdout + proc.stderr, 20_000)
        outputs.append(proc.stdout)
    text = b"".join(outputs).decode()
    assert "evil" in text  # the tampered text was shown (made safe), not hidden


def test_a_tampered_config_path_or_argument_error_prints_no_escape(desk):
    proc = desk.cli("status", "--db", str(desk.root / ("x" + EVIL + ".db")))
    assert_clean(proc.stdout + proc.stderr, 5000)
    proc = desk.cli("status", "--bogus" + EVIL)
    assert proc.returncode == 2
    assert_clean(proc.stdout + proc.stderr, 5000)


# --- activate's exit codes ----------------------------------------------------------------------


def test_activate_exit_codes(desk):
    db = desk.other_db
    proc = desk.cli("activate", "--db", str(db), "--reason", "desk halt")
    assert proc.returncode == 0 and latched(db)
    proc = desk.cli("activate", "--db", str(db), "--reason", "   ")
    assert proc.returncode == 2 and "--reason" in one_line(proc)
    proc = desk.cli("activate", "--db", str(db))
    assert proc.returncode == 2 and "--reason" in one_line(proc)

    garbage = desk.root / "garbage.db"
    garbage.write_bytes(b"not a database at all " * 200)
    proc = desk.cli("activate", "--db", str(garbage), "--reason", "halt")
    assert proc.returncode == 1, proc.stderr
    assert "could not write the latch" in proc.stderr.decode()
    assert garbage.read_bytes() == b"not a database at all " * 200


# --- is anyone watching? ------------------------------------------------------------------------


def _hold_lease(db: Path, holder: str, at: datetime, ttl: float = 5.0) -> None:
    from ess_tui.store.sqlite import SQLiteStore

    async def go() -> None:
        store = SQLiteStore(db)
        try:
            await store.load_state()
            await store.acquire_lease(holder, ttl_sec=ttl, at=at)
        finally:
            await store.close()

    asyncio.run(go())


def test_status_says_whether_a_runner_holds_a_live_lease(desk):
    db = desk.other_db
    assert desk.cli("init", "--db", str(db)).returncode == 0
    proc = desk.cli("status", "--db", str(db))
    assert proc.returncode == 0 and b"no ESS runner is watching this desk" in proc.stdout
    info = json.loads(desk.cli("status", "--db", str(db), "--json").stdout)
    assert info["runner_live"] is False

    _hold_lease(db, "desk-7:4242", datetime.now(timezone.utc), ttl=60)
    proc = desk.cli("status", "--db", str(db))
    assert proc.returncode == 0
    line = proc.stdout.decode().splitlines()[-1]
    assert line.startswith("runner: desk-7:4242 (lease live, renewed ") and line.endswith(" s ago)"), line
    info = json.loads(desk.cli("status", "--db", str(db), "--json").stdout)
    assert info["runner_live"] is True and info["runner"] == "desk-7:4242"
    assert 0 <= info["runner_renewed_ago_sec"] < 30


def test_status_reports_an_expired_lease_as_nobody_watching(desk):
    db = desk.other_db
    assert desk.cli("init", "--db", str(db)).returncode == 0
    _hold_lease(db, "gone:1", datetime.now(timezone.utc) - timedelta(hours=1), ttl=5)
    proc = desk.cli("status", "--db", str(db))
    assert b"no ESS runner is watching this desk" in proc.stdout
    assert json.loads(desk.cli("status", "--db", str(db), "--json").stdout)["runner_live"] is False


def test_status_audit_and_reset_never_create_a_database(desk):
    missing = desk.root / "nowhere" / "ess.db"
    for args in (("status",), ("status", "--json"), ("audit",), ("audit", "--verify"),
                 ("reset", "--by", "alice", "--yes", "--override", "x")):
        proc = desk.cli(*args, "--db", str(missing))
        assert proc.returncode != 0, args
        assert not missing.exists(), args
    assert not desk.default_db.exists()


def test_ctrl_c_at_the_real_reset_prompt_exits_at_once_and_is_audited(desk):
    import os as _os
    import pty
    import select
    import signal
    import time

    db = desk.other_db
    assert desk.cli("activate", "--db", str(db), "--reason", "halt").returncode in (0, 3)
    env = {k: v for k, v in _os.environ.items() if not k.startswith("QT_ESS_")}
    env.update(XDG_STATE_HOME=str(desk.root / "state"), XDG_CONFIG_HOME=str(desk.root / "config"))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ess_tui", "reset", "--db", str(db), "--by", "bob", "--override", "ok"],
        stdin=slave, stdout=slave, stderr=slave, env=env, cwd=desk.root,
    )
    _os.close(slave)
    try:
        seen = b""
        deadline = time.monotonic() + 30
        while b"Type RESET" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    seen += _os.read(master, 4096)
                except OSError:
                    break
        assert b"Type RESET" in seen, seen
        # A person presses Ctrl-C after reading the prompt. Sent within microseconds of the
        # prompt's bytes, SIGINT can land between input()'s write and its read, where CPython
        # does not look at pending signals until the read returns (seen 1 in ~10 under load).
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _os.close(master)
    assert latched(db)
    with sqlite3.connect(db) as conn:
        reasons = [r[0] for r in conn.execute("SELECT reason FROM audit WHERE action='reset_abandoned'")]
    assert reasons == ["interrupted at the RESET prompt"]
