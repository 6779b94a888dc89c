"""The second channel of a latch: a small file beside the database, ``<db>.latched``.

Before the latch transaction is even tried, the store writes this marker (JSON: the activation
it latches, the reason, when) and fsyncs it and its directory. A latch that cannot reach the
database (another process holds the write lock, the disk refuses the WAL) still blocks every gate
on the host, which reads the marker too. A committed reset of that activation removes it; until
then a marker that names an activation the database has not reset means *blocked*.

Stdlib only: the trade gate imports this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from datetime import datetime

__all__ = ["LatchMarker", "marker_path", "write_marker", "read_marker", "read_marker_file",
           "remove_marker",
           "claim_marker", "release"]

SUFFIX = ".latched"
_MAX_BYTES = 8192


@dataclass(frozen=True)
class LatchMarker:
    """What the marker says. ``activation`` is None when the file is unreadable (still blocks)."""

    activation: int | None
    reason: str
    at: str | None = None
    #: Written by a latch that could not read the database (which activation it is, is not
    #: known): it blocks until an opener that can read the database latches it durably.
    unknown: bool = False

    def covered_by(self, active: bool, activation_count: int) -> bool:
        """True when the database shows this latch reset (or superseded by a later activation)."""
        if self.activation is None:
            return False
        return activation_count > self.activation or (
            activation_count == self.activation and not active)


def marker_path(db_path: str) -> str:
    """The marker beside the database's *real* file: a gate and a latch that reach one file by
    different paths (a symlink, a symlinked folder, ``..``) must find the same marker."""
    return os.path.realpath(db_path) + SUFFIX


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_marker(db_path: str, activation: int | None, reason: str, at: datetime) -> int:
    """Write the marker atomically (temp file, fsync, rename, fsync the directory).

    Returns an open descriptor holding an exclusive ``flock`` on the marker: while it is held
    the latch is in flight, and no other process completes it (see :func:`claim_marker`).
    Close it (:func:`release`) once the transaction committed or failed."""
    final = marker_path(db_path)
    tmp = f"{final}.{os.getpid()}.tmp"
    body = json.dumps({"activation": None if activation is None else int(activation),
                       "reason": reason[:2000], "at": at.isoformat()},
                      sort_keys=True).encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the lock follows the file through the rename
        os.write(fd, body)
        os.fsync(fd)
        os.replace(tmp, final)
        _fsync_dir(final)
    except BaseException:
        os.close(fd)
        raise
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def claim_marker(db_path: str) -> int | None:
    """An open descriptor holding the marker's lock, or None when another process holds it
    (its latch is still in flight: leave it to that process) or the marker is gone."""
    try:
        fd = os.open(marker_path(db_path), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def read_marker(db_path: str) -> LatchMarker | None:
    """The marker, None when there is none. An unreadable marker still counts (it blocks)."""
    return read_marker_file(marker_path(db_path))


def read_marker_file(path: str) -> LatchMarker | None:
    """:func:`read_marker` for a marker path already resolved (the gate's hot path)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return LatchMarker(None, f"latch marker {path} cannot be read: {exc.strerror or exc}")
    try:
        data = json.loads(raw.decode("utf-8"))
        activation = data["activation"]
        unknown = activation is None
        if not unknown and (type(activation) is not int or activation < 1):
            raise ValueError(activation)
        reason = data.get("reason")
        at = data.get("at")
        if isinstance(reason, str):  # anyone may write this file: no control characters
            reason = "".join(ch if ch.isprintable() else " " for ch in reason[:500]).strip()
        return LatchMarker(activation, reason if isinstance(reason, str) and reason
                           else "(no reason recorded)", at if isinstance(at, str) else None,
                           unknown)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return LatchMarker(None, f"latch marker {path} is unreadable: remove it only after "
                                 "checking that the ESS is reset")


def remove_marker(db_path: str, activation: int) -> None:
    """Remove the marker if it names ``activation`` or an earlier one (after that reset commits)."""
    found = read_marker(db_path)
    if found is None or found.activation is None or found.activation > activation:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(marker_path(db_path))
        _fsync_dir(db_path)
