"""The SQLite store's base: finding and opening the file, validating it, running operations.

The store owns one stdlib ``sqlite3`` connection, used only on its database thread
(:mod:`.thread`). Opening never initialises an existing file: a database is created only where
nothing exists, and only when the store was made with ``create=True``. An existing file that is
not a sound ESS database (:mod:`ess_tui.store.validate`) is *unavailable* and left untouched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ess_tui.engine import audit_chain
from ess_tui.engine.audit_chain import MODE_HMAC, MODE_SHA256, ChainRow
from ess_tui.engine.store import StoreError, StoreUnavailable
from ess_tui.store.schema import (
    SCHEMA_VERSION,
    SchemaError,
    SchemaTooNew,
    ensure_schema,
    explain_error,
    read_version,
)
from ess_tui.store.sqlite import _util as u
from ess_tui.store.sqlite.create import init_database
from ess_tui.store.sqlite.sidecars import Sidecars, close_stale
from ess_tui.store.sqlite.thread import DBThread
from ess_tui.store.validate import Invalid, Validator, check_file, file_stamps

log = logging.getLogger("ess_tui.store.sqlite")

T = TypeVar("T")

KEY_FROM_ENV: Any = object()


def missing_database(path: str) -> str:
    return (f"database not found: no ESS database at {path}; run `ess-tui init {path}` or start the runner "
            "(nothing was created)")


class StoreCore:
    """Opening, validation and the database thread. See :class:`SQLiteStore`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        busy_timeout_ms: int = 5000,
        audit_key: bytes | str | None = KEY_FROM_ENV,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self._create = create
        self._busy_ms = int(busy_timeout_ms)
        key = audit_chain.audit_key_from_env() if audit_key is KEY_FROM_ENV else audit_key
        if isinstance(key, str):
            key = key.encode("utf-8")
        self._key: bytes | None = key or None
        self._monotonic = monotonic
        self._db = DBThread("ess-store", on_fork=self._forget_inherited)
        self._conn: sqlite3.Connection | None = None  # touched on the database thread only
        self._ident: tuple[int, int] | None = None
        #: The -wal and -shm files the open connection uses.
        self._sidecars = Sidecars(self._path)
        #: The last time the files were found deleted or replaced under the open connection.
        self.replaced_warning: str | None = None
        self._validator = Validator(self._path)
        self._opened_once = False
        self._audit_mode: str | None = None
        #: Milliseconds the last write transaction took, BEGIN to COMMIT (None before any write).
        self.write_latency_ms: float | None = None
        #: Milliseconds the checkpoint after the last latch or reset took.
        self.checkpoint_ms: float | None = None
        #: Set when the audit key and the trail's mode disagree (shown to the operator).
        self.audit_warning: str | None = None

    @property
    def path(self) -> str:
        return self._path

    @property
    def audit_mode(self) -> str | None:
        """``sha256`` or ``hmac-sha256`` once the file has been opened."""
        return self._audit_mode

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    # --- opening (database thread) -----------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """The open, validated connection; (re)opened and re-validated when the file changed."""
        try:
            main, wal = file_stamps(self._path)
        except FileNotFoundError:
            self._drop()
            if self._opened_once:
                raise StoreUnavailable(
                    f"database not found: {self._path} was removed while in use; it is never "
                    "re-created armed: restore it from a backup") from None
            if not self._create:
                raise StoreUnavailable(missing_database(self._path)) from None
            with contextlib.suppress(FileExistsError):  # another process made it meanwhile
                init_database(self._path, audit_mode=MODE_HMAC if self._key else MODE_SHA256)
            main, wal = file_stamps(self._path)
        ident = (int(main[0]), int(main[1]))  # type: ignore[call-overload]
        if self._conn is not None and ident != self._ident:
            self._replaced(f"{self._path} itself was replaced by another file")
        elif self._conn is not None:
            gone = self._sidecars.changed()
            if gone:
                self._replaced(f"{gone} deleted or replaced while the store had it open (its "
                               "view was stale: writes since then reached no one)")
        if self._conn is None or ident != self._ident:
            if self._sidecars.stale_others():
                raise StoreUnavailable(
                    f"store file replaced: another connection to {self._path} in this process "
                    "still holds the deleted -wal/-shm; retrying")
            self._open(ident)
            main, wal = file_stamps(self._path)
        assert self._conn is not None
        try:
            self._validator.check(self._conn, main, wal)
        except Invalid:
            self._drop()
            raise
        return self._conn

    def _open(self, ident: tuple[int, int]) -> None:
        self._drop()
        check_file(self._path)  # before SQLite touches it
        conn = sqlite3.connect(Path(self._path).as_uri() + "?mode=rw", uri=True,
                               timeout=self._busy_ms / 1000, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            found = read_version(conn)
            if found > SCHEMA_VERSION:
                raise SchemaTooNew(found)
            if found == 0:
                raise Invalid(f"{self._path} is not an ess-tui database (it holds no ess-tui "
                              "schema); fix the path, or restore the file from a backup")
            if found < SCHEMA_VERSION:
                self._validator.check(conn, None, None)  # the old version must be sound too
                ensure_schema(conn, audit_mode=MODE_SHA256)
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = FULL")
            rows = conn.execute("SELECT value FROM meta WHERE key = 'audit_mode'").fetchall()
            self._audit_mode = str(rows[0][0]) if rows else MODE_SHA256
            if found < SCHEMA_VERSION:
                self._seal_migrated_head(conn)
        except BaseException:
            conn.close()
            raise
        self._conn, self._ident = conn, ident
        self._sidecars.opened()
        self._validator.forget()
        if not self._opened_once:
            self._opened_once = True
            self._audit_warning()

    def _replaced(self, what: str) -> None:
        """The files changed under the open connection: say so, then reopen on the file as it
        now is (validated; nothing is created). The engine re-asserts a latch the fresh view
        lost."""
        self.replaced_warning = (f"store file replaced: {what}; reopening on the file as it "
                                 "now is (a latch it lost is re-asserted)")
        log.critical("%s", self.replaced_warning)
        self._sidecars.drop_others()
        conn, self._conn, self._ident = self._conn, None, None
        self._sidecars.closed()
        self._validator.forget()
        if conn is not None:
            close_stale(conn, self._path)

    def _seal_migrated_head(self, conn: sqlite3.Connection) -> None:
        """A keyed trail migrated from version 1 gets its keyed head now (trusted as found)."""
        key = self._hash_key()
        if key is None:
            return
        last = conn.execute(u.LAST_AUDIT_SQL).fetchall()
        if last:
            conn.execute(u.AUDIT_MAC_SQL, (audit_chain.head_mac(
                key, int(last[0][0]), str(last[0][1])),))

    def _forget_inherited(self) -> None:
        """In a forked child: drop (without closing) the parent's connection."""
        self._conn, self._ident = None, None
        self._sidecars.closed()
        self._validator.forget()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._sidecars.closed()
        self._ident = None
        self._validator.forget()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _audit_warning(self) -> None:
        env = audit_chain.AUDIT_KEY_ENV
        if self._audit_mode == MODE_HMAC and self._key is None:
            self.audit_warning = (
                f"the audit trail in {self._path} is keyed (HMAC) but {env} is not set: new "
                "audit rows are written unkeyed and will fail verification"
            )
        elif self._audit_mode == MODE_SHA256 and self._key is not None:
            self.audit_warning = (
                f"{env} is set but the audit trail in {self._path} was created without a key: "
                "the key is not used, and verification with the key fails"
            )
        else:
            self.audit_warning = None
        if self.audit_warning:
            log.warning("%s", self.audit_warning)

    def _hash_key(self) -> bytes | None:
        return self._key if self._audit_mode == MODE_HMAC else None

    # --- running operations ------------------------------------------------------------------

    def _guarded(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the database thread, every failure as a ``StoreError``."""
        try:
            return fn(self._connection())
        except StoreError:
            raise
        except Invalid as exc:
            self._drop()
            raise StoreUnavailable(str(exc)) from exc
        except (sqlite3.Error, OSError, SchemaError) as exc:
            if not isinstance(exc, sqlite3.IntegrityError):
                self._drop()
            raise StoreUnavailable(explain_error(exc, self._path)) from exc
        except Exception as exc:
            if type(exc).__name__ in ("ResetRefused",):
                raise
            self._drop()
            raise StoreError(
                f"unexpected error using {self._path}: {type(exc).__name__}: {exc}") from exc

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db.run(self._guarded, fn)

    def _run_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._db.call(self._guarded, fn)

    def _write(self, conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        """``body`` inside one ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any error)."""
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        self.write_latency_ms = (time.perf_counter() - started) * 1000
        self._trust_own_write()
        return result

    def _trust_own_write(self) -> None:
        with contextlib.suppress(OSError):
            self._validator.accept(*file_stamps(self._path))

    def _checkpoint_next(self) -> None:
        """Checkpoint as the very next job on the database thread, after the caller has its
        answer: the latch is already durable (fsync'd in the WAL), so its caller -- the flatten
        -- does not wait for the copy into the main file, yet nothing else runs before it."""
        self._db.submit(self._checkpoint_job)

    def _checkpoint_job(self) -> None:
        # Never checkpoint a WAL deleted under us into the main file (it would write stale pages
        # over changes made since): the next operation notices and reopens.
        if self._conn is not None and not self._sidecars.changed():
            self._checkpoint(self._conn)

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Move the WAL into the main file, so the durable main file holds the latch/reset."""
        started = time.perf_counter()
        try:
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            log.warning("checkpoint of %s failed: %s", self._path, exc)
            return
        self.checkpoint_ms = (time.perf_counter() - started) * 1000
        if busy:
            log.warning("checkpoint of %s could not finish (a reader holds an old snapshot); "
                        "the latch is durable in the WAL", self._path)
        self._trust_own_write()

    def _append(
        self, conn: sqlite3.Connection, *, at: datetime, action: str, actor: str,
        reason: str | None, details: Mapping[str, Any] | None,
    ) -> ChainRow:
        """Append one audit row and move the (keyed) head, inside the caller's transaction."""
        rows = conn.execute(u.LAST_AUDIT_SQL).fetchall()
        last = (int(rows[0][0]), str(rows[0][1])) if rows else None
        key = self._hash_key()
        row = audit_chain.next_row(last, at=at, action=action, actor=actor, reason=reason,
                                   details=details, key=key)
        conn.execute(u.INSERT_AUDIT_SQL, (
            row.seq, row.at, row.action, row.actor, row.reason,
            audit_chain.canonical_json(row.details), row.prev_hash, row.hash,
        ))
        conn.execute(u.AUDIT_HEAD_SQL, (str(row.seq),))
        if key is not None:
            conn.execute(u.AUDIT_MAC_SQL, (audit_chain.head_mac(key, row.seq, row.hash),))
        return row

    # --- lifecycle ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Finish pending operations and close the connection (a later use reopens it)."""
        await self._db.run(self._drop)
        self._db.shutdown()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
