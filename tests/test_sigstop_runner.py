"""F5 with real processes: runner A is SIGSTOPped mid-flatten, runner B takes over and flattens,
an operator resets, A is SIGCONTed. A must not talk to the venue, must not write a flatten row
after the reset, and must not latch the desk on its own pause (event-loop lag)."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from ess_tui.cli import main
from test_lease import Runner, flatten_rows, lease_holder, query, wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP is POSIX")]


@pytest.fixture
def env(db):
    from test_lease import os
    base = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
    return {**base, "QT_ESS_CHECK_INTERVAL": "0.1", "QT_ESS_LEASE_TTL": "1",
            "QT_ESS_PAPER__LATENCY_MS": "400", "QT_ESS_PAPER__DRIFT": "false",
            "QT_ESS_LOG_FILE": str(db.parent / "ess.log")}


@pytest.fixture
def db(tmp_path, monkeypatch):
    from test_lease import os
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("QT_ESS_"):
            monkeypatch.delenv(key)
    return tmp_path / "ess.db"


def test_a_runner_stopped_mid_flatten_and_resumed_after_a_reset_stays_quiet(db, env):
    a = Runner(db, "a", env)
    b = None
    try:
        wait_for("A to take the lease", lambda: lease_holder(db) == a.holder)
        b = Runner(db, "b", env)
        wait_for("B to wait as a standby", lambda: "waiting as a standby" in b.log())
        assert main(["activate", "--db", str(db), "--reason", "desk halt", "--by", "alice"]) == 0
        # Stopped while its verify reads are in flight (each takes 400 ms on this venue).
        wait_for("A to close", lambda: "flatten close" in a.log(), timeout=10)
        a.proc.send_signal(signal.SIGSTOP)
        wait_for("B to take over", lambda: lease_holder(db) == b.holder)
        wait_for("B to flatten", lambda: flatten_rows(db), timeout=20)
        assert main(["reset", "--db", str(db), "--by", "alice", "--yes", "--override", "x"]) == 0
        reset_seq = query(db, "SELECT max(seq) FROM audit WHERE action = 'reset'")[0][0]
        time.sleep(6.0)  # a long pause (the tester's was 13 s): A's loop lag reads CRITICAL
        a_log_before = len(a.log())
        a.proc.send_signal(signal.SIGCONT)
        time.sleep(3.0)  # many cycles of A after its pause
        after = a.log()[a_log_before:]
        assert "venue is flat" not in after, f"A talked to the venue after losing its lease:\n{after}"
        late = [r for r in flatten_rows(db) if r[0] > reset_seq]
        assert late == [], f"A wrote a flatten row after the reset: {late}"
        activations = query(db, "SELECT count(*) FROM audit WHERE action = 'activate'")[0][0]
        assert activations == 1, f"A latched the desk on its own pause:\n{after}"
        assert a.proc.poll() is None and lease_holder(db) == b.holder
    finally:
        if a.proc.poll() is None:
            a.proc.send_signal(signal.SIGCONT)
            a.stop(signal.SIGKILL)
        if b is not None:
            b.stop()
