"""Child-process side of the benchmarks whose figures must belong to one process alone.

    python -m ess_tui.bench.worker throughput --db PATH --evaluators 50 --seconds 60
    python -m ess_tui.bench.worker gate --db PATH --checks 100000
    python -m ess_tui.bench.worker stop-latency --tries 200

Each prints one JSON object on stdout (and nothing else) and exits 0, or prints one line on stderr
and exits 1. Not a user command: ``ess-tui bench`` runs these.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def _summary(samples: list[float]) -> dict[str, Any]:
    from ess_tui.bench.stats import percentile

    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "median": percentile(samples, 50),
        "p99": percentile(samples, 99),
        "p999": percentile(samples, 99.9),
        "max": max(samples),
        "mean": sum(samples) / len(samples),
    }


# --- evaluation throughput ----------------------------------------------------------------------


def _extra_evaluator(runtime: Any, index: int) -> Any:
    """The index-th extra evaluator: the built-in kinds in turn, on the runtime's own sources."""
    from ess_tui.engine.evaluators import (
        DataFeedEmergencyEvaluator,
        DrawdownEmergencyEvaluator,
        ExecutionErrorEmergencyEvaluator,
        ManualTriggerEmergencyEvaluator,
        SystemHealthEmergencyEvaluator,
    )

    s = runtime.settings
    kind = index % 5
    name = f"bench-{index}"
    if kind == 0:
        return DrawdownEmergencyEvaluator(runtime.metrics, s.max_daily_loss, s.max_equity_dd,
                                          clock=runtime.clock, name=name)
    if kind == 1:
        return SystemHealthEmergencyEvaluator(runtime.health, clock=runtime.clock, name=name)
    if kind == 2:
        return ExecutionErrorEmergencyEvaluator(runtime.metrics, s.max_sl_hits, s.sl_period_minutes,
                                                s.max_order_failures, clock=runtime.clock, name=name)
    if kind == 3:
        return DataFeedEmergencyEvaluator(runtime.feed, s.max_data_staleness, clock=runtime.clock,
                                          name=name)
    return ManualTriggerEmergencyEvaluator(clock=runtime.clock, name=name)


async def _throughput(db: Path, evaluators: int, seconds: float, interval: float,
                      warmup: float) -> dict[str, Any]:
    import asyncio

    from ess_tui.bench.world import bench_settings
    from ess_tui.runtime.assembly import Runtime

    settings = bench_settings(db, check_interval=interval, latency_ms=20.0)
    runtime = await Runtime.build(settings, actor="bench")
    while len(runtime.evaluators) < evaluators:
        runtime.evaluators.append(_extra_evaluator(runtime, len(runtime.evaluators)))
    system = runtime.system
    cycle_ms: list[float] = []
    cycle_starts: list[tuple[float, int]] = []  # (perf_counter, evaluators in that cycle)
    measuring = False
    plain_cycle = system.run_cycle

    async def timed_cycle() -> Any:
        t0 = time.perf_counter()
        if measuring:
            cycle_starts.append((t0, len(system.evaluators)))
        try:
            return await plain_cycle()
        finally:
            if measuring:
                cycle_ms.append((time.perf_counter() - t0) * 1000.0)

    system.run_cycle = timed_cycle  # type: ignore[method-assign]
    await runtime.start()
    errors: set[str] = set()
    try:
        await asyncio.sleep(warmup)
        measuring = True
        windows: list[tuple[float, float, int]] = []  # wall, cpu, evaluations
        t_wall, t_cpu, n_eval = time.monotonic(), time.process_time(), system.evaluations_total
        first = (t_wall, t_cpu, n_eval)
        end = t_wall + seconds
        while True:
            await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
            w, c, e = time.monotonic(), time.process_time(), system.evaluations_total
            windows.append((w - t_wall, c - t_cpu, e - n_eval))
            t_wall, t_cpu, n_eval = w, c, e
            for ev in system.last_evaluations:
                if ev.error:
                    errors.add(ev.error)
            if w >= end - 1e-3:
                break
        measuring = False
        latched = runtime.controller.is_active
        reason = runtime.controller.state.reason
    finally:
        await runtime.stop()
    wall = t_wall - first[0]
    cpu = t_cpu - first[1]
    total = n_eval - first[2]
    return {
        "evaluators": len(runtime.evaluators),
        "interval_sec": interval,
        "seconds": wall,
        "evaluations": total,
        "cpu_seconds": cpu,
        "evaluations_per_minute_windows": [e / w * 60.0 for w, _, e in windows if w > 0],
        # cycle by cycle: the evaluators of one cycle over the time until the next one starts
        "evaluations_per_minute_cycles": [
            n * 60.0 / (t1 - t0) for (t0, n), (t1, _) in zip(cycle_starts, cycle_starts[1:])
            if t1 > t0
        ],
        "cpu_share_windows": [c / w for w, c, _ in windows if w > 0],
        "cycle_ms": _summary(cycle_ms),
        "cycle_ms_samples": cycle_ms,
        "evaluations_per_cpu_minute": (total / cpu * 60.0) if cpu > 0 else None,
        "latched": latched,
        "latched_reason": reason,
        "evaluator_errors": sorted(errors)[:5],
    }


# --- the trade gate -----------------------------------------------------------------------------


def _gate(db: Path, checks: int) -> dict[str, Any]:
    before = set(sys.modules)
    t0 = time.perf_counter_ns()
    from ess_tui.gate import TradeGate

    import_ms = (time.perf_counter_ns() - t0) / 1e6
    heavy = sorted(
        m for m in set(sys.modules) - before
        if m.split(".")[0] in ("ccxt", "textual", "aiosqlite", "pydantic", "pydantic_settings")
    )
    gate = TradeGate(db)
    t0 = time.perf_counter_ns()
    first = gate.check()
    cold_us = (time.perf_counter_ns() - t0) / 1e3
    for _ in range(min(200, checks)):
        gate.check()
    samples: list[float] = []
    allowed = blocked = unavailable = 0
    clock = time.perf_counter_ns
    for _ in range(checks):
        t0 = clock()
        decision = gate.check()
        samples.append((clock() - t0) / 1e3)
        if decision.allowed:
            allowed += 1
        elif (decision.reason or "").startswith("ESS state unavailable"):
            unavailable += 1
        else:
            blocked += 1
    gate.close()
    return {
        "import_ms": import_ms,
        "heavy_modules_imported": heavy,
        "first_check_us": cold_us,
        "first_allowed": first.allowed,
        "check_us": _summary(samples),
        "allowed": allowed,
        "blocked": blocked,
        "unavailable": unavailable,
    }


# --- the control room's STOP modal ----------------------------------------------------------------


def _stop_latency(tries: int) -> dict[str, Any]:
    import asyncio

    from ess_tui.bench.stop_latency import measure_stop_latency  # type: ignore[import-not-found]

    raw = asyncio.run(measure_stop_latency(tries))
    return {"raw": raw}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ess_tui.bench.worker")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--evaluators", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--warmup", type=float, default=2.0)
    p = sub.add_parser("gate")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--checks", type=int, default=100_000)
    p = sub.add_parser("stop-latency")
    p.add_argument("--tries", type=int, default=200)
    args = parser.parse_args(argv)
    try:
        if args.what == "throughput":
            import asyncio

            from ess_tui.logs import setup_logging

            # As `ess-tui headless` does, minus stderr: the log file costs what it costs there.
            setup_logging(args.db.with_suffix(".log"), to_stderr=False)
            out = asyncio.run(_throughput(args.db, args.evaluators, args.seconds, args.interval,
                                          args.warmup))
        elif args.what == "gate":
            out = _gate(args.db, args.checks)
        else:
            out = _stop_latency(args.tries)
    except Exception as exc:  # noqa: BLE001 - one line for the parent to report
        print(f"{args.what}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
