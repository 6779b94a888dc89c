"""The store's connections: a psycopg 3 async pool, schema preparation, and running one
operation at a time in its own transaction with PostgreSQL errors turned into plain words.

Every error text goes through :func:`~ess_tui.store.postgres.url.redact`, so a password written
into a URL never reaches a log, the audit trail or an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ess_tui.engine import audit_chain
from ess_tui.engine.audit_chain import MODE_HMAC, MODE_SHA256
from ess_tui.engine.store import StoreError, StoreUnavailable
from ess_tui.store.postgres.schema import PGSchemaError, ensure_schema
from ess_tui.store.postgres.url import PGTarget, redact

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]

_KEY_FROM_ENV: Any = object()


def explain_pg_error(exc: BaseException, where: str) -> str:
    """One line a person can act on, for an error met talking to the server at ``where``."""
    if isinstance(exc, PGSchemaError):
        return f"{exc} ({where})"
    if isinstance(exc, PoolTimeout):
        return f"ESS store unreachable: no connection to {where} could be made in time"
    text = redact(" ".join(str(exc).split()))[:400]
    if isinstance(exc, psycopg.OperationalError):
        if "password" in text or "authentication" in text:
            return (f"authentication to {where} failed: set PGPASSWORD (or the variable "
                    f"password_env names) for this role ({text})")
        return f"ESS store unreachable: {where}: {text}"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return f"permission denied on {where}: {text} (see the GRANTs in docs/postgres.md)"
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return f"{where} holds no initialised ess-tui schema ({text}): run `ess-tui init`"
    if isinstance(exc, psycopg.Error):
        return f"PostgreSQL error on {where}: {text}"
    return f"unexpected error on {where}: {type(exc).__name__}: {redact(str(exc))[:300]}"


class PGBase:
    """The pool and the runner of operations; the store's mixins build on it."""

    def __init__(
        self, url: str, *, create: bool = True, audit_key: bytes | str | None = _KEY_FROM_ENV,
        pool_size: int = 4, connect_timeout_sec: float = 5.0,
    ) -> None:
        self._target = PGTarget(url)
        self._create = create
        key = audit_chain.audit_key_from_env() if audit_key is _KEY_FROM_ENV else audit_key
        if isinstance(key, str):
            key = key.encode("utf-8")
        self._key: bytes | None = key or None
        self._pool_size = max(1, int(pool_size))
        self._timeout = float(connect_timeout_sec)
        self._pool: AsyncConnectionPool | None = None
        self._open_lock = asyncio.Lock()
        self._audit_mode: str | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        #: Milliseconds the last write transaction took, BEGIN to COMMIT (None before any write).
        self.write_latency_ms: float | None = None
        self.audit_warning: str | None = None

    @property
    def url(self) -> str:
        """The URL with any password removed (safe to show)."""
        return self._target.display

    @property
    def path(self) -> str:
        """Where the store lives, as it may be shown (the URL without a password)."""
        return self._target.display

    @property
    def schema(self) -> str:
        return self._target.schema

    @property
    def channel(self) -> str:
        return self._target.channel

    @property
    def audit_mode(self) -> str | None:
        return self._audit_mode

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _conn_kwargs(self) -> dict[str, Any]:
        return {**self._target.connect_kwargs(), "autocommit": True,
                "connect_timeout": max(1, int(self._timeout)),
                "options": f"-c search_path={self.schema} -c timezone=UTC "
                           "-c synchronous_commit=on"}

    def _prepare(self) -> None:
        """Create or migrate the schema and read the audit mode (blocking; run in a thread)."""
        with psycopg.connect(self._target.conninfo, **self._conn_kwargs()) as conn:
            ensure_schema(conn, self.schema, audit_mode=MODE_HMAC if self._key else MODE_SHA256,
                          create=self._create)
            row = conn.execute("SELECT value FROM meta WHERE key = 'audit_mode'").fetchone()
            self._audit_mode = row[0] if row else MODE_SHA256
        env = audit_chain.AUDIT_KEY_ENV
        if self._audit_mode == MODE_HMAC and self._key is None:
            self.audit_warning = (f"the audit trail on {self.url} is keyed (HMAC) but {env} is "
                                  "not set: new rows are written unkeyed and fail verification")
        elif self._audit_mode == MODE_SHA256 and self._key is not None:
            self.audit_warning = (f"{env} is set but the audit trail on {self.url} was created "
                                  "without a key: the key is not used")
        if self.audit_warning:
            log.warning("%s", self.audit_warning)

    def _hash_key(self) -> bytes | None:
        return self._key if self._audit_mode == MODE_HMAC else None

    async def _ensure_pool(self) -> AsyncConnectionPool:
        if self._pool is not None:
            return self._pool
        async with self._open_lock:
            if self._pool is None:
                await asyncio.to_thread(self._prepare)
                pool = AsyncConnectionPool(
                    self._target.conninfo, kwargs=self._conn_kwargs(), min_size=1,
                    max_size=self._pool_size, open=False, timeout=self._timeout,
                    check=AsyncConnectionPool.check_connection, name="ess-store",
                    reconnect_timeout=max(self._timeout, 10.0),
                )
                await pool.open(wait=True, timeout=self._timeout)
                self._pool = pool
        return self._pool

    async def _run(self, op: Op[T], *, write: bool = True, pipeline: bool = False,
                   txn: bool = True) -> T:
        """Run ``op`` in one transaction on a pooled connection, in its own task: cancelling
        the caller does not cut a transaction in half."""
        task = asyncio.ensure_future(self._transaction(op, write, pipeline, txn))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return await asyncio.shield(task)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()

    async def _transaction(self, op: Op[T], write: bool, pipeline: bool, txn: bool) -> T:
        """``pipeline``: run in pipeline mode, so BEGIN travels with the first query and the
        queued writes with COMMIT (the latch costs three round trips, not ten). ``txn=False``
        is for a read of one statement (autocommit: no BEGIN/COMMIT round trips)."""
        try:
            pool = await self._ensure_pool()
            async with pool.connection() as conn:
                started = time.perf_counter()
                if pipeline:
                    async with conn.pipeline(), conn.transaction():
                        result = await op(conn)
                elif txn:
                    async with conn.transaction():
                        result = await op(conn)
                else:
                    result = await op(conn)
                if write:
                    self.write_latency_ms = (time.perf_counter() - started) * 1000
                return result
        except StoreError:
            raise
        except (psycopg.Error, PoolTimeout, PGSchemaError, OSError) as exc:
            raise StoreUnavailable(explain_pg_error(exc, self.url)) from None
        except Exception as exc:  # noqa: BLE001 - anything else: the store cannot be trusted
            if type(exc).__module__.startswith("ess_tui"):
                raise
            raise StoreError(f"unexpected error using {self.url}: {type(exc).__name__}: "
                             f"{redact(str(exc))[:300]}") from None

    async def close(self) -> None:
        """Finish pending operations and close the pool (a later use reopens it)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.close(timeout=2.0)

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
