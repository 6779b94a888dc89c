"""Small async helpers: calling duck-typed collaborators whose methods may be sync or async.

A synchronous collaborator (a seed evaluator's ``check()``, a metrics repository, a feed monitor)
may block. Called on the event loop it would freeze the loop, so no timeout could fire and one hung
source would hang the whole ESS. :func:`call_off_loop` runs such a call in a worker thread, so the
runner's per-check timeout applies and the loop (the latch, the lease, the other evaluators) keeps
going. Coroutine functions are awaited on the loop as before.

A source that hangs for good keeps one worker thread: while its previous call is still running, a
new call for the same function joins it instead of starting another thread, so a hung source can
never use up the pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

#: Worker threads for blocking collaborator calls (own pool: never starves the loop's default one).
MAX_WORKERS = 32

_POOL_LOCK = threading.Lock()
_POOL: _DaemonPool | None = None
_IN_FLIGHT: dict[tuple[int, int], Any] = {}


async def maybe_await(value: Any) -> Any:
    """Await ``value`` if it is awaitable, else return it: seed collaborators may be either."""
    if inspect.isawaitable(value):
        return await value
    return value


async def call(obj: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``obj.method(*args)`` whether it is sync or async."""
    return await maybe_await(getattr(obj, method)(*args, **kwargs))


def nonblocking(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a sync method as never blocking (an in-memory read under a short lock): it is called
    on the loop, saving the thread hop. Only for ess-tui's own collaborators; never guess."""
    fn.__ess_nonblocking__ = True  # type: ignore[attr-defined]
    return fn


def _is_async(fn: Any) -> bool:
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target):
        return True
    call_method = getattr(type(target), "__call__", None)
    return call_method is not None and inspect.iscoroutinefunction(call_method) \
        and not inspect.isfunction(target) and not inspect.ismethod(target)


class _DaemonPool:
    """A small growing pool of daemon threads. Not ``ThreadPoolExecutor``: its workers are joined
    at interpreter exit, so one source that never returns would stop the process from exiting."""

    def __init__(self, max_workers: int) -> None:
        self._max = max_workers
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = 0
        self._idle = 0
        self._pending = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            self._queue.put((future, fn, args))
            self._pending += 1
            spawn = self._idle < self._pending and self._workers < self._max
            if spawn:
                self._workers += 1
        if spawn:  # else queued: a busy pool is slow, and the caller's timeout applies
            threading.Thread(target=self._work, name="ess-sync-call", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            future, fn, args = self._queue.get()
            with self._lock:
                self._idle -= 1
                self._pending -= 1
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del future, fn, args


def _pool() -> _DaemonPool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = _DaemonPool(MAX_WORKERS)
        return _POOL


def _key(fn: Any) -> tuple[int, int]:
    owner = getattr(fn, "__self__", None)
    func = getattr(fn, "__func__", fn)
    return (id(owner), id(func))


class SourceStillBusy(Exception):
    """A sync source's previous call, abandoned by a timeout, has still not returned."""


class _Call:
    __slots__ = ("future", "started", "abandoned")

    def __init__(self, future: concurrent.futures.Future[Any]) -> None:
        self.future = future
        self.started = time.monotonic()
        self.abandoned = False


async def call_off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` without blocking the event loop: a coroutine function is awaited here, a
    plain function runs in a worker thread (its answer is awaited here if it is awaitable).

    Cancelling the caller (a timeout) abandons the thread call; until it returns, a new call of the
    same function raises :class:`SourceStillBusy` at once (a fault, never a stale "all clear", and
    no second thread). Callers arriving while it is still wanted (two evaluators on one repository
    in one cycle) share it.
    """
    if _is_async(fn):
        return await fn(*args)
    if getattr(fn, "__ess_nonblocking__", False) is True:
        return await maybe_await(fn(*args))
    loop = asyncio.get_running_loop()
    key = _key(fn) if not args else None
    with _POOL_LOCK:
        running = _IN_FLIGHT.get(key) if key is not None else None
        if running is not None and running.abandoned:
            raise SourceStillBusy(
                f"its previous call has not returned after {time.monotonic() - running.started:.1f}"
                " s"
            )
    if running is None:
        running = _Call(_pool().submit(fn, *args))
        if key is not None:
            with _POOL_LOCK:
                _IN_FLIGHT[key] = running

            def _done(fut: concurrent.futures.Future[Any], key: tuple[int, int] = key,
                      call: _Call = running) -> None:
                with _POOL_LOCK:
                    if _IN_FLIGHT.get(key) is call:
                        del _IN_FLIGHT[key]

            running.future.add_done_callback(_done)
    try:
        result = await asyncio.shield(asyncio.wrap_future(running.future, loop=loop))
    except asyncio.CancelledError:
        running.abandoned = True
        raise
    return await maybe_await(result)


async def call_method_off_loop(obj: Any, method: str, *args: Any) -> Any:
    """``obj.method(*args)`` through :func:`call_off_loop`."""
    return await call_off_loop(getattr(obj, method), *args)
