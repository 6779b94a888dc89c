#!/usr/bin/env python3
"""Crash soak: SIGKILL ``ess-tui headless`` before, during and after flattening, N times over.

    python scripts/soak_crash.py --runs 200
    python scripts/soak_crash.py --runs 50 --parallel 4 --latency-ms 300 --keep

Each run uses a fresh temporary database, latches the ESS, kills the runner at a chosen moment,
restarts it (sometimes twice) and checks that it is still latched with the same reason and count,
that the audit chain verifies with no row lost or duplicated, and that the new runner flattens to
a verified flat (see ``ess_tui/testing/crash.py``). Prints one line per failed run and a summary:

    runs: 200  kills: 262 (before 87, during 88, after 87)  restarts: 262  failures: 0  ...

Exit status: 0 when every run kept every promise, 1 otherwise. POSIX only.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from ess_tui.testing.crash import CrashHarness, CrashSettings, RunResult


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="how many runs (default 50)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule (default 0)")
    parser.add_argument("--latency-ms", type=float, default=150.0,
                        help="paper venue round trip; slower widens the 'during' window (default 150)")
    parser.add_argument("--second-kill-rate", type=float, default=0.3,
                        help="chance a run also kills the replacement runner (default 0.3)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds any one step may take before the run fails (default 30)")
    parser.add_argument("--workdir", type=Path, help="where runs go (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the databases and logs afterwards")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress dots")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.parallel < 1:
        parser.error("--runs and --parallel must be at least 1")

    # The drill latches in this process too; its log lines would only repeat the summary.
    logging.getLogger("ess_tui").setLevel(logging.CRITICAL + 1)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ess-crash-soak-"))
    settings = CrashSettings(latency_ms=args.latency_ms, timeout=args.timeout,
                             second_kill_rate=args.second_kill_rate)
    harness = CrashHarness(workdir, settings, seed=args.seed)
    print(f"crash soak: {args.runs} runs, {args.parallel} at a time, venue latency "
          f"{args.latency_ms:g} ms, seed {args.seed}, in {workdir}", flush=True)

    def progress(result: RunResult) -> None:
        if result.failures:
            for failure in result.failures:
                print(f"\nFAILED run {result.run}: {failure}", flush=True)
        elif not args.quiet:
            print(".", end="", flush=True)

    report = harness.soak(args.runs, parallel=args.parallel, progress=progress)
    print()
    print(report.summary())
    if args.keep or report.failures:
        print(f"databases and runner logs kept in {workdir}")
    elif args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
