"""A throwaway PostgreSQL cluster for tests and the bench: ``initdb`` and ``pg_ctl`` into a temp
dir, a free port on 127.0.0.1, stopped (and removed) at the end.

The server refuses to run as root; when the tests run as root the cluster runs as the unprivileged
``postgres`` account the Debian package creates (``runuser -u postgres``). Without the server
binaries the tests skip with one line saying how to install them, except under ``CI=true`` where a
missing server is a failure.

The pytest fixtures are in ``tests/pg_server.py``.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: The superuser's password in the throwaway cluster, handed to ess-tui through this variable.
PASSWORD_ENV = "ESS_TEST_PGPASSWORD"
PASSWORD = "test-only-Secr3t-pw"

INSTALL_HINT = ("PostgreSQL server not installed: run `bash .ci/install-postgres.sh` "
                "(apt-get install postgresql-15) to run the PostgreSQL tests")


def find_bindir() -> str | None:
    """The directory holding initdb/pg_ctl/postgres, or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(os.path.dirname(os.path.realpath(which)))
    for d in candidates:
        if all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PGCluster:
    """One cluster: ``start()``, ``kill9()``, ``stop()``; ``url(db)`` for ess-tui."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="ess-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        os.chmod(self.root, 0o755)
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_root:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        pwfile.unlink()
        self._counter = itertools.count(1)

    def _cmd(self, name: str, *args: str) -> list[str]:
        cmd = [os.path.join(self.bindir, name), *args]
        return ["runuser", "-u", "postgres", "--", *cmd] if self._as_root else cmd

    def _run(self, name: str, *args: str) -> None:
        proc = subprocess.run(self._cmd(name, *args), capture_output=True, text=True,
                              cwd=self.root, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}): {proc.stderr[-2000:]}")

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                "-c max_connections=200 -c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w",
                  "-t", "60", "start")

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill9(self) -> None:
        """SIGKILL the postmaster and every backend: the server dies without a word."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        for p in [pid, *(int(x) for x in children.stdout.split())]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)
        time.sleep(0.2)  # let the children go too

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, db: str = "postgres", user: str = "postgres") -> str:
        return (f"postgresql://{user}@127.0.0.1:{self.port}/{db}"
                f"?password_env={PASSWORD_ENV}&connect_timeout=3")

    def admin(self, sql: str, db: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             password=PASSWORD, dbname=db, autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        name = f"ess_{os.getpid()}_{next(self._counter)}"
        self.admin(f"CREATE DATABASE {name}")
        return self.url(name)


