"""Control-room benchmarks: Enter on the STOP modal → durable latch, and process start → first frame.

    python -m ess_tui.bench.stop_latency [--n 200] [--frames 5]

Both run the real engine (its own thread, SQLite in a temporary folder, the paper venue). The
benchmark module of the CLI (``ess-tui bench``) can reuse :func:`measure_stop_latency` and
:func:`measure_first_frame`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ess_tui.bench.stats import percentile

_FIRST_FRAME_CHILD = r"""
import sys, time
from pathlib import Path
from ess_tui.config import Settings
from ess_tui.tui.app import ControlRoomApp

class Probe(ControlRoomApp):
    def on_ready(self) -> None:
        super().on_ready()
        print(repr(time.time()), flush=True)
        self.exit()

Probe(Settings(db=Path(sys.argv[1]) / "ess.db")).run(headless=True, size=(120, 40))
"""


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds (from :func:`ess_tui.bench.stats.percentile`)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50) * 1000, 2),
        "p99_ms": round(percentile(values, 99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
    }


async def measure_stop_latency(n: int = 200, *, folder: Path | None = None) -> list[float]:
    """Seconds from Enter on a filled-in STOP modal to the latch being durable, ``n`` times.

    "Durable" is the moment the engine's latch transaction has committed (fsync'd): the engine
    publishes ``emergency.latched`` right after, and that is when the clock stops (read on the
    engine's thread). The modal closes with the reason at once and the app latches; each try waits
    for the app to finish the stop and checks through a second connection that the database says
    latched.
    """
    from textual.widgets import Input

    from ess_tui.config import Settings
    from ess_tui.store.sqlite import SQLiteStore
    from ess_tui.tui.app import ControlRoomApp
    from ess_tui.tui.screens.stop import StopModal

    with tempfile.TemporaryDirectory() as tmp:
        base = folder or Path(tmp)
        settings = Settings(db=base / "ess.db", check_interval=5.0,
                            paper={"latency_ms": 0.0, "drift": False})
        app = ControlRoomApp(settings, frozen=True, operator="bench",
                             user_theme_dir=base / "no-themes")
        timings: list[float] = []
        reader = SQLiteStore(base / "ess.db")
        async with app.run_test(size=(120, 40)) as pilot:
            deadline = time.monotonic() + 30
            while not app._engine_ready:
                if time.monotonic() > deadline:
                    raise RuntimeError("the engine did not start within 30 s")
                await pilot.pause(0.01)
            durable_at: list[float] = []
            app.host.runtime.bus.subscribe(
                lambda _event: durable_at.append(time.perf_counter()), "emergency.latched"
            )
            for i in range(n):
                durable_at.clear()
                app.action_stop()
                await pilot.pause()
                modal = app.screen
                assert isinstance(modal, StopModal)
                modal.query_one("#stop-reason", Input).value = f"bench {i}"
                confirm = modal.query_one("#stop-confirm", Input)
                confirm.value = "STOP"
                confirm.focus()
                await pilot.pause()
                started = time.perf_counter()
                await confirm.action_submit()  # what Enter does in the field
                deadline = time.monotonic() + 10
                while not durable_at:
                    if time.monotonic() > deadline:
                        raise AssertionError("the engine never reported the latch")
                    await asyncio.sleep(0.0002)
                while app._latching or modal in app.screen_stack:
                    await asyncio.sleep(0.001)
                timings.append(durable_at[0] - started)
                state = await reader.load_state()
                if not state.active:
                    raise AssertionError("the engine reported the latch before it was durable")
                await app.host.reset("bench", "benchmark reset", details={"bench": True},
                                     override="benchmark: the next try latches again at once")
                await pilot.pause()
        await reader.close()
    return timings


def measure_first_frame(runs: int = 5) -> list[float]:
    """Seconds from spawning ``python`` to the control room's first frame (headless, 120×40)."""
    timings: list[float] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.time()
            out = subprocess.run([sys.executable, "-c", _FIRST_FRAME_CHILD, tmp], check=True,
                                 capture_output=True, text=True, timeout=60,
                                 env={**os.environ, "TEXTUAL": ""})
            shown = float(out.stdout.strip().splitlines()[-1])
            timings.append(shown - started)
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ess_tui.bench.stop_latency")
    parser.add_argument("--n", type=int, default=200, help="STOP tries (default 200)")
    parser.add_argument("--frames", type=int, default=5, help="first-frame runs (default 5)")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "first_frame": percentiles(measure_first_frame(args.frames)),
        "stop_enter_to_durable_latch": percentiles(asyncio.run(measure_stop_latency(args.n))),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
