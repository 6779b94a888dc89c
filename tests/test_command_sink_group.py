"""F9: a command alert sink whose program forks (a shell running ``sleep 600``) is killed with its
whole process group on timeout or cancel: the send returns promptly and no orphan is left holding
the pipes (before, only the shell was killed and ``proc.wait`` waited for the grandchild)."""

from __future__ import annotations

import asyncio
import os
import sys
import time

import pytest

from ess_tui.alerts.sinks import CommandSink, SinkError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX")


class _Message:
    def as_json(self, event: object) -> dict[str, str]:
        return {"kind": "latched"}


def _script(tmp_path) -> tuple[list[str], str]:
    pidfile = str(tmp_path / "pgid")
    # `; true` keeps the shell from exec'ing sleep: sleep is a grandchild holding the pipes.
    return ["/bin/sh", "-c", f'echo $$ > "{pidfile}"; sleep 600; true'], pidfile


def _group_gone(pidfile: str, within: float = 5.0) -> bool:
    pgid = int(open(pidfile).read().strip())
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


async def test_timeout_kills_the_whole_group(tmp_path) -> None:
    command, pidfile = _script(tmp_path)
    sink = CommandSink("pager", command, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(SinkError, match="took longer"):
        await asyncio.wait_for(sink.send(_Message(), None), 10)  # type: ignore[arg-type]
    assert time.monotonic() - started < 5
    assert _group_gone(pidfile), "the forked sleep was left running"


async def test_cancel_kills_the_whole_group(tmp_path) -> None:
    command, pidfile = _script(tmp_path)
    sink = CommandSink("pager", command, timeout=30.0)
    task = asyncio.create_task(sink.send(_Message(), None))  # type: ignore[arg-type]
    deadline = time.monotonic() + 5
    while not (os.path.exists(pidfile) and open(pidfile).read().strip()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # the shell has started sleep
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done, "cancelling the send waited for the forked grandchild"
    assert _group_gone(pidfile), "the forked sleep was left running"
