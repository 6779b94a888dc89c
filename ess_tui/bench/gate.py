"""Scenario 4 — ``TradeGate.check()`` from another process.

A child process imports ``ess_tui.gate`` (timed, and checked to pull in no ccxt, Textual, aiosqlite
or pydantic), makes one cold check, warms up, then times every one of N checks with
``perf_counter_ns``. It runs twice: against an idle database, and while this process latches and
resets the ESS as fast as the store allows (WAL readers do not wait for writers; the figure shows
whether that holds).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from ess_tui.bench.stats import Figure, Goal, ScenarioResult
from ess_tui.bench.world import BenchContext, run_worker

KEY = "gate"
TITLE = "4. Trade gate check, another process"
GOAL = Goal("p99 ≤ 200 µs", 200.0)


async def _prepare(db: Path) -> None:
    from ess_tui.store.sqlite import SQLiteStore

    store = SQLiteStore(db, audit_key=None)
    try:
        await store.load_state()
    finally:
        await store.close()


class _Writer(threading.Thread):
    """Latches and resets the ESS in a loop on its own event loop until told to stop."""

    def __init__(self, db: Path) -> None:
        super().__init__(name="bench-gate-writer", daemon=True)
        self.db = db
        self.stop = threading.Event()
        self.writes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._loop())
        except BaseException as exc:  # noqa: BLE001 - reported by the scenario
            self.error = exc

    async def _loop(self) -> None:
        from ess_tui.store.sqlite import SQLiteStore

        store = SQLiteStore(self.db, audit_key=None)
        try:
            while not self.stop.is_set():
                await store.latch("bench: gate under writes", actor="bench")
                await store.unlatch("bench", note="benchmark sample")
                self.writes += 2
        finally:
            await store.close()


def _figure(name: str, out: dict[str, Any], *, note: str, extra: dict[str, Any]) -> Figure:
    """The child timed every check and summarised them (median and p99 over all of them)."""
    summary = out["check_us"]
    return Figure(name, "µs", median=summary["median"], p99=summary["p99"], n=summary["n"],
                  goal=GOAL, note=note, extra=extra)


def run(ctx: BenchContext) -> ScenarioResult:
    result = ScenarioResult(KEY, TITLE)
    checks = 3_000 if ctx.quick else 100_000
    db = ctx.path("gate")
    asyncio.run(_prepare(db))

    ctx.say(f"  {checks:,} checks, idle database")
    idle = run_worker(ctx, "gate", "--db", str(db), "--checks", str(checks), timeout=300)
    if idle["heavy_modules_imported"]:
        result.notes.append("importing ess_tui.gate pulled in: "
                            + ", ".join(idle["heavy_modules_imported"][:8]))
    result.add(_figure(
        "check(), idle database", idle,
        note=(f"one SELECT on a kept connection; cold first check {idle['first_check_us']:.0f} µs, "
              f"import {idle['import_ms']:.1f} ms"),
        extra={"summary": idle["check_us"], "import_ms": idle["import_ms"],
               "first_check_us": idle["first_check_us"],
               "heavy_modules_imported": idle["heavy_modules_imported"]},
    ))

    n_busy = checks // 2 if ctx.quick else 50_000
    ctx.say(f"  {n_busy:,} checks while the ESS latches and resets in a loop")
    writer = _Writer(db)
    writer.start()
    try:
        busy = run_worker(ctx, "gate", "--db", str(db), "--checks", str(n_busy), timeout=300)
    finally:
        writer.stop.set()
        writer.join(30)
    if writer.error is not None:
        raise RuntimeError(f"the writer failed: {writer.error}")
    seen = f"{busy['allowed']:,} allowed, {busy['blocked']:,} blocked"
    if busy["unavailable"]:
        seen += f", {busy['unavailable']:,} UNAVAILABLE (fail-closed answers)"
    result.add(_figure(
        "check(), while latch/reset writes run", busy,
        note=f"{writer.writes:,} writes meanwhile; answers: {seen}",
        extra={"summary": busy["check_us"], "writes": writer.writes,
               "allowed": busy["allowed"], "blocked": busy["blocked"],
               "unavailable": busy["unavailable"]},
    ))
    return result
