"""The ``ess-tui`` command: exit codes, one-line errors, and a headless runner in another process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ess_tui.cli import main


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray ./ess.toml
    for key in list(os.environ):
        if key.startswith("QT_ESS_"):
            monkeypatch.delenv(key)
    return str(tmp_path / "ess.db")


def run(*args: str) -> int:
    return main(list(args))


def test_status_activate_reset_cycle_and_exit_codes(db, capsys):
    assert run("status", "--db", db) == 4  # no database yet: unknown means blocked
    assert "STATE UNAVAILABLE" in capsys.readouterr().out

    assert run("activate", "--db", db, "--reason", "desk halt", "--by", "alice") == 0
    assert run("status", "--db", db, "--json") == 3
    out = capsys.readouterr().out.strip().splitlines()[-1]
    info = json.loads(out)
    assert info["status"] == "latched" and info["reason"] == "desk halt"
    assert info["trading_allowed"] is False and info["activation_count"] == 1

    # no flatten recorded (no runner): the reset needs an override reason
    assert run("reset", "--db", db, "--by", "alice", "--yes") == 1
    assert "not verified flat" in capsys.readouterr().err
    assert run("reset", "--db", db, "--by", "alice", "--yes", "--override", "no positions on this desk") == 0
    assert run("status", "--db", db) == 0
    assert run("reset", "--db", db, "--by", "alice", "--yes") == 1  # nothing to reset

    assert run("audit", "--db", db, "--verify", "--json") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    actions = [json.loads(line)["action"] for line in lines if line.startswith("{")]
    assert {"activate", "reset", "reset_refused"} <= set(actions)
    assert lines[-1].startswith("audit chain OK")


def test_reset_without_yes_off_a_terminal_is_refused(db, capsys, monkeypatch):
    run("activate", "--db", db, "--reason", "x")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert run("reset", "--db", db, "--by", "bob", "--override", "ok") == 2
    assert "--yes" in capsys.readouterr().err
    assert run("status", "--db", db) == 3


def test_reset_typed_wrong_is_abandoned_and_audited(db, capsys, monkeypatch):
    run("activate", "--db", db, "--reason", "x")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt="": "reset")
    assert run("reset", "--db", db, "--by", "bob", "--override", "ok") == 1
    assert run("status", "--db", db) == 3
    monkeypatch.setattr("builtins.input", lambda prompt="": "RESET")
    assert run("reset", "--db", db, "--by", "bob", "--override", "ok") == 0
    run("audit", "--db", db, "--json")
    actions = [json.loads(x)["action"] for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert "reset_abandoned" in actions and "reset" in actions


def test_two_person_rule_and_operator_list(db, tmp_path, capsys):
    cfg = tmp_path / "ess.toml"
    cfg.write_text('[reset]\noperators = ["alice", "bob"]\ntwo_person = true\n')
    run("activate", "--db", db, "--reason", "x")
    base = ("reset", "--db", db, "--config", str(cfg), "--yes", "--override", "checked by hand")
    assert run(*base, "--by", "mallory", "--approver", "bob") == 1
    assert "not on the list" in capsys.readouterr().err
    assert run(*base, "--by", "alice") == 1
    assert "second approver" in capsys.readouterr().err
    assert run(*base, "--by", "alice", "--approver", "ALICE") == 1
    assert "different person" in capsys.readouterr().err
    assert run(*base, "--by", "alice", "--approver", "bob") == 0
    conn = sqlite3.connect(db)
    refused = conn.execute("SELECT count(*) FROM audit WHERE action='reset_refused'").fetchone()[0]
    assert refused == 3


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"QT_ESS_MAX_DAILY_LOSS": "lots"}, "QT_ESS_MAX_DAILY_LOSS = 'lots'"),
        ({"QT_ESS_CHECK_INTERVAL": "0.01"}, "QT_ESS_CHECK_INTERVAL = '0.01'"),
        ({"QT_ESS_MAX_SL_HITS": "-1"}, "QT_ESS_MAX_SL_HITS"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(db, env, fragment):
    proc = subprocess.run(
        [sys.executable, "-m", "ess_tui", "status", "--db", db],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "allowed" in lines[0]


def test_malformed_toml_is_one_line(db, tmp_path, capsys):
    cfg = tmp_path / "ess.toml"
    cfg.write_text("max_daily_loss = = 3\n")
    assert run("status", "--db", db, "--config", str(cfg)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid TOML" in err[0]


def test_corrupt_database_status_is_4(db, capsys):
    Path(db).write_bytes(b"this is not a database" * 100)
    assert run("status", "--db", db) == 4
    assert "STATE UNAVAILABLE" in capsys.readouterr().out
    assert Path(db).read_bytes().startswith(b"this is not a database")  # nothing overwritten


@pytest.mark.slow
def test_headless_runner_flattens_a_latch_written_by_activate(db, tmp_path):
    env = {**os.environ, "QT_ESS_CHECK_INTERVAL": "0.2", "QT_ESS_PAPER__LATENCY_MS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ess_tui", "headless", "--db", db],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # wait until the runner holds the lease
            if Path(db).exists():
                try:
                    with sqlite3.connect(db) as conn:
                        if conn.execute("SELECT count(*) FROM lease").fetchone()[0]:
                            break
                except sqlite3.Error:
                    pass
            time.sleep(0.05)
        else:
            pytest.fail("headless runner never took the lease: " + proc.stderr.read() if proc.poll() is not None else "")
        assert main(["activate", "--db", db, "--reason", "from the CLI"]) == 0
        latched_at = time.monotonic()
        flat = None
        while time.monotonic() - latched_at < 10:
            with sqlite3.connect(db) as conn:
                row = conn.execute(
                    "SELECT details FROM audit WHERE action='flattened' ORDER BY seq DESC LIMIT 1"
                ).fetchone()
            if row:
                flat = json.loads(row[0])
                break
            time.sleep(0.05)
        assert flat is not None, "the runner never flattened"
        assert flat["flat"] is True and flat["positions_closed"] == 4 and flat["orders_canceled"] >= 7
        assert time.monotonic() - latched_at < 3
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode == 0
