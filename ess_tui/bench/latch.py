"""Scenario 1 — trigger → durable latch.

Measured on the real runtime (paper world, SQLite store, lease, metrics and book polling, the five
built-in evaluators) with ``check_interval_sec`` 0.1:

* **push**: ``ManualTriggerEmergencyEvaluator.trigger()`` wakes the runner, which evaluates, re-reads
  the store, and latches; the clock stops when ``emergency.latched`` is published, which the
  controller does right after the latch transaction has committed (fsync'd).
* **polled**: a condition that cannot wake the runner turns true; the runner finds it on its next
  check. Bounded below by the check interval.

Each sample waits a random fraction of the check interval before firing, so triggers land at every
phase of the runner's cycle (a trigger landing mid-cycle waits for that cycle). Between samples
the bench waits for flattening to end and resets (audited, like any reset).

The breakdown figures split the push samples: wake and evaluation, the runner's store read, the
latch transaction; and a bare fdatasync of 4 KB on the same disk, taken between samples so it
sees the same conditions (a shared disk's fsync tail moves from minute to minute).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ess_tui.bench.stats import Figure, Goal, ScenarioResult, ms
from ess_tui.bench.world import BenchContext, bench_settings
from ess_tui.engine.evaluators.base import BaseEvaluator, Reading

KEY = "latch"
TITLE = "1. Trigger → durable latch"
INTERVAL = 0.1


class ConditionFlag(BaseEvaluator):
    """A condition the bench flips; it never wakes the runner (a polled source)."""

    default_name = "Bench condition"

    def __init__(self) -> None:
        super().__init__(name="Bench condition")
        self.on = False

    async def _read(self) -> Reading:
        if self.on:
            return Reading(triggered=True, reason="bench condition true", proximity=1.0,
                           reading="true")
        return Reading(triggered=False, proximity=0.0, reading="false")


class _DiskProbe:
    """Times a bare fdatasync of a 4 KB append, interleaved with the trigger samples, so the disk
    floor is measured under the same conditions (a shared disk's tail moves minute by minute)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.samples: list[float] = []
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._sync = getattr(os, "fdatasync", os.fsync)
        self._block = os.urandom(4096)

    def sample(self) -> None:
        os.write(self._fd, self._block)
        t0 = time.perf_counter()
        self._sync(self._fd)
        self.samples.append(ms(time.perf_counter() - t0))

    def close(self) -> None:
        os.close(self._fd)
        self.path.unlink(missing_ok=True)


class _Sampler:
    """Fires a trigger and times it to the durable latch, then resets for the next sample.

    It also notes, for each sample, when the runner's store read (``controller.refresh``) and the
    latch transaction (``store.latch``) started and ended: the breakdown of the push path.
    """

    def __init__(self, runtime: Any, flag: ConditionFlag, disk: _DiskProbe) -> None:
        self.runtime = runtime
        self.flag = flag
        self.disk = disk
        self.waiter: asyncio.Future[float] | None = None
        self.stale_relatches = 0
        self.marks: dict[str, float] = {}
        runtime.bus.subscribe(self._on_latched, "emergency.latched")
        self._wrap(runtime.controller, "refresh", "read")
        self._wrap(runtime.store, "latch", "latch")

    def _wrap(self, owner: Any, method: str, tag: str) -> None:
        plain = getattr(owner, method)
        marks = self.marks

        async def timed(*args: Any, **kwargs: Any) -> Any:
            marks.setdefault(f"{tag}0", time.perf_counter())
            try:
                return await plain(*args, **kwargs)
            finally:
                marks.setdefault(f"{tag}1", time.perf_counter())

        setattr(owner, method, timed)

    def _on_latched(self, event: Any) -> None:
        waiter = self.waiter
        if event.new and waiter is not None and not waiter.done():
            waiter.set_result(time.perf_counter())

    async def _settle(self, phase_sec: float) -> None:
        """Wait a random phase of the cycle; undo a latch left by a cycle that straddled a reset."""
        controller = self.runtime.controller
        for _ in range(20):
            await asyncio.sleep(random.uniform(0.0, phase_sec))
            if not controller.is_active:
                return
            # A cycle that evaluated the condition before the reset and latched after it.
            self.stale_relatches += 1
            await controller.wait_flattened(10)
            await self.runtime.reset("bench", "benchmark: undo a re-latch by a stale evaluation")
        raise RuntimeError("the ESS keeps re-latching after reset; is a real trigger firing?")

    async def sample(self, fire: Callable[[], None], expect: str, phase_sec: float
                     ) -> tuple[float, dict[str, float]]:
        """ms from ``fire()`` to the durable latch, and the breakdown (ms) of that sample."""
        await self._settle(phase_sec)
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.marks.clear()
        started = time.perf_counter()
        fire()
        try:
            done = await asyncio.wait_for(self.waiter, 10.0)
        finally:
            self.waiter = None
        m = dict(self.marks)
        parts: dict[str, float] = {}
        if {"read0", "read1", "latch0", "latch1"} <= m.keys() and m["read0"] >= started:
            parts = {"evaluate": ms(m["read0"] - started), "read": ms(m["read1"] - m["read0"]),
                     "latch": ms(m["latch1"] - m["latch0"])}
        state = self.runtime.controller.state
        if expect not in (state.reason or ""):
            raise RuntimeError(f"the ESS latched for another reason: {state.reason!r}")
        if self.runtime.controller.not_durable:
            raise RuntimeError(f"latch not durable: {self.runtime.controller.not_durable}")
        await self.runtime.controller.wait_flattened(10)
        self.flag.on = False
        await self.runtime.reset("bench", "benchmark sample")
        self.disk.sample()
        return ms(done - started), parts


async def _runner_figures(ctx: BenchContext, result: ScenarioResult) -> None:
    from ess_tui.runtime.assembly import Runtime

    n_push = 30 if ctx.quick else 1000
    n_poll = 10 if ctx.quick else 1000
    settings = bench_settings(ctx.path("latch"), check_interval=INTERVAL, latency_ms=0.0)
    runtime = await Runtime.build(settings, actor="bench")
    flag = ConditionFlag()
    runtime.evaluators.append(flag)
    disk = _DiskProbe(ctx.path("fsync", ".bin"))
    sampler = _Sampler(runtime, flag, disk)
    await runtime.start()
    try:
        await asyncio.sleep(0.3)
        if runtime.controller.is_active:
            raise RuntimeError(f"the fresh paper world latched at start: {runtime.controller.state.reason}")
        ctx.say(f"  push path: {n_push} manual triggers")
        push: list[float] = []
        parts: dict[str, list[float]] = {"evaluate": [], "read": [], "latch": []}
        for _ in range(n_push):
            took, split = await sampler.sample(
                lambda: runtime.manual.trigger("bench manual trigger"), "bench manual trigger",
                0.01 if ctx.quick else INTERVAL,
            )
            push.append(took)
            for key, value in split.items():
                parts[key].append(value)
        ctx.say(f"  polled path: {n_poll} conditions at check_interval_sec {INTERVAL}")
        polled: list[float] = []

        def flip() -> None:
            flag.on = True

        for _ in range(n_poll):
            polled.append((await sampler.sample(flip, "bench condition true", INTERVAL))[0])
        cycles = runtime.system.cycles
    finally:
        await runtime.stop()
        disk.close()
    relatch = (f"; {sampler.stale_relatches} re-latch(es) by a cycle straddling a reset undone"
               if sampler.stale_relatches else "")
    result.add(Figure.from_samples(
        "manual trigger (push) → latch fsync'd", "ms", push,
        goal=Goal("p99 ≤ 5 ms", 5.0),
        note="runtime with 6 evaluators, lease, pollers" + relatch,
        extra={"stale_relatches": sampler.stale_relatches},
    ))
    result.add(Figure.from_samples(
        "↳ of which: wake + evaluate 6", "ms", parts["evaluate"],
        note="trigger() until the runner reads the store",
    ))
    result.add(Figure.from_samples(
        "↳ of which: store read (refresh)", "ms", parts["read"],
        note="one SELECT through aiosqlite's thread",
    ))
    result.add(Figure.from_samples(
        "↳ of which: latch transaction", "ms", parts["latch"],
        note="8 statements, each a hop to aiosqlite's thread; one fsync",
    ))
    result.add(Figure.from_samples(
        "disk: fdatasync of a 4 KB append", "ms", disk.samples,
        note="the floor under any durable write; taken between the samples above",
    ))
    result.add(Figure.from_samples(
        f"polled condition ({INTERVAL:g} s) → latch fsync'd", "ms", polled,
        goal=Goal("p99 ≤ interval + 5 ms", INTERVAL * 1000 + 5.0),
        note="waits for the next check: uniform 0…interval",
        extra={"runner_cycles": cycles},
    ))


def run(ctx: BenchContext) -> ScenarioResult:
    result = ScenarioResult(KEY, TITLE)
    asyncio.run(_runner_figures(ctx, result))
    return result
