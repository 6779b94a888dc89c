"""The small functions the CLI, the config and the runtime call to accept a ``postgresql://`` URL
wherever a SQLite path is accepted (``--db``, ``QT_ESS_DB``, ``db = …`` in ess.toml).

Nothing here imports a PostgreSQL driver until a URL is actually used.
"""

from __future__ import annotations

import asyncio
import sys

from ess_tui.store.open import describe_db, is_postgres_url, open_store
from ess_tui.store.postgres.url import redact

__all__ = ["is_postgres_url", "open_store", "init_postgres", "migrate_main", "describe_db"]


async def init_postgres(url: str) -> str:
    """``ess-tui init --db postgresql://…``: create the schema, or migrate an older one forward.
    An existing trail is kept (nothing is initialised over it); a newer schema is refused with
    ``StoreUnavailable``. Returns the line to print."""
    from ess_tui.store.postgres.store import PostgresStore

    store = PostgresStore(url)
    try:
        state = await store.load_state()
        rows = len(await store.read_audit(1))
    finally:
        await store.close()
    from ess_tui.store.postgres.schema import SCHEMA_VERSION

    if rows == 0 and state.activation_count == 0:
        return (f"initialised the ESS store on {store.url} (schema {store.schema}, version "
                f"{SCHEMA_VERSION}); gates LISTEN on channel {store.channel}")
    return (f"the ESS store on {store.url} already exists (schema version {SCHEMA_VERSION}): "
            "kept as it is")


def migrate_main(source: str, target: str) -> int:
    """The body of ``ess-tui migrate --from ess.db --to postgresql://…``: one line on stdout
    (or stderr on refusal), exit 0, or 2 with nothing written to the target."""
    from ess_tui.engine.store import StoreError

    if not is_postgres_url(target):
        print(f"ess-tui migrate: --to must be a postgresql:// URL, not {describe_db(target)!r}",
              file=sys.stderr)
        return 2
    if is_postgres_url(source):
        print("ess-tui migrate: --from must be a SQLite file (PostgreSQL to PostgreSQL: use "
              "pg_dump)", file=sys.stderr)
        return 2
    try:
        from ess_tui.store.postgres.migrate import migrate_sqlite_to_postgres

        report = asyncio.run(migrate_sqlite_to_postgres(source, target))
    except (StoreError, ValueError) as exc:
        print(f"ess-tui migrate: {redact(str(exc))}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0
