"""The PostgreSQL schema, its versioned migrations, and the GRANTs for the desk's roles.

Every table lives in one PostgreSQL schema (``ess`` unless the URL says ``?schema=``). The version
is ``meta.schema_version``; a newer one than this code knows is refused, an older one is migrated
forward in one transaction under an advisory lock (two processes starting at once migrate once).

The audit table is append-only twice over: triggers refuse UPDATE, DELETE and TRUNCATE for
everyone (the owner included), and the runner's role is granted only SELECT and INSERT on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ess_tui.store.postgres.url import quote_ident

#: The schema this code writes and understands. Bump it and add a step to MIGRATIONS.
SCHEMA_VERSION = 2

EMERGENCY_KEY = "emergency_stop"
RUNNER_LEASE = "runner"

#: One SELECT gives a gate (in any language) everything it needs to decide.
STATE_COLUMNS = ("active, reason, since, activation_count, last_reset_by, last_reset_at, "
                 "change_seq")

_V1 = [
    """CREATE TABLE meta (
        key   text PRIMARY KEY,
        value text NOT NULL
    )""",
    """CREATE TABLE state (
        id               integer PRIMARY KEY CHECK (id = 1),
        active           boolean NOT NULL,
        reason           text,
        since            timestamptz,
        activation_count bigint NOT NULL DEFAULT 0,
        last_reset_by    text,
        last_reset_at    timestamptz,
        change_seq       bigint NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE policy (
        key        text PRIMARY KEY,
        value      jsonb NOT NULL,
        updated_at timestamptz NOT NULL
    )""",
    """CREATE TABLE audit (
        seq       bigint PRIMARY KEY,
        at        text NOT NULL,
        action    text NOT NULL,
        actor     text NOT NULL,
        reason    text,
        details   text NOT NULL,
        prev_hash text NOT NULL,
        hash      text NOT NULL
    )""",
    "CREATE INDEX audit_by_action ON audit (action, seq)",
    # The chain's head, one row: every append locks it, so appends from any host are serial.
    """CREATE TABLE audit_head (
        id   integer PRIMARY KEY CHECK (id = 1),
        seq  bigint NOT NULL,
        hash text NOT NULL
    )""",
    """CREATE TABLE lease (
        name         text PRIMARY KEY,
        holder       text NOT NULL,
        acquired_at  timestamptz NOT NULL,
        heartbeat_at timestamptz NOT NULL,
        expires_at   timestamptz NOT NULL,
        epoch        bigint NOT NULL,
        beat         bigint NOT NULL DEFAULT 0
    )""",
    # The last epoch handed out survives a release, so a new holder never reuses one.
    """CREATE TABLE lease_epoch (
        name  text PRIMARY KEY,
        epoch bigint NOT NULL
    )""",
    """CREATE TABLE outbox (
        id         bigserial PRIMARY KEY,
        kind       text NOT NULL,
        level      text NOT NULL CHECK (level IN ('info', 'warning', 'critical')),
        key        text NOT NULL UNIQUE,
        created_at timestamptz NOT NULL,
        payload    jsonb NOT NULL,
        activation bigint,
        audit_seq  bigint
    )""",
    """CREATE TABLE delivery (
        event_id        bigint NOT NULL REFERENCES outbox (id),
        sink            text NOT NULL,
        attempts        integer NOT NULL DEFAULT 0,
        delivered_at    timestamptz,
        last_error      text,
        next_attempt_at timestamptz,
        PRIMARY KEY (event_id, sink)
    )""",
    """CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'the % is append-only: % refused', TG_ARGV[0], TG_OP
           USING ERRCODE = 'insufficient_privilege';
       END $$""",
    """CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
       FOR EACH ROW EXECUTE FUNCTION refuse_change('audit trail')""",
    """CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
       FOR EACH STATEMENT EXECUTE FUNCTION refuse_change('audit trail')""",
    """CREATE TRIGGER state_no_delete BEFORE DELETE OR TRUNCATE ON state
       FOR EACH STATEMENT EXECUTE FUNCTION refuse_change('ESS state row')""",
]


def _migrate_to_1(cur: Any, *, audit_mode: str, now: datetime) -> None:
    for sql in _V1:
        cur.execute(sql)
    cur.execute("INSERT INTO state (id, active, activation_count, change_seq) "
                "VALUES (1, false, 0, 0)")
    inactive = {"active": False, "status": "inactive", "reason": None, "timestamp": None,
                "activation_count": 0, "auto_recover": False}
    cur.execute("INSERT INTO policy (key, value, updated_at) VALUES (%s, %s::jsonb, %s)",
                (EMERGENCY_KEY, json.dumps(inactive), now))
    cur.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, %s)", ("0" * 64,))
    for key, value in (("audit_mode", audit_mode), ("created_at", now.isoformat())):
        cur.execute("INSERT INTO meta (key, value) VALUES (%s, %s)", (key, value))


#: Version 2: the latch changes only with its audit row. A deferred constraint trigger, checked at
#: COMMIT, refuses any transaction that changed the state row or the ``emergency_stop`` policy key
#: without appending, in that same transaction, the audit row that explains it (``activate`` for a
#: latched value, ``reset`` for an armed one; ``migrated_from_sqlite`` for a migration). A plain
#: ``UPDATE state SET active = false`` by the runner's role is refused. (Chosen over SECURITY
#: DEFINER functions for now: the store's transactions stay as they are, so every write path --
#: latch, reset, migration -- keeps its one transaction, and the owner is held to it too.)
_V2 = [
    """CREATE FUNCTION latch_change_audited() RETURNS trigger LANGUAGE plpgsql
       SET search_path FROM CURRENT AS $$
       DECLARE
         latched boolean;
       BEGIN
         IF TG_TABLE_NAME = 'policy' THEN
           IF NEW.key <> 'emergency_stop' THEN RETURN NULL; END IF;
           latched := coalesce((NEW.value->>'active')::boolean, true);
         ELSE
           latched := NEW.active;
         END IF;
         IF NOT EXISTS (
             SELECT 1 FROM audit
              WHERE xmin::text::bigint = txid_current() % 4294967296
                AND action IN (CASE WHEN latched THEN 'activate' ELSE 'reset' END,
                               'migrated_from_sqlite')) THEN
           RAISE EXCEPTION 'the ESS latch (%) changes only with its audit row: a latch or an '
                           'audited reset (ess-tui reset); this change has none and was refused',
                           TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
         END IF;
         RETURN NULL;
       END $$""",
    """CREATE CONSTRAINT TRIGGER state_change_audited AFTER UPDATE ON state
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION latch_change_audited()""",
    """CREATE CONSTRAINT TRIGGER policy_change_audited AFTER INSERT OR UPDATE ON policy
       DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION latch_change_audited()""",
]


def _migrate_to_2(cur: Any, *, audit_mode: str, now: datetime) -> None:
    for sql in _V2:
        cur.execute(sql)


#: MIGRATIONS[n] brings a schema from version n-1 to version n.
MIGRATIONS: dict[int, Callable[..., None]] = {1: _migrate_to_1, 2: _migrate_to_2}

_OUR_TABLES = {"meta", "state", "policy", "audit", "audit_head", "lease", "lease_epoch",
               "outbox", "delivery"}


class PGSchemaError(Exception):
    """The database is not one this ess-tui can use (newer schema, someone else's tables)."""


def read_version(cur: Any, schema: str) -> int | None:
    """The schema version, or None when ess-tui's tables are not there."""
    cur.execute("SELECT to_regclass(%s)", (f"{schema}.meta",))
    if cur.fetchone()[0] is None:
        return None
    cur.execute(f"SELECT value FROM {quote_ident(schema)}.meta WHERE key = 'schema_version'")
    row = cur.fetchone()
    return int(row[0]) if row else 0


def too_new(found: int) -> str:
    return (f"schema version {found} is newer than this ess-tui ({SCHEMA_VERSION}): "
            "upgrade ess-tui to use this database")


def ensure_schema(conn: Any, schema: str, *, audit_mode: str, create: bool = True) -> int:
    """Create or migrate the schema on a sync psycopg connection. Returns the version found
    (0 when it was created). Raises :class:`PGSchemaError` for a newer or foreign schema."""
    q = quote_ident(schema)
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ess-tui-migrate:{schema}",))
        found = read_version(cur, schema)
        if found is not None and found > SCHEMA_VERSION:
            raise PGSchemaError(too_new(found))
        if found == SCHEMA_VERSION:
            return found
        if found is None:
            if not create:
                raise PGSchemaError(f"no ess-tui schema {schema!r} in this database: run "
                                    "`ess-tui init --db <url>` first")
            cur.execute("SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = %s", (schema,))
            foreign = sorted({r[0] for r in cur.fetchall()} - _OUR_TABLES)
            if foreign:
                raise PGSchemaError(
                    f"schema {schema!r} already holds other tables ({', '.join(foreign[:5])}) "
                    "and no ess-tui schema: give ess-tui its own schema (?schema=NAME)")
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {q}")
            found = 0
        cur.execute(f"SET LOCAL search_path = {q}")
        now = datetime.now(timezone.utc)
        for version in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version](cur, audit_mode=audit_mode, now=now)
        cur.execute("INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(SCHEMA_VERSION),))
        return found


def grant_sql(schema: str = "ess", *, runner: str = "ess_runner", gate: str = "ess_gate") -> list[str]:
    """The GRANTs for a desk: the runner writes the latch, never rewrites the audit trail; a gate
    or viewer reads. Run them as the schema's owner after ``ess-tui init``. The runner's UPDATE on
    ``state``/``policy`` is held to the latch's audit rows by the ``*_change_audited`` triggers
    (schema version 2): a change without an ``activate``/``reset`` row in its transaction is
    refused at COMMIT."""
    q, r, g = quote_ident(schema), quote_ident(runner), quote_ident(gate)
    return [
        f"GRANT USAGE ON SCHEMA {q} TO {r}, {g}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {q} TO {r}, {g}",
        f"GRANT INSERT ON {q}.audit TO {r}",
        f"GRANT UPDATE ON {q}.state, {q}.audit_head, {q}.meta TO {r}",
        f"GRANT INSERT, UPDATE ON {q}.policy, {q}.lease_epoch, {q}.outbox, {q}.delivery TO {r}",
        f"GRANT INSERT, UPDATE, DELETE ON {q}.lease TO {r}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {q} TO {r}",
        f"REVOKE UPDATE, DELETE, TRUNCATE ON {q}.audit FROM {r}, {g}",
    ]
