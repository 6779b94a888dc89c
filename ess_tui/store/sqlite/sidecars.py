"""Noticing that a database's ``-wal``/``-shm`` files were deleted or replaced under an open
connection, and letting go of that connection without harm.

While a connection is open SQLite never removes its WAL or shared-memory file, so a missing or
different file (by dev/inode) means someone deleted it: the connection goes on writing to, and
reading from, the unlinked copies and sees no other process's change. Every connection to the
file in this process must let go before any reopens (SQLite shares one shared-memory mapping per
database inode within a process), and the last one to close must not checkpoint its stale WAL
into the main file nor unlink the new ``-wal`` by name: :func:`close_stale` holds a read lock
(an open-file-description lock, which conflicts even within this process) on SQLite's shared
range while it closes, so SQLite's close-time checkpoint finds the file busy and skips both.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import struct
import threading
from collections.abc import Callable

try:
    import fcntl
except ImportError:  # not POSIX: the close is not guarded (see close_stale)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("ess_tui.store.sqlite")

SUFFIXES = ("-wal", "-shm")
_SHARED_FIRST, _SHARED_SIZE = 0x40000000 + 2, 510  # SQLite's lock bytes (os_unix.c)

_lock = threading.Lock()
_open: dict[str, set[Sidecars]] = {}


def file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


class Sidecars:
    """The -wal/-shm one connection opened. ``drop`` (thread-safe) closes that connection when
    another connection in this process finds the files replaced (None: only it drops itself)."""

    def __init__(self, path: str, drop: Callable[[], None] | None = None) -> None:
        self.path = path
        self._drop = drop
        self._ids: dict[str, tuple[int, int] | None] = {}

    def opened(self) -> None:
        self._ids = {s: file_id(self.path + s) for s in SUFFIXES}
        with _lock:
            _open.setdefault(self.path, set()).add(self)

    def closed(self) -> None:
        with _lock:
            _open.get(self.path, set()).discard(self)

    def changed(self) -> str | None:
        """Name the files no longer the ones opened (a file made after the open is learnt)."""
        gone = []
        for suffix in SUFFIXES:
            now, was = file_id(self.path + suffix), self._ids.get(suffix)
            if was is None:
                self._ids[suffix] = now
            elif now != was:
                gone.append(os.path.basename(self.path + suffix))
        return " and ".join(gone) or None

    def drop_others(self) -> None:
        """Close every other stale connection to this file in this process that can be closed."""
        with _lock:
            others = [o for o in _open.get(self.path, ()) if o is not self]
        for other in others:
            if other._drop is not None and other.changed():
                with contextlib.suppress(Exception):
                    other._drop()

    def stale_others(self) -> bool:
        with _lock:
            others = [o for o in _open.get(self.path, ()) if o is not self]
        return any(o.changed() for o in others)


def close_stale(conn: sqlite3.Connection, path: str) -> None:
    """Close a connection whose WAL was deleted, without its close-time checkpoint."""
    fd = None
    try:
        if fcntl is None:
            raise AttributeError("no fcntl on this platform")
        fd = os.open(path, os.O_RDONLY)
        flock = struct.pack("hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, _SHARED_FIRST, _SHARED_SIZE, 0)
        fcntl.fcntl(fd, getattr(fcntl, "F_OFD_SETLK"), flock)
    except (OSError, AttributeError) as exc:
        log.warning("cannot guard the close of the stale connection to %s (%s): its unlinked WAL "
                    "may be checkpointed", path, exc)
    try:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
    finally:
        if fd is not None:
            os.close(fd)
