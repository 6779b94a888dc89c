"""``ess-tui migrate --from ess.db --to postgresql://…``: copy a SQLite store to PostgreSQL.

The source is opened read-only and its audit chain verified first (a broken chain is not copied).
Everything lands in ONE transaction on the server: the audit rows verbatim (same seq, text, hashes,
so the chain and its audit mode carry over), the latch, every policy key; then a
``migrated_from_sqlite`` row extends the chain, and the copy is verified on arrival. The target
must be empty (no audit row, never latched): nothing is migrated over an existing trail.
The runner lease is not copied (a runner on the new store takes a fresh one); outbox events
are not copied (their alerts belong to the old store's deliveries).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from ess_tui.engine import audit_chain
from ess_tui.engine.audit_chain import MODE_SHA256, ChainRow
from ess_tui.engine.state import as_utc
from ess_tui.engine.store import StoreError
from ess_tui.store.postgres.audit import AUDIT_COLUMNS, chain_row
from ess_tui.store.postgres.store import PostgresStore, notify_payload

_KEY_FROM_ENV: Any = object()


class MigrationError(StoreError):
    """The copy was refused or failed; nothing was written to the target."""


@dataclass(frozen=True)
class MigrationReport:
    source: str
    target: str
    audit_rows: int
    policy_keys: int
    latched: bool
    activation_count: int

    def summary(self) -> str:
        state = (f"LATCHED (activation #{self.activation_count})" if self.latched
                 else f"armed ({self.activation_count} activations so far)")
        return (f"migrated {self.source} to {self.target}: {self.audit_rows} audit rows "
                f"(chain verified on arrival), {self.policy_keys} policy keys, ESS {state}")


def _time(text: Any) -> datetime | None:
    return as_utc(datetime.fromisoformat(text)) if text else None


def _read_source(path: str, key: bytes | None) -> dict[str, Any]:
    from ess_tui.store.schema import SCHEMA_VERSION

    if not os.path.exists(path):
        raise MigrationError(f"source database not found: {path}")
    uri = Path(path).as_uri() + "?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5.0)) as conn:
            conn.row_factory = sqlite3.Row
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version == 0 or version > SCHEMA_VERSION:
                why = ("is not an ess-tui database" if version == 0 else
                       f"has schema version {version}, newer than this ess-tui ({SCHEMA_VERSION})")
                raise MigrationError(f"{path} {why}: nothing was copied")
            conn.execute("BEGIN")  # one snapshot of the whole file
            meta = {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM meta")}
            state = dict(conn.execute("SELECT * FROM state WHERE id = 1").fetchone() or {})
            policy = [(r["key"], r["value"], r["updated_at"])
                      for r in conn.execute("SELECT key, value, updated_at FROM policy")]
            rows = [chain_row(tuple(r)) for r in
                    conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq")]
            scoped = conn.execute(
                "SELECT COUNT(*) FROM latches WHERE active = 1").fetchone()[0] if version >= 3 else 0
            if scoped:
                # The PostgreSQL store does not carry scoped or reduce-only latches yet: copying
                # would drop them, and their venues or strategies would trade again.
                raise MigrationError(
                    f"{path} holds {scoped} active scoped or reduce-only latch(es), which the "
                    "PostgreSQL store cannot carry yet: reset them (`ess-tui status` lists them) "
                    "or keep this desk on SQLite; nothing was copied")
    except sqlite3.Error as exc:
        raise MigrationError(f"cannot read {path}: {exc}") from None
    if not state:
        raise MigrationError(f"{path} has no ESS state row: the file is damaged; nothing copied")
    mode = meta.get("audit_mode", MODE_SHA256)
    try:
        head = int(meta.get("audit_head_seq", ""))
    except ValueError:
        head = None
    verdict = audit_chain.verify_chain(rows, mode=mode, key=key, head_seq=head)
    if not verdict.ok:
        raise MigrationError(f"the audit trail in {path} does not verify ({verdict.problem}): "
                             "nothing was copied")
    return {"mode": mode, "state": state, "policy": policy, "rows": rows}


async def migrate_sqlite_to_postgres(
    source: str | os.PathLike[str], url: str, *, audit_key: bytes | str | None = _KEY_FROM_ENV,
) -> MigrationReport:
    """Copy the SQLite store at ``source`` into the (empty) PostgreSQL store at ``url``."""
    path = os.path.abspath(os.path.expanduser(os.fspath(source)))
    key = audit_chain.audit_key_from_env() if audit_key is _KEY_FROM_ENV else audit_key
    key_bytes = key.encode("utf-8") if isinstance(key, str) else (key or None)
    src = _read_source(path, key_bytes)
    rows: list[ChainRow] = src["rows"]
    st = src["state"]
    store = PostgresStore(url, audit_key=key_bytes)
    try:
        await store.load_state()  # creates or checks the schema

        async def op(conn: psycopg.AsyncConnection[Any]) -> tuple[Any, ...]:
            state, _seq = await store._read_state(conn, lock=True)
            cur = await conn.execute("SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE")
            head = await cur.fetchone()
            if (head and int(head[0]) > 0) or state.active or state.activation_count:
                return ("refused", "the target already holds an ESS audit trail or latch: "
                        "migrate into a fresh database (nothing was copied)")
            store._audit_mode = src["mode"]
            await conn.execute("UPDATE meta SET value = %s WHERE key = 'audit_mode'",
                               (src["mode"],))
            async with conn.cursor() as cur2:
                await cur2.executemany(
                    f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [(r.seq, r.at, r.action, r.actor, r.reason,
                      audit_chain.canonical_json(r.details), r.prev_hash, r.hash) for r in rows])
            if rows:
                await conn.execute("UPDATE audit_head SET seq = %s, hash = %s WHERE id = 1",
                                   (rows[-1].seq, rows[-1].hash))
            change_seq = int(st.get("change_seq") or 0) + 1
            active = bool(st["active"])
            await conn.execute(
                "UPDATE state SET active = %s, reason = %s, since = %s, activation_count = %s, "
                "last_reset_by = %s, last_reset_at = %s, change_seq = %s WHERE id = 1",
                (active, st["reason"], _time(st["since"]), int(st["activation_count"]),
                 st.get("last_reset_by"), _time(st.get("last_reset_at")), change_seq))
            for pkey, value, updated in src["policy"]:
                await conn.execute(
                    "INSERT INTO policy (key, value, updated_at) VALUES (%s, %s::jsonb, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                    "updated_at = excluded.updated_at", (pkey, value, _time(updated)))
            new_state, _ = await store._read_state(conn)
            await conn.execute("SELECT pg_notify(%s, %s)",
                               (store.channel, notify_payload(new_state, change_seq)))
            await store._append(
                conn, at=datetime.now().astimezone(), action="migrated_from_sqlite",
                actor="ess-tui migrate", reason=None,
                details={"source": path, "rows": len(rows),
                         "source_head_hash": rows[-1].hash if rows else None})
            return ("ok", new_state)

        outcome = await store._run(op)
        if outcome[0] == "refused":
            raise MigrationError(outcome[1])
        verdict = await store.verify_audit()
        if not verdict.ok or verdict.rows != len(rows) + 1:
            raise MigrationError(f"the copied audit trail does not verify on {store.url}: "
                                 f"{verdict.problem or f'{verdict.rows} rows'}")
        state = outcome[1]
        return MigrationReport(path, store.url, len(rows), len(src["policy"]), state.active,
                               state.activation_count)
    finally:
        await store.close()

