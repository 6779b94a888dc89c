"""Name the machine a benchmark ran on: OS, CPU model, cores, Python, SQLite, the disk, the load."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _memory_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def filesystem_of(path: Path) -> str:
    """``ext4 on /dev/vda`` for the mount holding ``path`` (unknown off Linux)."""
    try:
        best = ("", "unknown", "")
        target = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            device, mount, kind = parts[0], parts[1], parts[2]
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best[0]):
                best = (mount, kind, device)
        return f"{best[1]} on {best[2]} ({best[0]})" if best[0] else "unknown"
    except OSError:
        return "unknown"


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def describe_machine(workdir: Path) -> dict[str, Any]:
    """What the figures belong to. No host name or user name: only the hardware and software."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "memory_mb": None if (m := _memory_mb()) is None else round(m),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": sys.executable,
        "sqlite": sqlite3.sqlite_version,
        "bench_dir_filesystem": filesystem_of(workdir),
        "load_average_at_start": load_average(),
    }


def one_line(machine: dict[str, Any]) -> str:
    load = machine.get("load_average_at_start")
    load_text = "n/a" if not load else f"{load[0]:.2f}"
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {machine.get('memory_mb') or '?'} MB RAM; "
        f"{machine['platform']}; {machine['python']}; SQLite {machine['sqlite']}; "
        f"disk {machine['bench_dir_filesystem']}; load average at start {load_text}"
    )
