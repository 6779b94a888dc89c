"""The store's own database thread: one stdlib ``sqlite3`` connection, used by one thread only.

Every operation is one call on that thread (a whole latch transaction is a single hand-off). An
operation once submitted runs to its end even when the caller is cancelled: a transaction is
never cut in half. Calls run in submission order, so a close waits for every earlier write.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # a caller that was cancelled no longer wants it; do not warn


class DBThread:
    """A single worker thread, started on first use and stopped by :meth:`shutdown`."""

    def __init__(self, name: str, on_fork: Callable[[], None] | None = None) -> None:
        self._name = name
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._ident: int | None = None
        self._pid = os.getpid()
        self._on_fork = on_fork

    def _note_ident(self) -> None:
        self._ident = threading.get_ident()

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        if os.getpid() != self._pid:
            # A forked child: the parent's thread does not exist here, and its connection must
            # not be used. Start afresh.
            self._pid, self._pool, self._ident = os.getpid(), None, None
            self._lock = threading.Lock()
            if self._on_fork is not None:
                self._on_fork()
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix=self._name, initializer=self._note_ident)
            return self._pool.submit(fn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the thread; cancelling the caller does not cancel the work."""
        inner = asyncio.wrap_future(self.submit(fn, *args))
        inner.add_done_callback(_retrieve)
        return await asyncio.shield(inner)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the thread and wait for it (for synchronous callers)."""
        if threading.get_ident() == self._ident:
            return fn(*args)
        return self.submit(fn, *args).result()

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
