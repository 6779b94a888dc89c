"""One acting runner per database: two real ``ess-tui headless`` processes on one file.

The first holds the runner lease and flattens; the second says who holds the lease and waits.
SIGKILL the holder: the standby takes over once the lease expires (``QT_ESS_LEASE_TTL``) and
flattens the next latch itself.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ess_tui.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX"),
]

LEASE_TTL = 1.0


class Runner:
    def __init__(self, db: Path, name: str, env: dict[str, str]) -> None:
        self.err_path = db.parent / f"{name}.stderr"
        self._err = self.err_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ess_tui", "headless", "--db", str(db)],
            cwd=db.parent, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._err,
        )
        # host:pid:random — unique even across PID namespaces (issue 10, hole 6).
        self.prefix = f"{socket.gethostname()}:{self.proc.pid}:"
        self.db = db

    @property
    def holder(self) -> str:
        """This runner's holder id once it has held the lease (read from the lease table)."""
        if getattr(self, "_holder", None) is None:
            found = lease_holder(self.db)
            if found and found.startswith(self.prefix):
                self._holder = found
        return getattr(self, "_holder", None) or f"{self.prefix}<not yet seen>"

    def log(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=15)
        finally:
            self._err.close()


def wait_for(what: str, predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def query(db: Path, sql: str, *args):
    try:
        with sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True) as conn:
            return conn.execute(sql, args).fetchall()
    except sqlite3.Error:
        return []


def lease_holder(db: Path) -> str | None:
    rows = query(db, "SELECT holder FROM lease WHERE name = 'runner'")
    return rows[0][0] if rows else None


def flatten_rows(db: Path) -> list[tuple[int, dict]]:
    return [(seq, json.loads(d)) for seq, d in
            query(db, "SELECT seq, details FROM audit WHERE action = 'flattened' ORDER BY seq")]


def lease_row(db: Path, holder: str) -> tuple[int, dict] | None:
    rows = query(db, "SELECT seq, details FROM audit WHERE action = 'lease_acquired' AND actor = ?",
                 holder)
    return (rows[-1][0], json.loads(rows[-1][1])) if rows else None


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
    return {**base, "QT_ESS_CHECK_INTERVAL": "0.1", "QT_ESS_LEASE_TTL": str(LEASE_TTL),
            "QT_ESS_PAPER__LATENCY_MS": "5", "QT_ESS_PAPER__DRIFT": "false",
            "QT_ESS_LOG_FILE": str(db.parent / "ess.log")}


def test_standby_names_the_holder_waits_and_takes_over_when_it_dies(db, env, capsys):
    first = Runner(db, "first", env)
    second = None
    try:
        wait_for("the first runner to take the lease", lambda: lease_holder(db) == first.holder)
        second = Runner(db, "second", env)
        standby_line = f"runner lease held by {first.holder}"
        wait_for("the second runner to say who holds the lease",
                 lambda: standby_line in second.log() and "waiting as a standby" in second.log())
        assert main(["status", "--db", str(db), "--json"]) == 0
        assert json.loads(capsys.readouterr().out.splitlines()[-1])["runner"] == first.holder

        # While the first holds the lease, it alone flattens.
        assert main(["activate", "--db", str(db), "--reason", "desk halt", "--by", "alice"]) == 0
        assert f"the runner {first.holder} flattens" in capsys.readouterr().out
        seq, details = wait_for("the holder to flatten", lambda: (flatten_rows(db) or [None])[0])
        assert details["flat"] is True and details["positions_closed"] == 4
        time.sleep(0.5)  # several standby cycles: it must not touch its venue
        assert "ess_tui.engine.flatten" not in second.log()
        assert "ESS LATCHED (read from the store): desk halt" in second.log()
        assert len(flatten_rows(db)) == 1
        assert main(["reset", "--db", str(db), "--by", "alice", "--yes"]) == 0

        # The holder dies without a word; the standby takes over once the lease expires.
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        died = time.monotonic()
        wait_for("the standby to take the lease", lambda: lease_holder(db) == second.holder)
        took = time.monotonic() - died
        assert took < LEASE_TTL + 2.0, f"took over after {took:.2f}s"
        taken_seq, taken = lease_row(db, second.holder)
        assert taken["previous_holder"] == first.holder
        wait_for("the standby to log the takeover",  # the log line follows the commit
                 lambda: f"runner lease acquired by {second.holder}" in second.log())

        # The new holder flattens the next latch.
        assert main(["activate", "--db", str(db), "--reason", "second halt"]) == 0
        assert second.holder in capsys.readouterr().out
        seq2, details2 = wait_for("the new holder to flatten",
                                  lambda: [r for r in flatten_rows(db) if r[0] > taken_seq])[0]
        assert details2["flat"] is True and details2["positions_closed"] == 4
        assert "venue is flat" in second.log()
        assert main(["audit", "--db", str(db), "--verify"]) == 0
    finally:
        if first.proc.poll() is None:
            first.stop(signal.SIGKILL)
        if second is not None:
            assert second.stop() == 0
    assert lease_holder(db) is None, "a clean stop releases the lease"
