"""The split-brain drill: freeze the acting runner mid-flatten past its lease, let a second runner
take over, wake the first one, and check it sends nothing.

Each *run* uses its own temporary database and a slow paper venue (every runner has its own
in-memory paper book and an opt-in call log, ``QT_ESS_PAPER__CALL_LOG``, one JSON line per
book-changing call with its monotonic time and pid). Runner A (``ess-tui headless``) takes the
lease; the drill latches with the real ``ess-tui activate``; once A's call log shows it is
flattening, the drill SIGSTOPs A at a random point, waits past the lease ttl, and then, by variant:

* ``takeover``: starts runner B, which must take the lease at a higher epoch and flatten its venue;
* ``reset``: the same, then the operator resets (``ess-tui reset --yes --by --approver --override``,
  two-person policy) while A is still frozen;
* ``reset-alone``: no runner B; the operator resets while A is frozen.

Then it SIGCONTs A and checks what an operator relies on: from the moment of SIGCONT, A sends no
book-changing venue call (its call log); no ``flattened``/``flatten_failed``, ``activate``,
``extra_trigger`` or ``reflatten`` row is written; the ESS is still latched with the same reason and
count (takeover) or stays armed with count 1 (reset: nobody re-latches); where B took over, A's log
says it was fenced or is a standby; B still holds the lease; the audit chain verifies; SIGTERM stops A without
releasing B's lease, then B cleanly. Every wait is bounded; every process is SIGKILLed in ``finally``.

``tests/test_split_brain.py`` runs a few; ``scripts/soak_split_brain.py --runs N`` runs more. POSIX only.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
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
    Row,
    audit_rows,
    lease_row,
    try_rows,
    verify_chain,
)
from ess_tui.testing.crash_runner import Runner

__all__ = [
    "VARIANTS",
    "SplitBrainHarness",
    "SplitBrainReport",
    "SplitBrainResult",
    "SplitBrainSettings",
    "calls_after",
    "read_call_log",
]

VARIANTS = ("takeover", "reset", "reset-alone")

REASON = "Split-brain drill {run}: Equity drawdown catastrophic: 30.00%"

#: Audit actions nobody may write once A is woken (the flatten is over, the latch or reset stands).
FORBIDDEN_AFTER_CONT = (*FLATTEN_ROWS, "activate", "extra_trigger", "reflatten")

#: What A's log says once it knows it lost the lease (or its activation was reset).
FENCED_WORDS = ("fenced out", "waiting as a standby")

_OPERATORS = '["alice", "bob"]'


@dataclass(frozen=True)
class SplitBrainSettings:
    """How the drill runs the ESS. Defaults suit the test suite on a small, loaded machine."""

    latency_ms: float = 400.0  # per paper venue call: a flatten takes about 1.5 s
    check_interval: float = 0.1
    lease_ttl: float = 1.0
    timeout: float = 30.0  # longest wait for any one step before the run counts as failed
    settle_sec: float = 2.0  # how long A runs after SIGCONT before the verdict (at least 4 round trips)
    python: str = sys.executable


@dataclass
class SplitBrainResult:
    run: int
    variant: str = ""
    calls_before_stop: int = 0  # A's book-changing calls sent before SIGSTOP (where it froze)
    calls_after_cont: int = 0
    a_log: str = ""  # which of FENCED_WORDS A's log said after SIGCONT
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class SplitBrainReport:
    runs: int = 0
    failures: list[str] = field(default_factory=list)
    calls_after_cont: int = 0
    variants: Counter[str] = field(default_factory=Counter)
    stopped_after_calls: Counter[int] = field(default_factory=Counter)
    a_logs: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    slowest_run: float = 0.0

    def add(self, result: SplitBrainResult) -> None:
        self.runs += 1
        self.calls_after_cont += result.calls_after_cont
        self.variants[result.variant] += 1
        self.stopped_after_calls[result.calls_before_stop] += 1
        if result.a_log:
            self.a_logs[result.a_log] += 1
        self.failures.extend(f"run {result.run} ({result.variant}): {f}" for f in result.failures)
        self.slowest_run = max(self.slowest_run, result.seconds)

    def summary(self) -> str:
        variants = ", ".join(f"{v} {self.variants.get(v, 0)}" for v in VARIANTS)
        stops = ", ".join(f"{n}: {c}" for n, c in sorted(self.stopped_after_calls.items()))
        logs = ", ".join(f"{w!r} {c}" for w, c in sorted(self.a_logs.items()))
        return (
            f"runs: {self.runs} ({variants})  failures: {len(self.failures)}  "
            f"venue calls after SIGCONT: {self.calls_after_cont}  time: {self.seconds:.1f}s "
            f"(slowest run {self.slowest_run:.1f}s)\n"
            f"A frozen after N book-changing calls {{{stops}}}; A's log after SIGCONT: {logs or '-'}"
        )


def read_call_log(path: Path) -> list[dict[str, Any]]:
    """The paper venue's call log lines (a line cut short by a kill is skipped)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def calls_after(calls: list[dict[str, Any]], mono: float, pid: int | None = None) -> list[dict[str, Any]]:
    """Calls that left at or after monotonic time ``mono`` (from ``pid`` only, when given)."""
    return [c for c in calls if float(c.get("mono", 0.0)) >= mono and (pid is None or c.get("pid") == pid)]


class SplitBrainHarness:
    """Runs split-brain drills under ``workdir`` (one sub-directory per run)."""

    def __init__(self, workdir: Path, settings: SplitBrainSettings | None = None, *,
                 seed: int = 0) -> None:
        self.workdir = Path(workdir)
        self.settings = settings or SplitBrainSettings()
        self.seed = seed

    def soak(self, runs: int, *, parallel: int = 1, variants: tuple[str, ...] = VARIANTS,
             progress: Callable[[SplitBrainResult], None] | None = None) -> SplitBrainReport:
        """``runs`` runs, ``parallel`` at a time, cycling through ``variants``."""
        report = SplitBrainReport()
        started = time.monotonic()
        lock = threading.Lock()

        def one(index: int) -> None:
            result = self.run(index, variants[(index - 1) % len(variants)])
            with lock:
                report.add(result)
                if progress is not None:
                    progress(result)

        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            for future in [pool.submit(one, i) for i in range(1, runs + 1)]:
                future.result()
        report.seconds = time.monotonic() - started
        return report

    def run(self, index: int, variant: str | None = None, *,
            stop_after_calls: int | None = None) -> SplitBrainResult:
        """One run on a fresh database. A broken promise is in ``failures``, never raised.
        ``stop_after_calls``: SIGSTOP A as soon as it has sent that many book-changing calls
        (default: at a random point of its flatten)."""
        result = SplitBrainResult(index, variant or VARIANTS[(index - 1) % len(VARIANTS)])
        started = time.monotonic()
        runners: list[Runner] = []
        try:
            self._run(index, result, runners, stop_after_calls)
        except DrillFailure as exc:
            tails = " || ".join(f"runner {i}: {r.tail(4)}" for i, r in enumerate(runners))
            result.failures.append(f"{exc}" + (f" [logs: {tails}]" if tails else ""))
        except Exception as exc:  # noqa: BLE001 - a harness bug is a failure to report, too
            result.failures.append(f"drill error: {type(exc).__name__}: {exc}")
        finally:
            for runner in runners:
                try:
                    runner.cont()  # a stopped process would not die of SIGKILL before it is reaped
                except (ProcessLookupError, OSError):
                    pass
                if runner.alive():
                    runner.kill()
            result.seconds = time.monotonic() - started
        return result

    # -- steps ------------------------------------------------------------------------------------

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
            "QT_ESS_RESET__OPERATORS": _OPERATORS,
            "QT_ESS_RESET__TWO_PERSON": "true",
        })
        return env

    def _wait(self, what: str, predicate: Callable[[], Any], *alive: Runner) -> Any:
        deadline = time.monotonic() + self.settings.timeout
        while True:
            value = predicate()
            if value:
                return value
            for runner in alive:
                if not runner.alive():
                    raise DrillFailure(
                        f"runner exited (code {runner.proc.returncode}) while waiting: {what}")
            if time.monotonic() > deadline:
                raise DrillFailure(f"timed out after {self.settings.timeout:g}s waiting: {what}")
            time.sleep(0.02)

    def _cli(self, env: dict[str, str], db: Path, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.settings.python, "-m", "ess_tui", *args[:1], "--db", str(db), *args[1:]],
                env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=self.settings.timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise DrillFailure(f"ess-tui {args[0]} did not finish in {self.settings.timeout:g}s") from exc

    def _start(self, workdir: Path, db: Path, env: dict[str, str], runners: list[Runner]) -> Runner:
        name = "AB"[len(runners)] if len(runners) < 2 else str(len(runners))
        own = dict(env, QT_ESS_PAPER__CALL_LOG=str(workdir / f"calls-{name}.jsonl"))
        runner = Runner(workdir, db, len(runners), own, self.settings.python)
        runners.append(runner)
        return runner

    def _await_lease(self, db: Path, runner: Runner) -> int:
        """Wait until ``runner`` holds the lease and its lease_acquired row is written; its epoch."""
        def holds() -> int | None:
            row = lease_row(db)
            if not row or not str(row.get("holder", "")).startswith(runner.prefix):
                return None
            for seq, action, actor, _, _ in reversed(try_rows(db)):
                if action == "lease_acquired" and actor == row["holder"]:
                    runner.lease_seq = seq
                    return int(row.get("epoch") or 0) or -1
            return None

        epoch = self._wait(f"{runner.prefix}* to take the runner lease", holds, runner)
        return max(0, int(epoch))

    def _flatten_row(self, db: Path, after_seq: int | None) -> tuple[int, dict[str, Any]] | None:
        if after_seq is None:
            return None
        for seq, action, _, _, details in try_rows(db):
            if seq > after_seq and action in FLATTEN_ROWS:
                return seq, details
        return None

    def _run(self, index: int, result: SplitBrainResult, runners: list[Runner],
             stop_after_calls: int | None) -> None:
        s = self.settings
        rng = random.Random(self.seed * 1_000_003 + index)
        workdir = self.workdir / f"run-{index:04d}"
        workdir.mkdir(parents=True, exist_ok=True)
        db = workdir / "ess.db"
        key = f"split-brain-key-{index}-{rng.getrandbits(48):012x}"
        env = self._env(workdir, key)
        reason = REASON.format(run=index)
        latency = s.latency_ms / 1000

        a = self._start(workdir, db, env, runners)
        epoch_a = self._await_lease(db, a)
        done = self._cli(env, db, "activate", "--reason", reason, "--by", "split-brain-drill")
        if done.returncode != 0:
            raise DrillFailure(f"ess-tui activate exited {done.returncode}: {done.stderr.strip()[-300:]}")
        a_calls = a.call_log
        assert a_calls is not None
        if stop_after_calls is None:
            self._wait("A to send its first book-changing call", lambda: read_call_log(a_calls), a)
            time.sleep(rng.uniform(0.0, 1.5 * latency))  # in the cancel, the closes or the verify
        else:
            self._wait(f"A to send {stop_after_calls} book-changing calls",
                       lambda: len(read_call_log(a_calls)) >= stop_after_calls, a)
        a.stop()
        stopped_at = time.monotonic()
        result.calls_before_stop = len(read_call_log(a_calls))
        if self._flatten_row(db, a.lease_seq) is not None:
            result.calls_before_stop = -1  # it had finished: not mid-flatten (counted apart)
        time.sleep(s.lease_ttl * 1.2 + 0.1)  # past A's lease, as seen by anyone's clock

        b: Runner | None = None
        if result.variant in ("takeover", "reset"):
            b = self._start(workdir, db, env, runners)
            epoch_b = self._await_lease(db, b)
            if epoch_b <= epoch_a:
                raise DrillFailure(f"B took the lease at epoch {epoch_b}, not above A's {epoch_a}")
            found = self._wait("B to flatten", lambda: self._flatten_row(db, b.lease_seq), b)
            if found[1].get("flat") is not True:
                raise DrillFailure(f"B did not reach flat: {found[1]}")
        if result.variant in ("reset", "reset-alone"):
            done = self._cli(env, db, "reset", "--yes", "--by", "alice", "--approver", "bob",
                             "--override", f"split-brain drill {index}: A frozen, book checked by hand",
                             "--note", "split-brain drill")
            if done.returncode != 0:
                raise DrillFailure(f"ess-tui reset exited {done.returncode}: {done.stderr.strip()[-300:]}")
        if time.monotonic() - stopped_at < s.lease_ttl:
            raise DrillFailure("harness: A was not stopped past its lease ttl")

        rows_before = try_rows(db)
        last_seq = rows_before[-1][0] if rows_before else 0
        log_before = len(a.log())
        cont_at = time.monotonic()
        a.cont()
        if b is not None:  # with no B, A may follow the reset quietly: nobody else holds the lease
            result.a_log = self._wait(
                "A's log to say it was fenced or is a standby",
                lambda: next((w for w in FENCED_WORDS if w in a.log()[log_before:]), None), a)
        time.sleep(max(s.settle_sec, 4 * latency))

        problems = self._verdict(db, key, reason, result, a, b, cont_at, last_seq)
        if problems:
            raise DrillFailure("after SIGCONT: " + "; ".join(problems))
        self._stop_cleanly(db, a, b)

    def _verdict(self, db: Path, key: str, reason: str, result: SplitBrainResult, a: Runner,
                 b: Runner | None, cont_at: float, last_seq: int) -> list[str]:
        from ess_tui.gate import TradeGate

        problems: list[str] = []
        assert a.call_log is not None
        late = calls_after(read_call_log(a.call_log), cont_at)
        result.calls_after_cont = len(late)
        if late:
            shown = ", ".join(f"{c.get('method')}({c.get('args')})" for c in late[:6])
            problems.append(f"A sent {len(late)} book-changing venue calls after SIGCONT: {shown}")
        rows: list[Row] = audit_rows(db)
        new = [(seq, action) for seq, action, *_ in rows if seq > last_seq]
        bad = [f"#{seq} {action}" for seq, action in new if action in FORBIDDEN_AFTER_CONT]
        if bad:
            problems.append(f"audit rows written after SIGCONT that nobody may write now: {bad}")
        flattens = [r for r in rows if r[1] in FLATTEN_ROWS]
        if len(flattens) > (1 if b is not None else 0) + (result.calls_before_stop == -1):
            problems.append(f"{len(flattens)} flatten rows: {[(r[0], r[1]) for r in flattens]}")
        with TradeGate(db) as gate:
            decision = gate.check()
        if result.variant == "takeover":
            if decision.allowed:
                problems.append("the gate says trading is allowed: the latch was lost")
            elif decision.reason != f"ESS active: {reason}" or decision.activation_count != 1:
                problems.append(f"the latch changed: {decision.reason!r} #{decision.activation_count}")
        elif not decision.allowed or decision.activation_count != 1:
            problems.append(f"after the reset the ESS re-latched: {decision.reason!r} "
                            f"#{decision.activation_count}")
        if b is not None:
            holder = str((lease_row(db) or {}).get("holder", ""))
            if not holder.startswith(b.prefix):
                problems.append(f"B no longer holds the lease (holder {holder or 'none'})")
        if not a.alive():
            problems.append(f"A exited after SIGCONT (code {a.proc.returncode})")
        broken = verify_chain(db, key)
        if broken:
            problems.append(broken)
        return problems

    def _stop_cleanly(self, db: Path, a: Runner, b: Runner | None) -> None:
        timeout = self.settings.timeout
        code = a.terminate(timeout=timeout)
        if code != 0:
            raise DrillFailure(f"A did not stop cleanly on SIGTERM (exit {code})")
        if b is not None:
            holder = str((lease_row(db) or {}).get("holder", ""))
            if not holder.startswith(b.prefix):
                raise DrillFailure(f"A's SIGTERM released B's lease (holder now {holder or 'none'})")
            code = b.terminate(timeout=timeout)
            if code != 0:
                raise DrillFailure(f"B did not stop cleanly on SIGTERM (exit {code})")
        if lease_row(db) and (lease_row(db) or {}).get("holder"):
            raise DrillFailure(f"the lease is still held after both stopped: {lease_row(db)}")
