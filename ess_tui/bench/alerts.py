"""Scenario 7 — latch → alert received by a local webhook, and a backlog drained after an outage.

The real runtime (paper world, SQLite store, lease) with one apprise ``json://`` sink pointing at
an HTTP server on 127.0.0.1 in this process. Each sample: a manual stop; the clock stops when the
webhook has the ``latched`` alert. Between samples the bench waits for the flatten and resets
(the ``reset`` alert is received too before the next sample, so no sample queues behind another).

Backlog: the webhook answers 503 for an outage (60 s; 3 s with --quick) while latches and resets
pile up in the outbox; then it answers 200 and the clock measures until every alert is in, in
order. The relay's retry backoff is capped by ``alert_retry_max`` (15 s by default), which bounds
how long after the sink's recovery the first retry comes.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ess_tui.config import AlertSinkSettings
from ess_tui.bench.stats import Figure, Goal, ScenarioResult, ms
from ess_tui.bench.world import BenchContext, bench_settings

KEY = "alerts"
TITLE = "7. Latch → alert at a local webhook; backlog after an outage"
ENV = "ESS_BENCH_ALERT_URL"


class _Webhook:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.titles: list[str] = []
        self.status = 200
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                import json

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.status == 200:
                    with outer.cond:
                        outer.times.append(time.perf_counter())
                        outer.titles.append(str(json.loads(body).get("title", "")))
                        outer.cond.notify_all()
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/ess"

    def wait(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.times) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _until(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        await asyncio.sleep(0.005)


async def _measure(ctx: BenchContext, result: ScenarioResult) -> None:
    from ess_tui.runtime.assembly import Runtime

    hook = _Webhook()
    os.environ[ENV] = hook.url
    settings = bench_settings(ctx.path("alerts"), check_interval=0.1, drift=False)
    settings.alerts = [AlertSinkSettings(
        name="bench-hook", url_env=ENV, min_level="critical", timeout=5)]
    runtime = await Runtime.build(settings, actor="bench")
    await runtime.start()
    try:
        await _until(lambda: runtime.controller.acting and runtime.system.cycles > 0
                     and runtime.alerts.relay.prepared == 1, 10)
        n = 10 if ctx.quick else 200
        ctx.say(f"  {n} latches → webhook")
        samples: list[float] = []
        for i in range(n):
            before = len(hook.times)
            t0 = time.perf_counter()
            await runtime.manual_stop(f"bench alert {i}")
            if not await asyncio.to_thread(hook.wait, before + 1, 10):
                raise RuntimeError("the webhook did not get the latched alert within 10 s")
            samples.append(hook.times[before] - t0)
            if os.environ.get("ESS_BENCH_DEBUG"):
                ctx.say(f"    sample {i}: {ms(samples[-1]):.1f} ms")
            await runtime.controller.wait_flattened(timeout=10)
            await runtime.reset("bench", "bench sample")
            if not await asyncio.to_thread(hook.wait, before + 2, 10):
                raise RuntimeError("the webhook did not get the reset alert within 10 s")
        result.add(Figure.from_samples(
            "manual stop → latched alert at the webhook", "ms", [ms(s) for s in samples],
            goal=Goal("p99 ≤ 250 ms", 250.0), note="apprise json:// to 127.0.0.1"))

        outage = 3.0 if ctx.quick else 60.0
        pairs = 5 if ctx.quick else 50
        ctx.say(f"  backlog: {2 * pairs} alerts during a {outage:g} s outage")
        hook.status = 503
        base = len(hook.times)
        down = time.monotonic()
        for i in range(pairs):
            await runtime.manual_stop(f"outage {i}")
            await runtime.controller.wait_flattened(timeout=10)
            await runtime.reset("bench", "outage sample")
        await asyncio.sleep(max(0.0, outage - (time.monotonic() - down)))
        hook.status = 200
        up = time.perf_counter()
        if not await asyncio.to_thread(hook.wait, base + 2 * pairs, 120):
            raise RuntimeError(f"backlog not drained within 120 s ({len(hook.times) - base} of {2 * pairs})")
        first, last = hook.times[base] - up, hook.times[base + 2 * pairs - 1] - up
        ordered = all(("LATCHED" in t) == (k % 2 == 0) for k, t in enumerate(hook.titles[base:]))
        result.add(Figure("sink back → first backlog alert", "s", median=first, p99=first, n=1,
                          note=f"retry backoff capped at {settings.alert_retry_max:g} s"))
        result.add(Figure(f"sink back → all {2 * pairs} backlog alerts in", "s", median=last,
                          p99=last, n=1, note=f"after a {outage:g} s outage; in order: {ordered}"))
    finally:
        await runtime.stop()
        hook.close()
        os.environ.pop(ENV, None)


def run(ctx: BenchContext) -> ScenarioResult:
    result = ScenarioResult(KEY, TITLE)
    asyncio.run(_measure(ctx, result))
    return result
