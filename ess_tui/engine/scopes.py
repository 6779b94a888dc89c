"""Graduated levels and scoped latches (issue 15): the value types and the covering rule.

Stdlib only: the trade gate imports this module.

A latch has a *scope* -- the whole desk, one venue, or one strategy tag -- and a *level*:
``reduce_only`` (no flatten; only orders that reduce exposure pass the gate) or ``halt`` (flatten
and block everything in the scope). ``warn`` is not a latch: it is the alert band, as before.
The whole-desk halt is the seed's latch (the ``state`` row); every other latch is a row of its
own, latched durably and audited, and only ever escalates until an audited reset.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from dataclasses import dataclass
from datetime import datetime, timezone

__all__ = ["DESK", "HALT", "LEVELS", "REDUCE_ONLY", "WARN", "Scope", "ScopedLatch",
           "covering", "most_severe", "parse_level", "parse_scope"]

WARN = "warn"
REDUCE_ONLY = "reduce_only"
HALT = "halt"
#: Severity order: a latch only ever moves right until it is reset.
LEVELS = (WARN, REDUCE_ONLY, HALT)
_RANK = {name: i for i, name in enumerate(LEVELS)}
KINDS = ("desk", "venue", "strategy")
#: Longest venue name or strategy tag accepted (it is shown on panels and in the audit).
NAME_LIMIT = 64


@dataclass(frozen=True, order=True)
class Scope:
    """``Scope("desk")``, ``Scope("venue", "okx")`` or ``Scope("strategy", "mm-btc")``."""

    kind: str = "desk"
    value: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"scope kind {self.kind!r}: must be one of {', '.join(KINDS)}")
        if self.kind == "desk" and self.value:
            raise ValueError("the desk scope takes no name")
        if self.kind != "desk" and not self.value:
            raise ValueError(f"a {self.kind} scope needs a name ({self.kind}=NAME)")

    @property
    def is_desk(self) -> bool:
        return self.kind == "desk"

    def covers(self, venue: str | None, strategy: str | None) -> bool:
        """Whether this scope covers a caller trading on ``venue`` for ``strategy``; a caller
        that does not say (None) is covered by every scope of that kind."""
        if self.kind == "desk":
            return True
        if self.kind == "venue":
            return venue is None or venue == self.value
        return strategy is None or strategy == self.value

    def __str__(self) -> str:
        return "desk" if self.kind == "desk" else f"{self.kind}={self.value}"


DESK = Scope()


def parse_scope(text: str | None) -> Scope:
    """``None``/``desk`` -> the desk; ``venue=NAME``; ``strategy=TAG``. ValueError with one
    line for anything else."""
    if text is None or text.strip().lower() == "desk":
        return DESK
    kind, sep, value = text.partition("=")
    kind, value = kind.strip().lower(), value.strip()
    if not sep or kind not in ("venue", "strategy"):
        raise ValueError(f"--scope {text!r}: give venue=NAME or strategy=TAG (or leave it out "
                         "for the whole desk)")
    if not value or len(value) > NAME_LIMIT or not value.isprintable() or any(
            ch.isspace() for ch in value):
        raise ValueError(f"--scope {kind}=...: the name must be 1-{NAME_LIMIT} printable "
                         "characters without spaces")
    return Scope(kind, value)


def parse_level(text: str | None) -> str:
    """``reduce-only``/``reduce_only`` or ``halt`` (the default)."""
    if text is None:
        return HALT
    name = text.strip().lower().replace("-", "_")
    if name not in (REDUCE_ONLY, HALT):
        raise ValueError(f"--level {text!r}: give reduce-only or halt")
    return name


def rank(level: str) -> int:
    return _RANK.get(level, _RANK[HALT])  # an unknown level is treated as the most severe


@dataclass(frozen=True)
class ScopedLatch:
    """One active latch as the store holds it."""

    id: int
    scope: Scope
    level: str
    reason: str
    since: datetime | None
    latched_by: str

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "scope": str(self.scope), "level": self.level.replace("_", "-"),
                "reason": self.reason, "since": self.since.isoformat() if self.since else None,
                "latched_by": self.latched_by}


#: The active latches, as the store and the gate read them.
ACTIVE_SQL = ("SELECT id, scope_kind, scope_value, level, reason, since, latched_by "
              "FROM latches WHERE active = 1 ORDER BY id")


def _time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def latches_from_rows(rows: Iterable[tuple[object, ...]]) -> list[ScopedLatch]:
    """Rows of ACTIVE_SQL as latches; ValueError for a row no ess-tui wrote."""
    found = []
    for r in rows:
        if not isinstance(r[0], int) or r[3] not in (REDUCE_ONLY, HALT):
            raise ValueError(f"latch row {r[0]!r} has level {r[3]!r}")
        found.append(ScopedLatch(r[0], Scope(str(r[1]), str(r[2] or "")), str(r[3]),
                                 str(r[4]), _time(r[5]), str(r[6])))
    return found


def replay_latches(rows: Iterable[Any]) -> dict[int, str]:
    """The active scoped latches an audit trail describes: {latch id: level} after its last row
    (``scope_latch``/``scope_escalate`` set, ``scope_reset`` clears)."""
    live: dict[int, str] = {}
    for row in rows:
        lid = row.details.get("latch_id") if isinstance(row.details, dict) else None
        if type(lid) is not int:
            continue
        if row.action in ("scope_latch", "scope_escalate"):
            live[lid] = str(row.details.get("level"))
        elif row.action == "scope_reset":
            live.pop(lid, None)
    return live


def covering(latches: Iterable[ScopedLatch], venue: str | None,
             strategy: str | None) -> list[ScopedLatch]:
    return [latch for latch in latches if latch.scope.covers(venue, strategy)]


def most_severe(latches: Iterable[ScopedLatch]) -> ScopedLatch | None:
    """The most severe latch; of equals, the widest scope (desk, venue, strategy) then oldest."""
    best: ScopedLatch | None = None
    for latch in latches:
        if best is None or (rank(latch.level), -KINDS.index(latch.scope.kind), -latch.id) > (
                rank(best.level), -KINDS.index(best.scope.kind), -best.id):
            best = latch
    return best
