"""The crash drill: kill the ESS with SIGKILL before, during and after flattening, and check it
kept its promises every time it came back.

Each *run* uses its own temporary database and a slow paper venue. It starts ``ess-tui headless``
in a subprocess, latches the ESS the way ``ess-tui activate`` does, and SIGKILLs the runner at a
chosen moment: before it starts flattening (sometimes before the latch is even written), while it
is flattening, or after it has flattened. Then it starts a new runner on the same file, and
sometimes kills that one too. After every kill and every restart it checks what an operator relies on:

* the ESS is still latched, with the same reason and activation count (read through the trade gate);
* the audit chain verifies (HMAC mode: every run has its own ``QT_ESS_AUDIT_KEY``);
* no audit row seen before the kill was lost or changed, none was duplicated (one ``activate`` row,
  no ``extra_trigger``, at most one flatten row per runner);
* the restarted runner takes the lease once the dead one's expires and flattens its venue to a
  verified flat (the paper venue lives in the runner's memory, so each restart brings back a full
  book, which the restored latch alone must flatten);
* a final SIGTERM stops the runner cleanly and releases the lease.

The test suite runs 20 runs (``tests/test_crash.py``); ``scripts/soak_crash.py --runs N`` runs more.
Only configuration reaches the product: ``QT_ESS_PAPER__LATENCY_MS``, ``QT_ESS_CHECK_INTERVAL``,
``QT_ESS_LEASE_TTL``, ``QT_ESS_PAPER__DRIFT``, ``QT_ESS_LOG_FILE`` and ``QT_ESS_AUDIT_KEY``.
POSIX only (SIGKILL).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ess_tui.testing.crash_db import (
    FLATTEN_ROWS,
    DrillFailure,
    audit_rows,
    check_rows_kept,
    flatten_rows_per_runner,
    latch,
    lease_holder,
    try_rows,
    verify_chain,
)
from ess_tui.testing.crash_runner import Runner

__all__ = [
    "PHASES",
    "CrashSettings",
    "CrashHarness",
    "RunResult",
    "SoakReport",
    "audit_rows",
    "check_rows_kept",
    "flatten_rows_per_runner",
    "DrillFailure",
]

#: When a kill lands, as observed: before the runner flattened anything, while it was flattening,
#: or after it wrote its flatten result.
PHASES = ("before", "during", "after")

#: What the drill latches with; the runner must come back with exactly this reason.
REASON = "Crash drill {run}: Equity drawdown catastrophic: 30.00%"


@dataclass(frozen=True)
class CrashSettings:
    """How the drill runs the ESS. Defaults suit the test suite on a small machine."""

    latency_ms: float = 150.0  # per paper venue call: one flatten takes about three round trips
    check_interval: float = 0.1
    lease_ttl: float = 1.0
    timeout: float = 30.0  # longest wait for any one step before the run counts as failed
    second_kill_rate: float = 0.3  # chance a run also kills the runner that replaced the first
    settle_sec: float = 1.0  # the last runner keeps running this long after flat, latched: a
    # runner that flattens again and again, or re-latches, shows up in the audit trail meanwhile
    python: str = sys.executable


@dataclass
class RunResult:
    """One run: which phases its kills landed in, how many restarts, what went wrong."""

    run: int
    phases: list[str] = field(default_factory=list)
    restarts: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class SoakReport:
    """Totals over all runs, as the soak script prints them."""

    runs: int = 0
    kills: int = 0
    restarts: int = 0
    failures: list[str] = field(default_factory=list)
    phases: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    slowest_run: float = 0.0

    def add(self, result: RunResult) -> None:
        self.runs += 1
        self.kills += len(result.phases)
        self.restarts += result.restarts
        self.phases.update(result.phases)
        self.failures.extend(f"run {result.run}: {f}" for f in result.failures)
        self.slowest_run = max(self.slowest_run, result.seconds)

    def summary(self) -> str:
        by_phase = ", ".join(f"{p} {self.phases.get(p, 0)}" for p in PHASES)
        return (
            f"runs: {self.runs}  kills: {self.kills} ({by_phase})  restarts: {self.restarts}  "
            f"failures: {len(self.failures)}  time: {self.seconds:.1f}s "
            f"(slowest run {self.slowest_run:.1f}s)"
        )


# --- the drill -----------------------------------------------------------------------------------


class CrashHarness:
    """Runs crash drills under ``workdir`` (one sub-directory per run)."""

    def __init__(self, workdir: Path, settings: CrashSettings | None = None, *, seed: int = 0) -> None:
        self.workdir = Path(workdir)
        self.settings = settings or CrashSettings()
        self.seed = seed

    # -- public -----------------------------------------------------------------------------------

    def soak(self, runs: int, *, parallel: int = 2,
             progress: Callable[[RunResult], None] | None = None) -> SoakReport:
        """``runs`` runs, ``parallel`` at a time. Failures are collected, never raised."""
        report = SoakReport()
        started = time.monotonic()
        lock = threading.Lock()

        def one(index: int) -> None:
            result = self.run(index)
            with lock:
                report.add(result)
                if progress is not None:
                    progress(result)

        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            for future in [pool.submit(one, i) for i in range(1, runs + 1)]:
                future.result()
        report.seconds = time.monotonic() - started
        return report

    def run(self, index: int) -> RunResult:
        """One run on a fresh database. Never raises for a broken promise: it is in ``failures``."""
        result = RunResult(index)
        started = time.monotonic()
        runners: list[Runner] = []
        try:
            self._run(index, result, runners)
        except DrillFailure as exc:
            tail = runners[-1].tail() if runners else ""
            result.failures.append(f"{exc}" + (f" [runner log: {tail}]" if tail else ""))
        except Exception as exc:  # noqa: BLE001 - a harness bug is a failure to report, too
            result.failures.append(f"drill error: {type(exc).__name__}: {exc}")
        finally:
            for runner in runners:
                if runner.alive():
                    runner.kill()
            result.seconds = time.monotonic() - started
        return result

    # -- the steps of a run -----------------------------------------------------------------------

    def _env(self, workdir: Path, key: str) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
        env.update({
            "QT_ESS_CHECK_INTERVAL": str(s.check_interval),
            "QT_ESS_LEASE_TTL": str(s.lease_ttl),
            "QT_ESS_PAPER__LATENCY_MS": str(s.latency_ms),
            "QT_ESS_PAPER__DRIFT": "false",
            "QT_ESS_LOG_FILE": str(workdir / "ess.log"),
            "QT_ESS_AUDIT_KEY": key,
        })
        return env

    def _wait(self, what: str, predicate: Callable[[], Any], runner: Runner | None = None) -> Any:
        deadline = time.monotonic() + self.settings.timeout
        while True:
            value = predicate()
            if value:
                return value
            if runner is not None and not runner.alive():
                raise DrillFailure(f"runner exited (code {runner.proc.returncode}) while waiting: {what}")
            if time.monotonic() > deadline:
                raise DrillFailure(f"timed out after {self.settings.timeout:g}s waiting: {what}")
            time.sleep(0.02)

    def _start(self, workdir: Path, db: Path, env: dict[str, str], runners: list[Runner]) -> Runner:
        runner = Runner(workdir, db, len(runners), env, self.settings.python)
        runners.append(runner)
        return runner

    def _await_lease(self, db: Path, runner: Runner) -> None:
        def holds() -> int | None:
            if lease_holder(db) != runner.holder:
                return None
            for seq, action, actor, _, _ in reversed(try_rows(db)):
                if action == "lease_acquired" and actor == runner.holder:
                    return seq
            return None

        runner.lease_seq = self._wait(f"{runner.holder} to take the runner lease", holds, runner)

    def _flatten_row(self, db: Path, runner: Runner) -> tuple[int, dict[str, Any]] | None:
        """The flatten result this runner wrote (rows after its lease_acquired row), if any."""
        if runner.lease_seq is None:
            return None
        for seq, action, _, _, details in try_rows(db):
            if seq > runner.lease_seq and action in FLATTEN_ROWS:
                return seq, details
        return None

    def _run(self, index: int, result: RunResult, runners: list[Runner]) -> None:
        s = self.settings
        rng = random.Random(self.seed * 1_000_003 + index)
        workdir = self.workdir / f"run-{index:04d}"
        workdir.mkdir(parents=True, exist_ok=True)
        db = workdir / "ess.db"
        key = f"crash-drill-key-{index}-{rng.getrandbits(48):012x}"
        env = self._env(workdir, key)
        reason = REASON.format(run=index)
        seen: dict[int, str] = {}
        latched = False

        def observe() -> list[tuple[int, str, str, str, dict[str, Any]]]:
            rows = try_rows(db)
            for seq, _, _, digest, _ in rows:
                seen.setdefault(seq, digest)
            return rows

        runner = self._start(workdir, db, env, runners)
        self._await_lease(db, runner)
        kills = 1 + (rng.random() < s.second_kill_rate)
        for k in range(kills):
            target = PHASES[(index + k) % len(PHASES)]
            if target == "before" and not latched and rng.random() < 0.5:
                time.sleep(rng.uniform(0.0, 0.2))  # armed and idle: killed before any latch
            else:
                if not latched:
                    latch(db, key, reason)
                    latched = True
                if target == "before":
                    time.sleep(rng.uniform(0.0, s.check_interval / 2))
                elif target == "during":
                    if runner.lease_seq is None:
                        self._await_lease(db, runner)
                    self._wait(f"{runner.holder} to start flattening",
                               lambda: "ess_tui.engine.flatten:" in runner.log(), runner)
                    time.sleep(rng.uniform(0.0, s.latency_ms / 1000))
                else:
                    if runner.lease_seq is None:
                        self._await_lease(db, runner)
                    self._wait(f"{runner.holder} to write its flatten result",
                               lambda: self._flatten_row(db, runner), runner)
                    time.sleep(rng.uniform(0.0, 0.3))
            observe()
            runner.kill()
            result.phases.append(self._phase(db, runner))
            self._check(db, key, reason, seen, latched, f"after kill {k + 1} ({target})")
            if not latched:
                latch(db, key, reason)  # written while no runner is up: the next one must act
                latched = True
            runner = self._start(workdir, db, env, runners)
            result.restarts += 1
            self._await_lease(db, runner)
            self._check(db, key, reason, seen, latched, f"after restart {k + 1}")

        found = self._wait(f"{runner.holder} to flatten after the last restart",
                           lambda: self._flatten_row(db, runner), runner)
        _, details = found
        if details.get("flat") is not True:
            raise DrillFailure(f"the restarted runner did not reach flat: {details}")
        if "venue is flat" not in runner.log():
            raise DrillFailure("the restarted runner's log never says the venue is flat")
        time.sleep(s.settle_sec)
        observe()
        self._check(db, key, reason, seen, latched, "after the final flatten")
        code = runner.terminate(timeout=s.timeout)
        if code != 0:
            raise DrillFailure(f"the last runner did not stop cleanly on SIGTERM (exit {code})")
        if lease_holder(db) is not None:
            raise DrillFailure("the last runner stopped without releasing the lease")
        self._check(db, key, reason, seen, latched, "after a clean stop")

    def _phase(self, db: Path, runner: Runner) -> str:
        if self._flatten_row(db, runner) is not None:
            return "after"
        if "ess_tui.engine.flatten:" in runner.log():
            return "during"
        return "before"

    def _check(self, db: Path, key: str, reason: str, seen: dict[int, str], latched: bool,
               when: str) -> None:
        from ess_tui.gate import TradeGate

        problems: list[str] = []
        with TradeGate(db) as gate:
            decision = gate.check()
        if latched:
            if decision.allowed:
                problems.append("the gate says trading is allowed: the latch was lost")
            elif decision.reason != f"ESS active: {reason}":
                problems.append(f"the gate's reason changed: {decision.reason!r}")
            elif decision.activation_count != 1:
                problems.append(f"the activation count is {decision.activation_count}, not 1")
        elif not decision.allowed:
            problems.append(f"armed ESS reads as blocked: {decision.reason}")
        rows = audit_rows(db)
        problems += check_rows_kept(seen, rows)
        for seq, digest in ((r[0], r[3]) for r in rows):
            seen.setdefault(seq, digest)
        repeated = {h: n for h, n in flatten_rows_per_runner(rows).items() if n > 1}
        if repeated:
            problems.append(f"a runner wrote its flatten result more than once: {repeated}")
        actions = Counter(r[1] for r in rows)
        if actions["activate"] != (1 if latched else 0):
            problems.append(f"{actions['activate']} activate rows (expected {int(latched)})")
        if actions["extra_trigger"]:
            problems.append(f"{actions['extra_trigger']} extra_trigger rows: something re-latched")
        broken = verify_chain(db, key)
        if broken:
            problems.append(broken)
        if problems:
            raise DrillFailure(f"{when}: " + "; ".join(problems))
