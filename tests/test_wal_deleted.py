"""A runner whose WAL and shared-memory files are deleted under it (F4).

A real ``ess-tui headless`` process; someone removes ``ess.db-wal`` and ``ess.db-shm`` while it runs.
Before the fix the runner kept the deleted files open: its lease beats went nowhere, it never saw
the reset nor the next activation, never flattened it, and logged nothing. Now its store notices
the files were replaced, says so in the log, reopens on the file as it now is, and carries on.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from ess_tui.cli import main
from test_lease import Runner, flatten_rows, query, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="unlinking an open file is POSIX"),
]


@pytest.fixture
def db(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("QT_ESS_"):
            monkeypatch.delenv(key)
    return tmp_path / "ess.db"


@pytest.fixture
def env(db):
    base = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
    return {**base, "QT_ESS_CHECK_INTERVAL": "0.5", "QT_ESS_LEASE_TTL": "2",
            "QT_ESS_PAPER__LATENCY_MS": "5", "QT_ESS_PAPER__DRIFT": "false"}


def _rm_sidecars(db) -> None:
    for suffix in ("-wal", "-shm"):
        os.unlink(f"{db}{suffix}")


def test_runner_notices_deleted_wal_sees_the_reset_and_flattens_the_next_latch(db, env, capsys):
    runner = Runner(db, "runner", env)
    try:
        wait_for("the runner to take the lease", lambda: query(db, "SELECT holder FROM lease"))
        assert main(["activate", "--db", str(db), "--reason", "a"]) == 0
        wait_for("the first flatten", lambda: len(flatten_rows(db)) == 1)
        _rm_sidecars(db)
        assert main(["reset", "--db", str(db), "--by", "bob", "--yes", "--override", "x"]) == 0
        assert main(["activate", "--db", str(db), "--reason", "second"]) == 0
        capsys.readouterr()
        # (The first flatten's row went with the deleted WAL: wait for one after activation #2.)
        second = query(db, "SELECT seq FROM audit WHERE action = 'activate' AND reason = 'second'")
        wait_for("the runner to flatten activation #2",
                 lambda: [r for r in flatten_rows(db) if r[0] > second[0][0]], timeout=20)
        log = runner.log()
        assert "store file replaced" in log and "-wal" in log, log
        assert runner.proc.poll() is None
        # Its lease lives in the real file again (the status is not "expired" while it runs).
        assert main(["status", "--db", str(db), "--json"]) == 3  # latched
        info = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert info["runner"] and info["runner"].split(":")[1] == str(runner.proc.pid), info
        assert "expired" not in json.dumps(info), info
        assert main(["audit", "--db", str(db), "--verify"]) == 0
    finally:
        code = runner.stop(signal.SIGTERM)
    assert code == 0, runner.log()


def test_wal_deleted_while_armed_then_activated_flattens_and_the_outbox_works(db, env, capsys):
    runner = Runner(db, "runner", env)
    try:
        wait_for("the runner to take the lease", lambda: query(db, "SELECT holder FROM lease"))
        _rm_sidecars(db)
        assert main(["activate", "--db", str(db), "--reason", "while blind"]) == 0
        wait_for("the flatten", lambda: len(flatten_rows(db)) == 1, timeout=20)
        capsys.readouterr()
        log = runner.log()
        assert "store file replaced" in log, log
        assert "cannot rollback" not in log, log
        assert main(["audit", "--db", str(db), "--verify"]) == 0
    finally:
        code = runner.stop(signal.SIGTERM)
    assert code == 0, runner.log()
