"""Policy keys, async for the engine and synchronous for the seed's ``get(key)`` / ``set``."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ess_tui.engine.state import os_user, utcnow
from ess_tui.engine.store import StoreError, StoreUnavailable, entry_actor
from ess_tui.store.schema import EMERGENCY_KEY, explain_error
from ess_tui.store.sqlite import _util as u
from ess_tui.store.sqlite.latch import LatchMixin


class PolicyMixin(LatchMixin):
    def _decode_policy(self, key: str, text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise StoreError(f"policy key {key!r} in {self._path} holds unreadable JSON") from exc
        if not isinstance(value, dict):
            raise StoreError(f"policy key {key!r} in {self._path} does not hold an object")
        return value

    def _get(self, conn: sqlite3.Connection, key: str) -> dict[str, Any] | None:
        if key == EMERGENCY_KEY:
            return self._state(conn).to_policy()
        rows = conn.execute("SELECT value FROM policy WHERE key = ?", (key,)).fetchall()
        return self._decode_policy(key, rows[0][0]) if rows else None

    def _set(self, key: str, value: dict[str, Any], *, audit: bool, actor: str) -> None:
        text = u.policy_json(key, value)
        when = utcnow()

        def body(conn: sqlite3.Connection) -> None:
            conn.execute(u.UPSERT_POLICY_SQL, (key, text, u.iso(when)))
            if audit:
                self._append(conn, at=when, action="policy_set", actor=actor, reason=None,
                             details={"key": key, "value": value})

        self._run_sync(lambda conn: self._write(conn, body))

    async def get_policy(self, key: str) -> dict[str, Any] | None:
        """A policy value, or None. ``emergency_stop`` is read from the latch itself."""
        return await self._run(lambda conn: self._get(conn, key))

    async def set_policy(
        self, key: str, value: dict[str, Any], *, audit: bool = False, actor: str | None = None
    ) -> None:
        """Write a policy key. Refuses ``emergency_stop``: only latch/reset write it.

        Not audited unless ``audit`` is true (some keys, e.g. the equity baseline, change often);
        the row's ``updated_at`` records every write."""
        u.policy_json(key, value)
        who = entry_actor(actor)
        await self._db.run(lambda: self._set(key, value, audit=audit, actor=who))

    # --- the seed's synchronous policy store -------------------------------------------------

    def get(self, key: str) -> dict[str, Any]:
        """The seed's ``policy_store.get(key)``: a dict (``{}`` when unset). Blocking.

        ``get("emergency_stop")`` never raises: when the file cannot be read it answers latched,
        with the reason why.
        """
        try:
            return self._run_sync(lambda conn: self._get(conn, key)) or {}
        except Exception as exc:  # noqa: BLE001 - fail closed on anything
            why = str(exc) if isinstance(exc, StoreError) else explain_error(exc, self._path)
            if key == EMERGENCY_KEY:
                return u.fail_closed_policy(why)
            if isinstance(exc, StoreError):
                raise
            raise StoreUnavailable(why) from exc

    def set(self, key: str, value: dict[str, Any], *, audit: bool = False) -> None:
        """The seed's ``policy_store.set(key, dict)``. Blocking. Audited only if ``audit``.

        Refuses ``emergency_stop`` with ``ValueError``: the latch changes only by latch/reset.
        """
        u.policy_json(key, value)
        self._set(key, value, audit=audit, actor=os_user())
