"""``ess-tui bench``: how fast the ESS latches, flattens, evaluates and answers, on this machine.

A benchmark, not a test: it prints figures (a median and a p99 over many runs each, beside the
goal it is held to) and exits 0; ``--json FILE`` also writes them; ``--quick`` is a short smoke
run that judges nothing. Exit 1 only when a scenario could not be measured at all (an error, not a
slow figure), exit 2 for a bad ``--only``.

Scenarios, all on the paper venue, in a throwaway directory beside the configured database (never
the database itself):

1. ``latch``        trigger → durable latch (push and polled)
2. ``flatten``      latch → flat at 20 ms per venue call, with and without a rate limit
3. ``throughput``   50 evaluators at 0.1 s: evaluations per minute, CPU share of one core
4. ``gate``         ``TradeGate.check()`` from another process
5. ``control_room`` start → first frame, STOP → latch, resident memory (headless and control room)
6. ``scale``        flatten at 1,000 positions, 500 evaluators
7. ``alerts``       latch → alert at a local webhook; backlog drained after an outage
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from ess_tui.bench.stats import Figure, Goal, ScenarioResult, percentile

__all__ = ["SCENARIOS", "Figure", "Goal", "ScenarioResult", "percentile", "run_bench"]

#: Scenario name → module (imported when it runs). Order is the report's order.
SCENARIOS: dict[str, str] = {
    "latch": "ess_tui.bench.latch",
    "flatten": "ess_tui.bench.flatten",
    "throughput": "ess_tui.bench.throughput",
    "gate": "ess_tui.bench.gate",
    "control_room": "ess_tui.bench.control_room",
    "scale": "ess_tui.bench.scale",
    "desk_pg": "ess_tui.bench.desk_pg",
    "alerts": "ess_tui.bench.alerts",
}


def _pick(only: str | None) -> list[str]:
    if not only:
        return list(SCENARIOS)
    names = [n.strip().replace("-", "_") for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise ValueError(
            f"unknown scenario {', '.join(unknown) or '(none given)'} in --only; "
            f"choose from: {', '.join(SCENARIOS)}"
        )
    return [n for n in SCENARIOS if n in names]


def _workdir(settings: Any) -> Path:
    """A fresh directory beside the configured database (same disk), else in the temp dir."""
    try:
        parent = Path(settings.db_path).expanduser().resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="ess-bench-", dir=parent))
    except OSError:
        return Path(tempfile.mkdtemp(prefix="ess-bench-"))


def _log_to_file(workdir: Path) -> Callable[[], None]:
    """The engine logs every latch and reset: to a file in the bench directory, not the screen.
    Returns the function that undoes it."""
    root = logging.getLogger()
    handler = logging.FileHandler(workdir / "bench.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(name)s: %(message)s"))
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def undo() -> None:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()

    return undo


def _run_one(name: str, ctx: Any) -> ScenarioResult:
    import importlib

    module: ModuleType = importlib.import_module(SCENARIOS[name])
    started = time.monotonic()
    try:
        result: ScenarioResult = module.run(ctx)
    except Exception as exc:  # noqa: BLE001 - one scenario failing must not hide the others
        result = ScenarioResult(name, getattr(module, "TITLE", name))
        result.error = f"{type(exc).__name__}: {exc}"
        (ctx.workdir / f"{name}-error.txt").write_text(traceback.format_exc())
    result.seconds = time.monotonic() - started
    return result


def run_bench(settings: Any, *, quick: bool = False, json_path: str | None = None,
              only: str | None = None,
              progress: Callable[[str], None] | None = None) -> int:
    """Run the scenarios, print the table, write ``json_path`` if given. Returns the exit code."""
    from ess_tui.bench.machine import describe_machine, load_average
    from ess_tui.bench.report import build_json, render_text
    from ess_tui.bench.world import BenchContext

    try:
        names = _pick(only)
    except ValueError as exc:
        print(f"ess-tui bench: {exc}", file=sys.stderr)
        return 2
    say = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    workdir = _workdir(settings)
    keep = False
    unlog = _log_to_file(workdir)
    try:
        venue = getattr(getattr(settings, "venue", None), "kind", "paper")
        if venue != "paper":
            say(f"note: the bench runs on the paper venue; your {venue} venue is not touched")
        machine = describe_machine(workdir)
        ctx = BenchContext(quick=quick, workdir=workdir, progress=say)
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        t0 = time.monotonic()
        results: list[ScenarioResult] = []
        for index, name in enumerate(names, 1):
            say(f"[{index}/{len(names)}] {name} …")
            result = _run_one(name, ctx)
            for figure in result.figures:
                figure.judge(enabled=not quick)
            results.append(result)
            if result.error:
                say(f"  ERROR: {result.error} (traceback in {workdir / (name + '-error.txt')})")
                keep = True
        data = build_json(results, machine=machine, quick=quick, started_at=started_at,
                          seconds=time.monotonic() - t0, load_at_end=load_average())
        print(render_text(data), flush=True)
        if json_path:
            try:
                Path(json_path).write_text(json.dumps(data, indent=1, default=str) + "\n")
            except OSError as exc:
                print(f"ess-tui bench: cannot write {json_path}: {exc}", file=sys.stderr)
                return 1
        broken = any(r.error for r in results) or any(f.error for r in results for f in r.figures)
        if broken:
            keep = True
            print(f"ess-tui bench: some figures could not be measured; logs kept in {workdir}",
                  file=sys.stderr)
        return 1 if broken else 0
    finally:
        unlog()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
