"""Scenario 2 — latch → flat, on a paper venue with a 20 ms round trip per call.

The controller (SQLite store, real flattener) is latched on a book of N positions and M resting
orders; the clock runs from ``emergency.latched`` (the latch is durable) to ``emergency.flattened``
with the venue verified flat. "Round trips" is that time divided by the per-call latency: the
number of sequential latency stages the flatten took. The flattener has three: cancel-all alongside
fetch-positions, then every close at once, then the two verify fetches at once.

With a rate limit (a token bucket of 20 requests/s, one token of burst, like ccxt's throttler)
every call waits its turn, so the closes go out one per 50 ms: N + 4 calls take about
(N + 3) × 50 ms + 20 ms. The note of each figure says where the time went, stage by stage.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from ess_tui.bench.stats import Figure, Goal, ScenarioResult, ms, percentile
from ess_tui.bench.world import VENUE_LATENCY_MS, BenchContext, build_book

KEY = "flatten"
TITLE = "2. Latch → flat (20 ms per venue call)"
RATE_LIMIT = 20.0


@dataclass(frozen=True)
class Case:
    positions: int
    orders: int
    rate_limit: float | None
    runs: int

    @property
    def label(self) -> str:
        limit = f"{self.rate_limit:g} req/s" if self.rate_limit else "no limit"
        return f"{self.positions} pos × {self.orders} orders, {limit}"


@dataclass
class Run:
    total_ms: float
    stages_ms: tuple[float, float, float]
    venue_calls: int


def no_limit_goal() -> Goal:
    return Goal("p99 ≤ 3 RTT + 10 ms", 3 * VENUE_LATENCY_MS + 10.0)


def rate_limited_bound_ms(case: Case) -> float:
    """What the token bucket alone forces: every call after the first waits 1/rate."""
    assert case.rate_limit
    calls = case.positions + 4
    return (calls - 1) * 1000.0 / case.rate_limit + VENUE_LATENCY_MS


async def flatten_once(ctx: BenchContext, case: Case, store: Any) -> Run:
    """Build the book, latch, wait until verified flat, check the counts, reset."""
    from ess_tui.engine.bus import EventBus
    from ess_tui.engine.controller import EmergencyStopController

    venue = build_book(case.positions, case.orders, rate_limit=case.rate_limit)
    bus = EventBus()
    marks: dict[str, float] = {}

    def mark(event: Any) -> None:
        name = event.type if event.type != "emergency.flatten" else f"step:{event.step}"
        marks.setdefault(name, time.perf_counter())

    bus.subscribe(mark)
    controller = EmergencyStopController(store=store, exchange=venue, bus=bus, actor="bench")
    try:
        await controller.latch("bench flatten")
        report = await controller.wait_flattened(timeout=600)
    finally:
        await controller.close()
    if report is None or report.flat is not True:
        raise RuntimeError(f"{case.label}: the venue was not verified flat: {report}")
    if report.positions_closed != case.positions or report.orders_canceled != case.orders:
        raise RuntimeError(
            f"{case.label}: closed {report.positions_closed} of {case.positions} positions and "
            f"cancelled {report.orders_canceled} of {case.orders} orders"
        )
    if report.attempts != 1:
        raise RuntimeError(f"{case.label}: flatten needed {report.attempts} passes")
    await store.unlatch("bench", note="benchmark sample")
    start = marks["emergency.latched"]
    cancel = marks.get("step:cancel", start)
    close = marks.get("step:close", cancel)
    verify = marks.get("step:verify", close)
    done = marks["emergency.flattened"]
    return Run(ms(done - start), (ms(cancel - start), ms(close - cancel), ms(verify - close)),
               venue.round_trips)


def case_figures(case: Case, runs: list[Run]) -> list[Figure]:
    totals = [r.total_ms for r in runs]
    rtts = [t / VENUE_LATENCY_MS for t in totals]
    stage = [percentile([r.stages_ms[i] for r in runs], 50) for i in range(3)]
    calls = runs[0].venue_calls
    note = (f"{calls} calls; stages {stage[0]:.0f} / {stage[1]:.0f} / {stage[2]:.0f} ms "
            "(cancel+fetch / closes / verify)")
    goal = no_limit_goal() if case.rate_limit is None else None
    extra: dict[str, Any] = {
        "positions": case.positions, "orders": case.orders, "rate_limit": case.rate_limit,
        "venue_calls": calls, "stage_medians_ms": stage,
    }
    if case.rate_limit:
        bound = rate_limited_bound_ms(case)
        extra["token_bucket_bound_ms"] = bound
        note += f"; the bucket alone forces ≥ {bound:.0f} ms"
    return [
        Figure.from_samples(case.label, "ms", totals, goal=goal, note=note, extra=extra),
        Figure.from_samples(f"{case.label}: round trips", "RTT", rtts,
                            goal=None if case.rate_limit else Goal("p99 ≤ 3.5 RTT", 3.5),
                            note="elapsed / 20 ms"),
    ]


async def run_cases(ctx: BenchContext, cases: list[Case], result: ScenarioResult) -> None:
    from ess_tui.store.sqlite import SQLiteStore

    store = SQLiteStore(ctx.path("flatten"), audit_key=None)
    try:
        for case in cases:
            ctx.say(f"  {case.label}: {case.runs} run(s)")
            runs = [await flatten_once(ctx, case, store) for _ in range(case.runs)]
            for figure in case_figures(case, runs):
                result.add(figure)
    finally:
        await store.close()


def cases(quick: bool) -> list[Case]:
    out: list[Case] = []
    for positions in (10, 100):
        for orders in (100, 1000):
            out.append(Case(positions, orders, None, 3 if quick else 30))
    for positions in (10, 100):
        for orders in (100, 1000):
            if quick and (positions > 10 or orders > 100):
                continue  # up to 5 s a run: left to the full bench
            out.append(Case(positions, orders, RATE_LIMIT, 1 if quick else (5 if positions <= 10 else 3)))
    return out


def run(ctx: BenchContext) -> ScenarioResult:
    result = ScenarioResult(KEY, TITLE)
    asyncio.run(run_cases(ctx, cases(ctx.quick), result))
    result.notes.append(
        "Round trips = elapsed / 20 ms. The flattener's floor is 3 stages (60 ms); the rest is "
        "the event loop running N close coroutines and the paper venue's own work."
    )
    if ctx.quick:
        result.notes.append("--quick: only one rate-limited case runs; the rest are left to the full run.")
    return result
