"""One validation for the gate and the store (issue 10, holes 2 and 3).

Every opener treats an existing file that is not a sound ESS database as *unavailable — trading
blocked*, never initialises it, and leaves it byte for byte as it was. The gate (run in another
process) and the store must give the same verdict on each damaged file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ess_tui.engine.store import StoreUnavailable
from ess_tui.gate import TradeGate
from ess_tui.store.schema import SCHEMA_VERSION
from ess_tui.store.sqlite import SQLiteStore, init_database


def latched_db(path: Path, *, rows: int = 30) -> None:
    async def go() -> None:
        store = SQLiteStore(path, audit_key=None)
        for i in range(rows):
            await store.audit("note", actor="ops", details={"pad": "x" * 1500, "i": i})
        await store.latch("Daily PnL catastrophic: -12.00%", actor="drawdown")
        await store.close()
    asyncio.run(go())
    Path(str(path) + ".latched").unlink(missing_ok=True)  # judge the database alone here


def armed_db(path: Path) -> None:
    async def go() -> None:
        store = SQLiteStore(path, audit_key=None)
        for i in range(30):
            await store.audit("note", actor="ops", details={"pad": "x" * 1500, "i": i})
        await store.close()
    asyncio.run(go())


def _sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for sql in statements:
            conn.execute(sql)
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        assert not Path(str(path) + suffix).exists()


def make_damaged(base: Path, where: Path, kind: str) -> None:
    """Build one damaged file (or directory) at ``where`` from the armed database ``base``."""
    if kind == "zero_bytes":
        where.write_bytes(b"")
    elif kind == "garbage":
        where.write_bytes(bytes(range(256)) * 40)
    elif kind == "directory":
        where.mkdir()
    elif kind == "truncated_mid_page":
        data = base.read_bytes()
        where.write_bytes(data[: len(data) // 2 + 1234])
    elif kind == "corrupt_page_outside_state":
        shutil.copy(base, where)
        pages = where.stat().st_size // 4096
        with open(where, "r+b") as f:  # an audit page near the end, far from the state row
            f.seek((pages - 3) * 4096)
            f.write(b"\xff" * 64)
    elif kind == "foreign_lookalike":
        _sql(where,
             "CREATE TABLE state (id INTEGER PRIMARY KEY, active INTEGER, reason TEXT, "
             "since TEXT, activation_count INTEGER, last_reset_by TEXT, last_reset_at TEXT, "
             "change_seq INTEGER)",
             "INSERT INTO state VALUES (1, 0, NULL, NULL, 0, NULL, NULL, 0)",
             "PRAGMA user_version = 2")
    elif kind == "newer_schema":
        shutil.copy(base, where)
        _sql(where, "PRAGMA user_version = 9")
    elif kind.startswith("state_"):
        shutil.copy(base, where)
        change = {
            "state_count_text": "activation_count = 'many'",
            "state_count_negative": "activation_count = -3",
            "state_since_not_a_time": "since = 'yesterday-ish'",
            "state_active_two": "active = 2",
            "state_latched_without_activation": "active = 1, activation_count = 0",
        }[kind]
        _sql(where, "PRAGMA ignore_check_constraints = ON", f"UPDATE state SET {change}")
    elif kind == "policy_disagrees":
        shutil.copy(base, where)
        _sql(where, "UPDATE policy SET value = '{\"active\": true, \"status\": \"active\"}' "
                    "WHERE key = 'emergency_stop'")
    else:  # pragma: no cover
        raise AssertionError(kind)


KINDS = [
    "zero_bytes", "garbage", "directory", "truncated_mid_page", "corrupt_page_outside_state",
    "foreign_lookalike", "newer_schema", "state_count_text", "state_count_negative",
    "state_since_not_a_time", "state_active_two", "state_latched_without_activation",
    "policy_disagrees",
]


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


GATE_SCRIPT = """
import json, sys
from ess_tui.gate import TradeGate
out = {}
for p in sys.argv[1:]:
    d = TradeGate(p, busy_timeout_sec=0.05).check()
    out[p] = [d.allowed, d.reason]
print(json.dumps(out))
"""


async def store_verdict(path: Path) -> tuple[bool, str]:
    store = SQLiteStore(path, create=True, audit_key=None, busy_timeout_ms=50)
    try:
        try:
            await store.load_state()
        except StoreUnavailable as exc:
            seed = store.get("emergency_stop")
            assert seed["active"] is True and str(exc) in seed["reason"]
            return False, str(exc)
        return True, ""
    finally:
        await store.close()


def test_damaged_files_get_the_same_verdict_from_the_gate_and_the_store(tmp_path):
    base = tmp_path / "base.db"
    armed_db(base)
    files = {kind: tmp_path / f"{kind}.db" for kind in KINDS}
    for kind, where in files.items():
        make_damaged(base, where, kind)
    before = {kind: digest(p) for kind, p in files.items()}

    proc = subprocess.run([sys.executable, "-c", GATE_SCRIPT, *map(str, files.values())],
                          capture_output=True, text=True, timeout=60, check=True)
    gate = json.loads(proc.stdout)
    prefix = "ESS state unavailable, trading blocked: "
    for kind, where in files.items():
        allowed, reason = gate[str(where)]
        assert not allowed, f"{kind}: the gate allowed trading"
        store_ok, store_reason = asyncio.run(store_verdict(where))
        assert not store_ok, f"{kind}: the store read it as sound"
        assert reason == prefix + store_reason, f"{kind}: gate {reason!r} != store {store_reason!r}"
        # An in-process gate agrees with the one in the other process.
        assert TradeGate(where).check().reason == reason
        assert digest(where) == before[kind], f"{kind}: the file was changed"
        for suffix in ("-wal", "-shm", "-journal"):
            assert not Path(str(where) + suffix).exists(), f"{kind}: left {suffix}"
    assert gate[str(files["zero_bytes"])][1].startswith(prefix + "database is corrupt")
    assert "lacks" in gate[str(files["foreign_lookalike"])][1] or \
        "missing" in gate[str(files["foreign_lookalike"])][1]


def test_a_latched_database_truncated_to_zero_never_becomes_armed(tmp_path):
    db = tmp_path / "ess.db"
    latched_db(db)
    with TradeGate(db) as gate:
        assert not gate.check().allowed
    with open(db, "r+b") as f:
        f.truncate(0)
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    # Every opener: the runner's store (create=True), a looking tool, the seed's get().
    for create in (True, False):
        store = SQLiteStore(db, create=create, audit_key=None)
        with pytest.raises(StoreUnavailable, match="empty"):
            asyncio.run(store.load_state())
        assert store.get("emergency_stop")["active"] is True
        asyncio.run(store.close())
    with TradeGate(db) as gate:
        assert not gate.check().allowed
    assert db.stat().st_size == 0, "the empty file was initialised"
    with pytest.raises(FileExistsError, match="never initialised over"):
        init_database(db)
    assert db.stat().st_size == 0


def test_create_only_where_nothing_exists(tmp_path):
    db = tmp_path / "sub" / "ess.db"
    looker = SQLiteStore(db, create=False, audit_key=None)
    with pytest.raises(StoreUnavailable, match=r"no ESS database at .*ess-tui init"):
        asyncio.run(looker.load_state())
    asyncio.run(looker.close())
    assert not db.exists()
    assert init_database(db) == str(db)
    assert sorted(p.name for p in db.parent.iterdir()) == ["ess.db"]  # no temp file left
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    with TradeGate(db) as gate:
        assert gate.check().allowed
    with pytest.raises(FileExistsError):
        init_database(db)
    # A latch marker or a WAL left beside a missing file: not a place to start afresh.
    other = tmp_path / "other.db"
    Path(str(other) + ".latched").write_text('{"activation": 1, "reason": "x"}')
    with pytest.raises(FileExistsError, match="latch marker"):
        init_database(other)


def _v1_database(path: Path, audit_mode: str) -> None:
    """A database as ess-tui with schema 1 left it (WAL mode, one latch on record)."""
    from ess_tui.store import schema

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        schema._migrate_to_1(conn, audit_mode=audit_mode, now="2025-01-01T00:00:00+00:00")
        conn.execute("PRAGMA user_version = 1")
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL").fetchone()
    finally:
        conn.close()


async def test_a_schema_1_database_is_migrated_forward_not_reinitialised(tmp_path):
    from ess_tui.engine import audit_chain

    db = tmp_path / "ess.db"
    _v1_database(db, audit_chain.MODE_HMAC)
    with TradeGate(db) as gate:  # the gate reads a schema-1 file as it is
        decision = gate.check()
        assert decision.allowed and decision.runner_live is False
    store = SQLiteStore(db, create=False, audit_key=b"k1")
    try:
        await store.latch("halt before the upgrade")
        lease = await store.acquire_lease("runner-a", ttl_sec=5)
        assert (lease.epoch, lease.beat) == (1, 0)
        result = await store.verify_audit()
        assert result.ok and result.keyed, result
    finally:
        await store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    cols = {r[1] for r in conn.execute("PRAGMA table_info(lease)")}
    assert {"epoch", "beat", "ttl_sec"} <= cols
    conn.close()
    with TradeGate(db) as gate:
        assert not gate.check().allowed
