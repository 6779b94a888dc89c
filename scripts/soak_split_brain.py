#!/usr/bin/env python3
"""Split-brain soak: SIGSTOP the acting runner mid-flatten past its lease, let another take over
(or the operator reset), SIGCONT it, and check it sends nothing. N times over.

    python scripts/soak_split_brain.py --runs 20
    python scripts/soak_split_brain.py --runs 50 --parallel 2 --latency-ms 600 --keep

Variants alternate per run: takeover (runner B takes the lease and flattens), reset (the same, then
an audited two-person reset with override while A is frozen), reset-alone (no B; the reset alone).
After SIGCONT, A must make zero book-changing venue calls (from its paper call log), write no
flatten row, never re-latch, and say in its log that it was fenced (see
``ess_tui/testing/split_brain.py``). Prints one line per failed run and a summary:

    runs: 20 (takeover 7, reset 7, reset-alone 6)  failures: 0  venue calls after SIGCONT: 0  ...

Exit status: 0 when every run kept every promise, 1 otherwise. POSIX only.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from ess_tui.testing.split_brain import (
    VARIANTS,
    SplitBrainHarness,
    SplitBrainResult,
    SplitBrainSettings,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="how many runs (default 20)")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stop points (default 0)")
    parser.add_argument("--latency-ms", type=float, default=400.0,
                        help="paper venue round trip; slower widens the mid-flatten window (default 400)")
    parser.add_argument("--lease-ttl", type=float, default=1.0, help="runner lease ttl, s (default 1)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds any one step may take before the run fails (default 30)")
    parser.add_argument("--variant", action="append", choices=VARIANTS, dest="variants",
                        help="run only this variant (repeatable; default: all, alternating)")
    parser.add_argument("--workdir", type=Path, help="where runs go (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the databases and logs afterwards")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress dots")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.parallel < 1:
        parser.error("--runs and --parallel must be at least 1")
    if not 0 < args.lease_ttl <= 60 or not 0 <= args.latency_ms <= 10_000:
        parser.error("--lease-ttl must be in (0, 60] and --latency-ms in [0, 10000]")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ess-split-brain-"))
    settings = SplitBrainSettings(latency_ms=args.latency_ms, lease_ttl=args.lease_ttl,
                                  timeout=args.timeout)
    harness = SplitBrainHarness(workdir, settings, seed=args.seed)
    print(f"split-brain soak: {args.runs} runs, {args.parallel} at a time, venue latency "
          f"{args.latency_ms:g} ms, lease ttl {args.lease_ttl:g}s, seed {args.seed}, in {workdir}",
          flush=True)

    def progress(result: SplitBrainResult) -> None:
        if result.failures:
            for failure in result.failures:
                print(f"\nFAILED run {result.run} ({result.variant}): {failure}", flush=True)
        elif not args.quiet:
            print(".", end="", flush=True)

    variants = tuple(args.variants or VARIANTS)
    report = harness.soak(args.runs, parallel=args.parallel, variants=variants, progress=progress)
    print()
    print(report.summary())
    if args.keep or report.failures:
        print(f"databases, call logs and runner logs kept in {workdir}")
    elif args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
