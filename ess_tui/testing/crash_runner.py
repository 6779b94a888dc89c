"""One ``ess-tui headless`` process under a drill: its log file, its holder id, kill/stop/continue."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

from ess_tui.testing.crash_db import lease_holder

__all__ = ["Runner"]


class Runner:
    """One ``ess-tui headless`` process; its stderr (the log) goes to its own file."""

    def __init__(self, workdir: Path, db: Path, index: int, env: dict[str, str], python: str) -> None:
        self.err_path = workdir / f"runner-{index}.stderr"
        self._err = self.err_path.open("wb")
        self.proc = subprocess.Popen(
            [python, "-m", "ess_tui", "headless", "--db", str(db)],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._err, start_new_session=True,
        )
        # Holder ids are host:pid:random (unique across PID namespaces): known once it holds.
        self.prefix = f"{socket.gethostname()}:{self.proc.pid}:"
        self._db = db
        log = env.get("QT_ESS_PAPER__CALL_LOG")
        #: The paper venue's call log of this runner (``[paper] call_log``), if the drill asked for one.
        self.call_log: Path | None = Path(log) if log else None
        self._holder: str | None = None
        self.lease_seq: int | None = None  # seq of its lease_acquired row once it holds the lease

    @property
    def holder(self) -> str:
        """This runner's holder id, read from the lease table once it has held the lease."""
        if self._holder is None:
            found = lease_holder(self._db)
            if found is not None and found.startswith(self.prefix):
                self._holder = found
        return self._holder or f"{self.prefix}*"

    def log(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 8) -> str:
        return " | ".join(self.log().strip().splitlines()[-lines:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._err.close()

    def terminate(self, timeout: float) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        finally:
            self._err.close()


    def stop(self) -> None:
        """SIGSTOP: the process freezes where it is (mid-call, mid-write), holding whatever it held."""
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
