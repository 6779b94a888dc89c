"""Scenario 5 — the control room: start-up, STOP → durable latch, and resident memory.

* **process start → first frame**: ``python -m ess_tui --db …`` runs under a pseudo-terminal
  (160×50); the clock runs from spawning the process until the ESS banner (``ARMED`` or
  ``LATCHED``) has been drawn on that terminal. One discarded warm-up start (full run) fills the
  bytecode cache first.
* **Enter on the STOP modal → durable latch**: ``ess_tui.bench.stop_latency.measure_stop_latency(n)`` drives
  the app with Textual's Pilot, in a child process; it answers the seconds from Enter on a
  filled-in modal until the engine reports the latch committed (the modal closes only then)
  (and it checks the database says latched after each try).
* **resident memory**: ``ess-tui headless`` and the control room run side by side (separate
  databases) for a minute; ``VmRSS`` is read from ``/proc/PID/status`` twice a second and the
  figure is taken over the last ten seconds (``VmHWM``, the peak, is in the note).

Children run with the bench directory as working directory and XDG directories inside it, so the
user's ess.toml, theme choice and state are neither read nor written.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path
from typing import Any

from ess_tui.bench.stats import Figure, Goal, ScenarioResult, ms
from ess_tui.bench.world import BenchContext, WorkerFailed, run_worker

KEY = "control_room"
TITLE = "5. Control room"
SKIPPED = "skipped: control room not available"
FIRST_FRAME_GOAL = Goal("≤ 1.5 s", 1500.0, stat="median")
STOP_GOAL = Goal("p99 ≤ 20 ms", 20.0)
HEADLESS_RSS_GOAL = Goal("≤ 45 MB", 45.0)
TUI_RSS_GOAL = Goal("≤ 90 MB", 90.0)
COLUMNS, ROWS = 160, 50
BANNER = re.compile(rb"ARMED|LATCHED")
_ESCAPES = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78MDEHc])")


def control_room_available() -> bool:
    try:
        return importlib.util.find_spec("ess_tui.tui.app") is not None
    except (ImportError, ValueError):
        return False


def stop_probe_available() -> bool:
    try:
        from ess_tui.bench import stop_latency
    except ImportError:
        return False
    return callable(getattr(stop_latency, "measure_stop_latency", None))


def read_rss_mb(pid: int) -> tuple[float | None, float | None]:
    """(VmRSS, VmHWM) of ``pid`` in MB, None where unreadable (the process has gone)."""
    rss = hwm = None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return rss, hwm


class TerminalProcess:
    """A child on a pseudo-terminal; a thread drains its output and notes when the banner shows."""

    def __init__(self, cmd: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        env = dict(env, TERM="xterm-256color", COLORTERM="truecolor",
                   COLUMNS=str(COLUMNS), LINES=str(ROWS))
        self.started = time.perf_counter()
        try:
            self.proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                                         env=env, start_new_session=True, close_fds=True)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self.master = master
        self.banner_at: float | None = None
        self.banner_seen = threading.Event()
        self.tail = b""
        self._reader = threading.Thread(target=self._drain, name="bench-pty", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        carry = b""
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            if self.banner_at is None:
                text = _ESCAPES.sub(b"", carry + chunk)
                if BANNER.search(text):
                    self.banner_at = time.perf_counter()
                    self.banner_seen.set()
                carry = (carry + chunk)[-256:]
            self.tail = (self.tail + chunk)[-4096:]

    def screen_text(self) -> str:
        return _ESCAPES.sub(b"", self.tail).decode("utf-8", "replace").strip()[-300:]

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.master, b"\x11")  # ctrl+q
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            _terminate(self.proc)
        self._reader.join(2)
        with contextlib.suppress(OSError):
            os.close(self.master)


def _terminate(proc: subprocess.Popen[Any]) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def _control_room_cmd(ctx: BenchContext, db: Path) -> list[str]:
    return [ctx.python, "-m", "ess_tui", "--db", str(db)]


def first_frame(ctx: BenchContext, timeout: float) -> tuple[float, TerminalProcess]:
    """Start the control room; return ms until the banner showed, and the still-running process."""
    term = TerminalProcess(_control_room_cmd(ctx, ctx.path("tui")), cwd=ctx.workdir,
                           env=ctx.child_env())
    if not term.banner_seen.wait(timeout) or term.banner_at is None:
        exit_code = term.proc.poll()
        screen = term.screen_text()
        term.stop()
        state = f"exited {exit_code}" if exit_code is not None else "still running"
        raise WorkerFailed(
            f"the control room drew no ESS banner within {timeout:.0f} s ({state}); "
            f"last output: {screen[-200:]!r}"
        )
    return ms(term.banner_at - term.started), term


def _sample_memory(pids: dict[str, int], seconds: float, period: float = 0.5
                   ) -> dict[str, list[tuple[float, float | None, float | None]]]:
    samples: dict[str, list[tuple[float, float | None, float | None]]] = {k: [] for k in pids}
    start = time.monotonic()
    while True:
        now = time.monotonic() - start
        for name, pid in pids.items():
            samples[name].append((now, *read_rss_mb(pid)))
        if now >= seconds:
            return samples
        time.sleep(min(period, max(0.0, seconds - now)))


def _rss_figure(name: str, rows: list[tuple[float, float | None, float | None]], window: float,
                goal: Goal) -> Figure:
    if not rows or rows[-1][1] is None:
        return Figure.not_measured(name, "MB", "the process exited before the end of the run",
                                   goal=goal, error=True)
    end = rows[-1][0]
    last = [rss for t, rss, _ in rows if rss is not None and t >= end - window]
    peak = max((h for _, _, h in rows if h is not None), default=None)
    note = f"VmRSS over the last {window:g} s of {end:.0f} s; peak (VmHWM) {peak or 0:.1f} MB"
    return Figure.from_samples(name, "MB", last, goal=goal, note=note,
                               extra={"run_seconds": end, "peak_mb": peak,
                                      "samples": [(round(t, 2), rss) for t, rss, _ in rows]})


def run(ctx: BenchContext) -> ScenarioResult:
    result = ScenarioResult(KEY, TITLE)
    available = control_room_available()
    run_seconds = 2.0 if ctx.quick else 60.0
    window = 1.0 if ctx.quick else 10.0
    frame_timeout = 20.0 if ctx.quick else 30.0

    # --- start → first frame (the last start stays up for the memory run) --------------------
    tui: TerminalProcess | None = None
    if available:
        starts = 1 if ctx.quick else 10
        ctx.say(f"  control room start → first frame: {starts} start(s) under a pty")
        frames: list[float] = []
        try:
            if not ctx.quick:
                _, warm = first_frame(ctx, frame_timeout)  # fills the bytecode cache
                warm.stop()
            for i in range(starts):
                took, term = first_frame(ctx, frame_timeout)
                frames.append(took)
                if i == starts - 1:
                    tui = term
                else:
                    term.stop()
            result.add(Figure.from_samples(
                "process start → first frame", "ms", frames, goal=FIRST_FRAME_GOAL,
                note="spawn until the ESS banner is on the terminal",
            ))
        except WorkerFailed as exc:
            result.add(Figure.not_measured("process start → first frame", "ms", str(exc),
                                           goal=FIRST_FRAME_GOAL, error=True))
    else:
        result.add(Figure.not_measured("process start → first frame", "ms", SKIPPED,
                                       goal=FIRST_FRAME_GOAL))

    # --- resident memory: headless and control room side by side ----------------------------
    ctx.say(f"  resident memory: headless{' and control room' if tui else ''} for {run_seconds:g} s")
    headless = subprocess.Popen(
        [ctx.python, "-m", "ess_tui", "headless", "--db", str(ctx.path("headless"))],
        cwd=ctx.workdir, env=ctx.child_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    pids = {"headless": headless.pid}
    if tui is not None:
        pids["tui"] = tui.proc.pid
    try:
        memory = _sample_memory(pids, run_seconds)
    finally:
        _terminate(headless)
        if tui is not None:
            tui.stop()
    result.add(_rss_figure("resident memory, ess-tui headless", memory["headless"], window,
                           HEADLESS_RSS_GOAL))
    if "tui" in memory:
        result.add(_rss_figure("resident memory, control room", memory["tui"], window,
                               TUI_RSS_GOAL))
    else:
        result.add(Figure.not_measured(
            "resident memory, control room", "MB",
            SKIPPED if not available else "the control room did not start", goal=TUI_RSS_GOAL,
            error=available,
        ))

    # --- Enter on STOP → durable latch -------------------------------------------------------
    name = "Enter on STOP modal → latch durable"
    if available and stop_probe_available():
        tries = 5 if ctx.quick else 200
        ctx.say(f"  STOP modal → durable latch: {tries} tries with Pilot, in a child process")
        try:
            out = run_worker(ctx, "stop-latency", "--tries", str(tries), timeout=120 + tries * 2)
            samples = stop_samples_ms(out.get("raw"))
            result.add(Figure.from_samples(name, "ms", samples, goal=STOP_GOAL,
                                           note="Pilot submits; the clock stops when the engine reports the latch committed"))
        except (WorkerFailed, ValueError, TypeError) as exc:
            result.add(Figure.not_measured(name, "ms", str(exc), goal=STOP_GOAL, error=True))
    else:
        result.add(Figure.not_measured(name, "ms", SKIPPED, goal=STOP_GOAL))
    if not available:
        result.notes.append(SKIPPED + " (ess_tui.tui.app is missing); headless memory only.")
    return result


def stop_samples_ms(raw: Any) -> list[float]:
    """Milliseconds per try from what ``measure_stop_latency`` answered: a list of seconds (its
    contract), or a dict holding a list of milliseconds under ``samples_ms``."""
    scale = 1000.0
    if isinstance(raw, dict):
        if "samples_ms" not in raw:
            raise ValueError(f"measure_stop_latency answered a dict without samples_ms: {sorted(raw)}")
        raw, scale = raw["samples_ms"], 1.0
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError(f"measure_stop_latency answered {type(raw).__name__}, expected a list of seconds")
    return [float(x) * scale for x in raw]
