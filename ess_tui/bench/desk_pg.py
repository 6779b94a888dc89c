"""Scenario — a desk on PostgreSQL: one process latches, ten gate processes hear it.

* latch on one process → all N gate processes (other processes, each with its own LISTENing
  ``TradeGate("postgresql://…")``) answer blocked: from the start of ``latch()`` to the moment
  the *last* gate's ``check()`` flips, p50/p99 over 200 latches (goal p99 ≤ 10 ms on loopback);
* ``check()`` from memory in a gate process (goal p99 ≤ 20 µs);
* trigger → durable latch on PostgreSQL: ``latch()`` call to commit, p50/p99.

The server is ``QT_ESS_BENCH_PG_URL`` when set (a database the bench may write to), otherwise a
throwaway cluster started for the run (needs the PostgreSQL server binaries). The gate processes
share this host's monotonic clock, so their flip times compare directly with the latcher's.

Also the gate worker the multi-process tests use: ``python -m ess_tui.bench.desk_pg gate URL``
prints ``ready``, then one line ``<monotonic> <0|1> <reason>`` each time the answer changes
(it waits in ``wait_change(poll)`` and reports what ``check()`` answers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

KEY = "desk_pg"
TITLE = "7. Desk on PostgreSQL: latch heard by 10 gate processes"
URL_ENV = "QT_ESS_BENCH_PG_URL"


# --- the gate worker (a child process) -------------------------------------------------------


def gate_worker(url: str, *, max_silence: float, poll: float, checks: int = 0) -> int:
    from ess_tui.gate import TradeGate

    gate = TradeGate(url, max_silence=max_silence)
    first = gate.check()
    if checks:
        samples = []
        for _ in range(2000):
            gate.check()
        for _ in range(checks):
            t0 = time.perf_counter_ns()
            gate.check()
            samples.append((time.perf_counter_ns() - t0) / 1000)
        samples.sort()
        print(json.dumps({"median": samples[len(samples) // 2],
                          "p99": samples[int(len(samples) * 0.99)], "n": len(samples),
                          "first_allowed": first.allowed}), flush=True)
        return 0
    print("ready", flush=True)
    last: tuple[bool, str] | None = None
    try:
        while True:
            d = gate.wait_change(poll)
            now = time.monotonic()
            key = (d.allowed, (d.reason or "").split(" for ")[0])
            if key != last:
                last = key
                print(f"{now:.6f} {int(d.allowed)} {d.reason or ''}", flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        return 0


class GateProcess:
    """A gate worker and the answers it reported, read by a thread."""

    def __init__(self, url: str, *, max_silence: float = 1.0, poll: float = 0.02,
                 env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ess_tui.bench.desk_pg", "gate", url,
             "--max-silence", str(max_silence), "--poll", str(poll)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env)
        self.flips: list[tuple[float, bool, str]] = []
        self.ready = threading.Event()
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line == "ready":
                self.ready.set()
                continue
            at, allowed, reason = (line.split(" ", 2) + [""])[:3]
            with self.changed:
                self.flips.append((float(at), allowed == "1", reason))
                self.changed.notify_all()

    def state(self) -> tuple[float, bool, str] | None:
        return self.flips[-1] if self.flips else None

    def wait_for(self, allowed: bool, *, after: float = 0.0, timeout: float = 10.0,
                 contains: str = "") -> tuple[float, bool, str] | None:
        """The first answer ``allowed`` (reason containing ``contains``) reported at or after
        monotonic time ``after``, waiting up to ``timeout``; None if it never came."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for flip in self.flips:
                    if flip[1] is allowed and flip[0] >= after and contains in flip[2]:
                        return flip
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.changed.wait(min(left, 0.05))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --- the scenario --------------------------------------------------------------------------


async def _latch_rounds(url: str, gates: list[GateProcess],
                        rounds: int) -> tuple[list[float], list[float], list[float]]:
    from ess_tui.store.postgres import PostgresStore

    store = PostgresStore(url, audit_key=None)
    heard_ms: list[float] = []
    durable_ms: list[float] = []
    after_commit_ms: list[float] = []
    try:
        await store.load_state()
        for i in range(rounds):
            t0 = time.monotonic()
            await store.latch(f"bench: desk latch {i}", actor="bench")
            committed = time.monotonic()
            durable_ms.append((committed - t0) * 1000)
            last = 0.0
            for g in gates:
                flip = await asyncio.to_thread(g.wait_for, False, after=t0, contains="ESS active")
                if flip is None:
                    raise RuntimeError("a gate process never answered blocked after a latch")
                last = max(last, flip[0])
            heard_ms.append((last - t0) * 1000)
            after_commit_ms.append(max(0.0, last - committed) * 1000)
            t1 = time.monotonic()
            await store.unlatch("bench", note="benchmark sample")
            for g in gates:
                if await asyncio.to_thread(g.wait_for, True, after=t1) is None:
                    raise RuntimeError("a gate process never answered allowed after a reset")
    finally:
        await store.close()
    return heard_ms, durable_ms, after_commit_ms


def run(ctx: Any) -> Any:
    from ess_tui.bench.stats import Figure, Goal, ScenarioResult

    result = ScenarioResult(KEY, TITLE)
    goals = {"heard": Goal("p99 ≤ 10 ms", 10.0), "check": Goal("p99 ≤ 20 µs", 20.0)}
    url = os.environ.get(URL_ENV)
    cluster = None
    if not url:
        from ess_tui.testing.pg_cluster import INSTALL_HINT, PASSWORD, PASSWORD_ENV, PGCluster, find_bindir

        bindir = find_bindir()
        if bindir is None:
            for name, unit in (("latch → all gates blocked", "ms"), ("check() from memory", "µs")):
                result.add(Figure.not_measured(name, unit, INSTALL_HINT))
            return result
        os.environ[PASSWORD_ENV] = PASSWORD
        cluster = PGCluster(bindir)
        cluster.start()
        url = cluster.new_database()
    n_gates = 3 if ctx.quick else 10
    rounds = 20 if ctx.quick else 200
    gates: list[GateProcess] = []
    try:
        asyncio.run(_latch_rounds(url, [], 0))  # create the schema before the gates connect
        gates = [GateProcess(url) for _ in range(n_gates)]
        for g in gates:
            if not g.ready.wait(30) or g.wait_for(True, timeout=30) is None:
                raise RuntimeError("a gate process did not start (or never answered allowed)")
        ctx.say(f"  {rounds} latches, {n_gates} gate processes listening")
        heard, durable, after = asyncio.run(_latch_rounds(url, gates, rounds))
        result.add(Figure.from_samples(
            f"latch → all {n_gates} gate processes blocked", "ms", heard, goal=goals["heard"],
            note="latch() call to the last gate process's check() answering blocked "
                 "(NOTIFY carries the state; each gate process waits in gate.wait_change(), "
                 "then check())"))
        result.add(Figure.from_samples(
            f"commit → all {n_gates} gate processes blocked", "ms", after,
            note="latch() returned to the last gate blocked: the NOTIFY's own travel"))
        result.add(Figure.from_samples(
            "trigger → durable latch on PostgreSQL", "ms", durable,
            note="latch() call to commit (synchronous_commit=on): row lock, state, policy key, "
                 "audit row, outbox row, NOTIFY"))
        checks = 20_000 if ctx.quick else 100_000
        out = subprocess.run(
            [sys.executable, "-m", "ess_tui.bench.desk_pg", "gate", url, "--checks", str(checks)],
            capture_output=True, text=True, timeout=300, check=True)
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        result.add(Figure("check() from memory, gate process", "µs", median=summary["median"],
                          p99=summary["p99"], n=summary["n"], goal=goals["check"],
                          note="no round trip: the LISTENing thread keeps the answer current"))
    finally:
        for g in gates:
            g.stop()
        if cluster is not None:
            cluster.destroy()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ess_tui.bench.desk_pg")
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gate", help="a gate process: report every change of answer")
    g.add_argument("url")
    g.add_argument("--max-silence", type=float, default=1.0)
    g.add_argument("--poll", type=float, default=0.02)
    g.add_argument("--checks", type=int, default=0)
    r = sub.add_parser("run", help="run the scenario and print its figures")
    r.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "gate":
        return gate_worker(args.url, max_silence=args.max_silence, poll=args.poll,
                           checks=args.checks)
    from pathlib import Path
    import tempfile

    from ess_tui.bench.world import BenchContext

    ctx = BenchContext(quick=args.quick, workdir=Path(tempfile.mkdtemp()),
                       progress=lambda t: print(t, file=sys.stderr))
    res = run(ctx)
    print(json.dumps(res.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
