"""Smoke check of ``ess-tui bench --quick``: it runs, exits 0, and writes every scenario's figures.

Timings are never asserted here: this runs on shared CI machines. What a user would notice is
checked instead: the command finishes, prints its table, names the machine, writes a JSON file
with a median and a p99 for the figures of every scenario, and judges nothing in --quick.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ess_tui.bench import SCENARIOS, percentile, run_bench
from ess_tui.bench.stats import Figure, Goal

pytestmark = pytest.mark.slow


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict, Path]:
    home = tmp_path_factory.mktemp("bench")
    out = home / "bench.json"
    db = home / "state" / "ess.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
    done = subprocess.run(
        [sys.executable, "-m", "ess_tui", "bench", "--quick", "--json", str(out), "--db", str(db)],
        cwd=home, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    data = json.loads(out.read_text()) if out.exists() else {}
    return done, data, db


def test_quick_bench_exits_0_and_prints_the_table(quick_run) -> None:
    done, _, _ = quick_run
    assert done.returncode == 0, done.stderr[-2000:]
    assert "machine:" in done.stdout
    for title in ("Trigger → durable latch", "Latch → flat", "Evaluation throughput",
                  "Trade gate", "Control room", "Scale"):
        assert title in done.stdout


def test_quick_bench_json_has_every_scenario_with_median_and_p99(quick_run) -> None:
    _, data, _ = quick_run
    assert data["quick"] is True
    assert set(data["scenarios"]) == set(SCENARIOS)
    machine = data["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["python"] and machine["platform"]
    for key, scenario in data["scenarios"].items():
        assert scenario["error"] is None, f"{key}: {scenario['error']}"
        measured = [f for f in scenario["figures"] if not f["skipped"]]
        assert measured, f"{key} measured nothing"
        for figure in measured:
            assert figure["error"] is None, f"{key}/{figure['name']}: {figure['error']}"
            assert _is_number(figure["median"]) and _is_number(figure["p99"]), figure
            assert figure["n"] >= 1
        for figure in scenario["figures"]:
            if figure["skipped"]:
                # only the control room may be absent, and it says so
                assert key == "control_room" and "control room not available" in figure["skipped"]


def test_quick_bench_judges_nothing(quick_run) -> None:
    done, data, _ = quick_run
    figures = [f for s in data["scenarios"].values() for f in s["figures"]]
    assert all(f["met"] is None for f in figures)
    assert "MISSED" not in done.stdout


def test_quick_bench_leaves_the_configured_database_alone(quick_run) -> None:
    _, _, db = quick_run
    assert not db.exists()
    assert list(db.parent.iterdir()) == []  # its throwaway directory was removed


def test_unknown_scenario_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class _Settings:
        db_path = tmp_path / "ess.db"

    assert run_bench(_Settings(), quick=True, only="latch,warp_drive") == 2
    assert "warp_drive" in capsys.readouterr().err


def test_p99_is_the_worst_one_percent() -> None:
    samples = list(range(1, 101))  # 1 … 100
    assert percentile(samples, 50) == pytest.approx(50.5)
    slow = Figure.from_samples("latency", "ms", samples)
    fast = Figure.from_samples("throughput", "/min", samples, higher_is_better=True)
    assert slow.p99 == pytest.approx(99.01)
    assert fast.p99 == pytest.approx(1.99)
    goal = Goal("p99 ≤ 50", 50.0)
    slow.goal = goal
    slow.judge(enabled=True)
    assert slow.met is False
    slow.judge(enabled=False)
    assert slow.met is None
