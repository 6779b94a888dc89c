"""F7: the desk's reset policy is durable. The runner (lease holder) records its configured reset
policy in the store; a reset from a process whose own config is weaker (no operators, no two-person
rule) is held to the stricter of the two. Through the real CLI and a real headless runner."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")]


def query(db, sql, *args):
    try:
        with sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True) as conn:
            return conn.execute(sql, args).fetchall()
    except sqlite3.Error:
        return []


def wait_for(what, predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def cli(env, *args):
    return subprocess.run([sys.executable, "-m", "ess_tui", *args], env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def active(db):
    rows = query(db, "SELECT value FROM policy WHERE key = 'emergency_stop'")
    if rows:
        return bool(json.loads(rows[0][0]).get("active"))
    rows = query(db, "SELECT active FROM state")
    return bool(rows and rows[0][0])


def test_a_weaker_env_cannot_reset_a_desk_whose_runner_has_a_strict_policy(tmp_path):
    db = tmp_path / "ess.db"
    base = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
    strict = {**base, "QT_ESS_CHECK_INTERVAL": "0.1", "QT_ESS_LEASE_TTL": "1",
              "QT_ESS_PAPER__LATENCY_MS": "5", "QT_ESS_PAPER__DRIFT": "false",
              "QT_ESS_LOG_FILE": str(tmp_path / "ess.log"),
              "QT_ESS_RESET__OPERATORS": '["alice", "bob"]', "QT_ESS_RESET__TWO_PERSON": "true"}
    weak = {**strict, "QT_ESS_RESET__OPERATORS": "[]", "QT_ESS_RESET__TWO_PERSON": "false"}
    err = (tmp_path / "runner.stderr").open("wb")
    runner = subprocess.Popen([sys.executable, "-m", "ess_tui", "headless", "--db", str(db)],
                              cwd=tmp_path, env=strict, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=err)
    try:
        stored = wait_for("the runner to record its reset policy", lambda: query(
            db, "SELECT value FROM policy WHERE key = 'reset_policy'"))
        assert json.loads(stored[0][0])["two_person"] is True
        assert query(db, "SELECT 1 FROM audit WHERE action = 'policy_set'"), "not audited"
        done = cli(strict, "activate", "--db", str(db), "--reason", "desk halt", "--by", "alice")
        assert done.returncode == 0, done.stderr
        wait_for("the flatten", lambda: query(db, "SELECT 1 FROM audit WHERE action='flattened'"))

        done = cli(weak, "reset", "--db", str(db), "--by", "mallory", "--yes", "--override", "x")
        assert done.returncode != 0, f"mallory reset the desk: {done.stdout} {done.stderr}"
        assert active(db), "the desk was un-latched by a weaker config"
        assert "not on the list" in (done.stdout + done.stderr), done.stderr

        done = cli(weak, "reset", "--db", str(db), "--by", "alice", "--yes", "--override", "x")
        assert done.returncode != 0 and active(db), "two-person rule skipped by a weaker config"
        assert "two-person" in (done.stdout + done.stderr), done.stderr

        done = cli(weak, "reset", "--db", str(db), "--by", "alice", "--approver", "bob", "--yes")
        assert done.returncode == 0, done.stderr
        assert not active(db)
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=20)
        err.close()
