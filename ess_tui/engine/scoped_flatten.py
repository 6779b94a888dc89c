"""Acting on scoped halts (issue 15): flatten what a venue or strategy latch covers, only that.

- ``venue=NAME``: the venue whose ``name`` is NAME has every order cancelled and every position
  closed (reduce-only, by the venue's ``close_all_positions`` contract); another venue is left
  alone (the gate keeps it open).
- ``strategy=TAG``: only what the venue tags as TAG's -- orders whose ``client_order_id`` is TAG or
  starts with ``TAG-``, positions whose ``strategy`` is TAG. A venue that cannot tell strategies
  apart (``tags_orders`` / ``tags_positions`` not True) gets nothing flattened for that part, and
  the report says so plainly: the gate still blocks the strategy's new orders.
- ``reduce_only`` latches flatten nothing.

The acting runner calls :meth:`ScopeActor.act` once per cycle while the desk is not halted; each
pass is idempotent (it only touches what is still there) and is audited when it did something or
first met the latch (``scope_flattened``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ess_tui.engine.scopes import HALT, ScopedLatch

log = logging.getLogger("ess_tui.engine.scoped_flatten")


@dataclass
class ScopeReport:
    latch_id: int
    scope: str
    canceled: int = 0
    closed: int = 0
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_details(self) -> dict[str, Any]:
        return {"latch_id": self.latch_id, "scope": self.scope, "canceled": self.canceled,
                "closed": self.closed, "notes": list(self.notes), "errors": list(self.errors)}


def tagged(client_order_id: object, tag: str) -> bool:
    return isinstance(client_order_id, str) and (
        client_order_id == tag or client_order_id.startswith(tag + "-"))


async def flatten_scope(venue: Any, latch: ScopedLatch) -> ScopeReport:
    """One pass of flattening what ``latch`` covers on ``venue``."""
    report = ScopeReport(latch.id, str(latch.scope))
    if latch.level != HALT:
        report.notes.append("reduce-only: nothing is flattened; the gate lets only reducing "
                            "orders through")
        return report
    kind, value = latch.scope.kind, latch.scope.value
    name = str(getattr(venue, "name", "") or "")
    try:
        if kind == "venue":
            if value != name:
                report.notes.append(f"not this venue ({name!r}): nothing flattened here")
                return report
            report.canceled = int(await venue.cancel_all_orders() or 0)
            report.closed = int(await venue.close_all_positions() or 0)
        elif kind == "strategy":
            await _flatten_strategy(venue, value, report)
        else:  # the desk: the desk's halt is the controller's flatten, not this
            report.notes.append("desk scope: flattened by the ESS latch, not here")
    except Exception as exc:  # noqa: BLE001 - reported and retried next cycle
        report.errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
    return report


async def _flatten_strategy(venue: Any, tag: str, report: ScopeReport) -> None:
    if getattr(venue, "tags_orders", False) is True and hasattr(venue, "cancel_order"):
        for order in await venue.fetch_open_orders():
            if tagged(getattr(order, "client_order_id", None), tag):
                await venue.cancel_order(order.id)
                report.canceled += 1
    else:
        report.notes.append("this venue cannot tell strategies' orders apart: new orders are "
                            "blocked by the gate, no order was cancelled")
    if getattr(venue, "tags_positions", False) is True:
        for position in await venue.fetch_positions():
            if getattr(position, "strategy", None) == tag:
                await venue.close_position(position)  # reduce-only by the venue contract
                report.closed += 1
    else:
        report.notes.append("this venue nets positions across strategies: no position was "
                            "closed for the strategy (close it by hand, or halt the venue)")


class ScopeActor:
    """Acts on the store's scoped halts for one venue; remembers which latches it has audited."""

    def __init__(self, store: Any, venue: Any, *, actor: str = "ess") -> None:
        self.store = store
        self.venue = venue
        self.actor = actor
        self._seen: set[tuple[int, str]] = set()
        self.last: list[ScopeReport] = []

    async def act(self) -> list[ScopeReport]:
        reader = getattr(self.store, "active_latches", None)
        if reader is None or self.venue is None:
            return []
        reports = []
        for latch in await reader():
            if latch.level != HALT:
                continue
            report = await flatten_scope(self.venue, latch)
            reports.append(report)
            first = (latch.id, latch.level) not in self._seen
            if first or report.canceled or report.closed or report.errors:
                await self.store.audit("scope_flattened" if not report.errors else
                                       "scope_flatten_failed", actor=self.actor,
                                       reason=latch.reason, details=report.to_details())
                self._seen.add((latch.id, latch.level))
        self.last = reports
        return reports
