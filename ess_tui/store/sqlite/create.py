"""Creating an ESS database: only where nothing exists, and never half-made where others look.

The new database is built in a private temporary file beside the target, then linked into place
with ``os.link``, which fails if anything appeared at the path meanwhile: an existing file, of
any size or content, is never initialised over, and no reader ever sees a half-made file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import uuid

from ess_tui.engine.audit_chain import MODE_HMAC, MODE_SHA256, audit_key_from_env
from ess_tui.store.marker import marker_path
from ess_tui.store.schema import ensure_schema


def _fsync_path(path: str, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _refuse_existing(path: str) -> None:
    for candidate, what in ((path, "a file"), (path + "-wal", "a WAL file"),
                            (marker_path(path), "a latch marker")):
        if os.path.lexists(candidate):
            raise FileExistsError(
                f"{path}: {what} already exists at {candidate}; an existing database is never "
                "initialised over: choose a new path, or restore/remove the old one yourself"
            )


def init_database(path: str | os.PathLike[str], *, audit_mode: str | None = None) -> str:
    """Create a fresh, armed ESS database at ``path`` (0o600, parent made 0o700).

    Raises ``FileExistsError`` (one line) when anything exists at the path, its WAL or its latch
    marker. ``audit_mode`` defaults to keyed (HMAC) when ``QT_ESS_AUDIT_KEY`` is set. Returns
    the absolute path."""
    target = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if audit_mode is None:
        audit_mode = MODE_HMAC if audit_key_from_env() else MODE_SHA256
    _refuse_existing(target)
    parent = os.path.dirname(target)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    tmp = f"{target}.init-{uuid.uuid4().hex[:12]}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        with contextlib.closing(sqlite3.connect(tmp, isolation_level=None)) as conn:
            conn.execute("PRAGMA synchronous = FULL")
            ensure_schema(conn, audit_mode=audit_mode, fresh=True)
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
        _fsync_path(tmp)
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise FileExistsError(
                f"{target}: a file appeared at this path while the database was being made; "
                "it was left alone") from None
        except OSError:
            # No hard links here (some network or FUSE file systems): claim the name, then
            # move the finished file over the empty placeholder we just made.
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            os.replace(tmp, target)
        _fsync_path(parent)
    finally:
        for leftover in (tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    return target
