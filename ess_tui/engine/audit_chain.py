"""The audit trail's hash chain: safe details, row hashes, and walking the chain to verify it.

Each row's hash covers the previous row's hash and a canonical JSON of the row
``(seq, at, action, actor, reason, details)``. With ``QT_ESS_AUDIT_KEY`` set when the trail is
created, the hash is an HMAC-SHA256 under that key, so that someone with write access to the file
but not the key cannot rewrite history and re-hash it. The key itself is never stored.

No I/O here: the SQLite store and the in-memory seed adapter share it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from typing import Any

from ess_tui.engine.store import AuditVerification
from ess_tui.engine.text import clean_text

#: ``prev_hash`` of the first row.
GENESIS_HASH = "0" * 64

MODE_SHA256 = "sha256"
MODE_HMAC = "hmac-sha256"

#: Environment variable holding the audit key (HMAC mode).
AUDIT_KEY_ENV = "QT_ESS_AUDIT_KEY"

#: Largest serialised ``details`` kept whole; bigger ones are replaced by a preview.
MAX_DETAILS_CHARS = 16_000
_MAX_STRING = 2_000
_MAX_ITEMS = 200
_MAX_DEPTH = 8

#: Keys whose values never reach the audit trail.
_SECRET_HINTS = ("secret", "password", "passwd", "passphrase", "api_key", "apikey", "token",
                 "private_key", "privatekey", "credential")


def audit_key_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The HMAC key from ``QT_ESS_AUDIT_KEY``, or None when unset or empty."""
    value = (os.environ if environ is None else environ).get(AUDIT_KEY_ENV, "")
    return value.encode("utf-8") if value else None


def _is_secret_key(key: str) -> bool:
    lowered = key.lower().replace("-", "_")
    return any(hint in lowered for hint in _SECRET_HINTS)


def _jsonable(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return clean_text(value, limit=_MAX_STRING)
    if isinstance(value, Enum):
        return _jsonable(value.value, depth + 1)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if depth >= _MAX_DEPTH:
        return clean_text(_safe_str(value), limit=200)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= _MAX_ITEMS:
                out["…"] = f"{len(value) - _MAX_ITEMS} more entries left out"
                break
            name = clean_text(_safe_str(k), limit=200)
            out[name] = "***" if _is_secret_key(name) else _jsonable(v, depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        out_list = [_jsonable(v, depth + 1) for v in items[:_MAX_ITEMS]]
        if len(items) > _MAX_ITEMS:
            out_list.append(f"… {len(items) - _MAX_ITEMS} more items left out")
        return out_list
    return clean_text(_safe_str(value), limit=_MAX_STRING)


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the audit row
        return f"<unprintable {type(value).__name__}>"


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def safe_details(
    details: Mapping[str, Any] | None, *, limit: int = MAX_DETAILS_CHARS
) -> dict[str, Any]:
    """``details`` made storable: JSON-only values, cleaned text, secrets masked, size bounded."""
    if not details:
        return {}
    try:
        value: dict[str, Any] = _jsonable(dict(details))
        text = canonical_json(value)
    except Exception as exc:  # noqa: BLE001 - never lose the audit row over its details
        return {"unserialisable": clean_text(f"{type(exc).__name__}: {exc}", limit=500)}
    if len(text) > limit:
        return {"truncated": True, "size": len(text), "preview": text[: min(2_000, limit // 2)]}
    return value


def compute_hash(
    prev_hash: str, seq: int, at: str, action: str, actor: str, reason: str | None,
    details: Mapping[str, Any], *, key: bytes | None = None,
) -> str:
    """The row hash: SHA-256, or HMAC-SHA256 under ``key``, of prev_hash + canonical row JSON."""
    payload = canonical_json(
        {"seq": seq, "at": at, "action": action, "actor": actor, "reason": reason,
         "details": details}
    )
    message = (prev_hash + payload).encode("utf-8")
    if key is not None:
        return hmac.new(key, message, hashlib.sha256).hexdigest()
    return hashlib.sha256(message).hexdigest()


@dataclass(frozen=True)
class ChainRow:
    """An audit row as stored: ``at`` is the stored ISO text, ``details`` the parsed JSON."""

    seq: int
    at: str
    action: str
    actor: str
    reason: str | None
    details: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS_HASH
    hash: str = ""


def next_row(
    last: tuple[int, str] | None, *, at: datetime, action: str, actor: str,
    reason: str | None, details: Mapping[str, Any] | None, key: bytes | None,
) -> ChainRow:
    """Build the row that follows ``last`` (``(seq, hash)`` of the newest row, None if empty).

    Texts are cleaned and bounded; ``at`` is stored as ISO UTC with microseconds."""
    from ess_tui.engine.text import as_utc

    seq = (last[0] + 1) if last else 1
    prev = last[1] if last else GENESIS_HASH
    at_text = as_utc(at).isoformat(timespec="microseconds")
    action = clean_text(action, limit=100) or "unknown"
    actor = clean_text(actor, limit=200) or "unknown"
    reason = clean_text(reason) if reason is not None else None
    clean = safe_details(details)
    digest = compute_hash(prev, seq, at_text, action, actor, reason, clean, key=key)
    return ChainRow(seq, at_text, action, actor, reason, clean, prev, digest)


def verify_chain(
    rows: Iterable[ChainRow], *, mode: str = MODE_SHA256, key: bytes | None = None,
    head_seq: int | None = None,
) -> AuditVerification:
    """Walk the rows in seq order and name the first one that was removed, inserted or altered.

    ``head_seq`` is the newest seq the store recorded writing; rows missing after it or beyond it
    are reported too. In HMAC mode without a key the links are still checked, but the trail
    cannot be called verified.
    """
    keyed = mode == MODE_HMAC
    count = 0
    expected_seq = 1
    prev_hash = GENESIS_HASH
    for row in rows:
        count += 1
        if row.seq != expected_seq:
            return AuditVerification(
                False, count, expected_seq,
                f"row {expected_seq} is missing: the trail jumps from {expected_seq - 1} to "
                f"{row.seq} (rows were removed)",
            )
        if row.prev_hash != prev_hash:
            return AuditVerification(
                False, count, row.seq,
                f"row {row.seq} does not link to row {row.seq - 1} (prev_hash mismatch): a row was "
                "inserted or the one before it rewritten",
            )
        args = (row.prev_hash, row.seq, row.at, row.action, row.actor, row.reason, row.details)
        if keyed:
            if key is not None and compute_hash(*args, key=key) != row.hash:
                if compute_hash(*args) == row.hash:
                    problem = (f"row {row.seq} was written without the audit key "
                               f"({AUDIT_KEY_ENV} unset at the time) and cannot be trusted")
                elif row.seq == 1:
                    problem = (f"row 1 does not match its hash: {AUDIT_KEY_ENV} is not the key "
                               "this trail was written with, or the row was altered")
                else:
                    problem = f"row {row.seq} was altered (its hash does not match its content)"
                return AuditVerification(False, count, row.seq, problem)
        elif compute_hash(*args) != row.hash:
            return AuditVerification(
                False, count, row.seq,
                f"row {row.seq} was altered (its hash does not match its content)",
            )
        prev_hash = row.hash
        expected_seq += 1
    last_seq = expected_seq - 1
    if head_seq is not None and head_seq > last_seq:
        return AuditVerification(
            False, count, last_seq + 1,
            f"rows {last_seq + 1}..{head_seq} are missing from the end of the trail (removed)",
        )
    if head_seq is not None and head_seq < last_seq:
        return AuditVerification(
            False, count, head_seq + 1,
            f"row {head_seq + 1} was not written by ess-tui (inserted after the recorded head)",
        )
    if keyed and key is None:
        return AuditVerification(
            False, count, None,
            f"the audit trail is keyed (HMAC-SHA256): set {AUDIT_KEY_ENV} to verify it "
            "(the links between rows are intact)",
        )
    return AuditVerification(True, count)


def head_mac(key: bytes, seq: int, digest: str) -> str:
    """The keyed head: an HMAC of the newest row's seq and hash, kept beside the trail and
    moved in the same transaction as every append. Without the key, removing rows from the end
    (or rewriting the trail unkeyed) cannot produce a matching head."""
    message = f"ess-tui audit head|{MODE_HMAC}|{int(seq)}|{digest}".encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def compare_state(state: tuple[Any, ...] | None,
                  replayed: tuple[bool, int, str | None]) -> tuple[bool | None, str | None]:
    """Does the state row ``(active, activation_count, reason)`` agree with the replayed trail?
    (matches, the problem naming a hand-edited state row)."""
    if state is None:
        return None, "the ESS state row is missing"
    active, count, reason = bool(state[0] == 1), state[1], state[2]
    want_active, want_count, want_reason = replayed
    if (active, count) == (want_active, want_count) and (not active or reason == want_reason):
        return True, None

    def say(a: bool, n: Any, r: Any) -> str:
        return f"latched #{n} ({str(r)[:80]!r})" if a else f"armed after #{n}"

    return False, (f"the state row was edited by hand: it says {say(active, count, reason)}, "
                   f"but the audit trail replays to {say(want_active, want_count, want_reason)}")


def replay(rows: Iterable[ChainRow]) -> tuple[bool, int, str | None]:
    """The latch the trail describes: (active, activation_count, reason) after its last row."""
    active, count, reason = False, 0, None
    for row in rows:
        if row.action == "activate":
            stated = row.details.get("activation_count")
            count = stated if type(stated) is int and stated > count else count + 1
            active, reason = True, row.reason
        elif row.action == "reset":
            active, reason = False, None
    return active, count, reason


def chain_row(raw: tuple[Any, ...]) -> ChainRow:
    """A row as a database returns it (seq, at, action, actor, reason, details JSON, prev_hash,
    hash) as a :class:`ChainRow`; details that are not a JSON object are kept as ``unreadable``."""
    seq, at, action, actor, reason, details, prev_hash, digest = raw
    try:
        parsed = json.loads(details)
        if not isinstance(parsed, dict):
            parsed = {"unreadable": str(details)[:200]}
    except (TypeError, ValueError):
        parsed = {"unreadable": str(details)[:200]}
    return ChainRow(int(seq), str(at), str(action), str(actor), reason, parsed,
                    str(prev_hash), str(digest))


def with_details(details: Mapping[str, Any] | Any | None, **ours: Any) -> dict[str, Any]:
    """The caller's details with ours on top (ours win on a name clash)."""
    if details is None:
        base: dict[str, Any] = {}
    elif isinstance(details, Mapping):
        base = dict(details)
    else:
        base = {"details": details}
    base.update(ours)
    return base
