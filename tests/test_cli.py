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


def test_audit_verify_prints_the_stores_problem_generically():
    from types import SimpleNamespace

    from ess_tui.cli.commands import verification_line

    assert verification_line(SimpleNamespace(ok=True, rows=7)) == "audit chain OK: 7 rows verified"
    line = verification_line(SimpleNamespace(ok=False, rows=5, first_bad_seq=None,
                                             problem="tail truncated: head counter says 9, 5 rows\x1b[2J"))
    assert line == "audit chain BROKEN: tail truncated: head counter says 9, 5 rows?[2J"
    line = verification_line(SimpleNamespace(ok=False, rows=5, first_bad_seq=3,
                                             problem="state row mismatch: the trail says latched"))
    assert line == "audit chain BROKEN at row 3: state row mismatch: the trail says latched"


def test_a_tampered_row_is_named_by_audit_verify(db, capsys):
    assert run("activate", "--db", db, "--reason", "halt") == 0
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET reason='rewritten' WHERE action='activate'")
    conn.commit()
    seq = conn.execute("SELECT seq FROM audit WHERE action='activate'").fetchone()[0]
    conn.close()
    capsys.readouterr()
    assert run("audit", "--db", db, "--verify") == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("audit chain BROKEN"), last


def test_log_lines_carry_no_escape_sequences(tmp_path):
    import logging

    from ess_tui.logs import SafeFormatter

    record = logging.LogRecord("venue", logging.WARNING, __file__, 1, "venue said %s",
                               ("\x1b]0;pwn\x07\x1b[2J\u202e",), None)
    text = SafeFormatter("%(message)s").format(record)
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert text.startswith("venue said ?]0;pwn")


def test_errors_never_print_a_secret(db, capsys, monkeypatch):
    monkeypatch.setenv("QT_ESS_API_SECRET", "hunter2-very-secret")
    assert run("status", "--config", str(Path(db).parent / "hunter2-very-secret.toml")) == 2
    err = capsys.readouterr().err
    assert "hunter2-very-secret" not in err and "***" in err


@pytest.mark.parametrize("command", ["tui", "headless", None])
def test_every_global_option_works_in_either_position(command):
    from ess_tui.cli.parser import GLOBALS, build_parser, resolve

    values = {"db": "x.db", "config": "c.toml", "check_interval": "0.5", "theme": "light",
              "metrics": "127.0.0.1:9464"}
    for name, flags, _, applies in GLOBALS:
        if applies is not None and (command or "tui") not in applies:
            continue
        opt = [flags[0], values[name]]
        cmd = [command] if command else []
        for argv in ([*opt, *cmd, "-v"], [*cmd, *opt, "-v"] if command else None, ["-v", *opt, *cmd]):
            if argv is None:
                continue
            args = resolve(build_parser().parse_args(argv))
            got = getattr(args, name)
            assert str(got) == values[name], (argv, got)
            assert args.verbose is True and args.command == (command or "tui")


def test_a_reset_is_bound_to_the_activation_the_operator_reviewed(db, capsys, monkeypatch):
    """Hole 8 through the CLI: while one operator sits at the RESET prompt for #1, another resets
    #1 and the ESS latches again (#2); the first operator's RESET must not un-latch #2."""
    assert run("activate", "--db", db, "--reason", "first") in (0, 3)  # 3: the old exit code
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)

    def other_operator(*args: str) -> int:
        return subprocess.run([sys.executable, "-m", "ess_tui", *args, "--db", db],
                              capture_output=True, timeout=60).returncode

    def meanwhile(prompt: str = "") -> str:
        assert "#1" in prompt or "RESET" in prompt
        assert other_operator("reset", "--by", "bob", "--yes", "--override", "checked") == 0
        assert other_operator("activate", "--reason", "second") in (0, 3)
        return "RESET"

    monkeypatch.setattr("builtins.input", meanwhile)
    assert run("reset", "--db", db, "--by", "alice", "--override", "checked") == 1
    assert "no longer the latched one" in capsys.readouterr().err
    assert run("status", "--db", db) == 3


def test_status_never_says_armed_while_the_gate_blocks(db, capsys, monkeypatch):
    from ess_tui.cli import commands
    from ess_tui.gate import GateDecision

    assert run("init", "--db", db) == 0
    monkeypatch.setattr(commands, "_gate_decision",
                        lambda settings: GateDecision(False, "ESS latch file says latched\x1b[2J"))
    capsys.readouterr()
    assert run("status", "--db", db) == 4
    out = capsys.readouterr().out
    assert out.startswith("STATE UNAVAILABLE — trading blocked") and "\x1b" not in out
    assert run("status", "--db", db, "--json") == 4
    info = json.loads(capsys.readouterr().out)
    assert info["trading_allowed"] is False and info["status"] == "unavailable"


def test_ctrl_c_at_the_reset_prompt_is_audited_as_abandoned(db, capsys, monkeypatch):
    assert run("activate", "--db", db, "--reason", "x") == 0
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)

    def interrupt(prompt: str = "") -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr("builtins.input", interrupt)
    assert run("reset", "--db", db, "--by", "bob", "--override", "ok") == 130
    assert run("status", "--db", db) == 3
    conn = sqlite3.connect(db)
    reasons = [r[0] for r in conn.execute("SELECT reason FROM audit WHERE action='reset_abandoned'")]
    conn.close()
    assert reasons == ["interrupted at the RESET prompt"]
