"""The venue panel's data: the book as last read, and what flattening did. One type, used by the
runtime (which fills it) and the control room (which draws it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ess_tui.engine.state import FlattenReport
from ess_tui.engine.venue import Order, Position


def unrealised_pnl(position: Position) -> float | None:
    """Mark-to-market PnL of one position, or None when the venue gave no entry or mark price."""
    if not position.entry_price or not position.mark_price:
        return None
    sign = 1.0 if position.side == "long" else -1.0
    return sign * (position.mark_price - position.entry_price) * abs(position.amount)


@dataclass(frozen=True)
class VenueSnapshot:
    """What the venue panel draws: the book as last read, and what flattening did."""

    venue: str
    positions: tuple[Position, ...] = ()
    orders: tuple[Order, ...] = ()
    equity: float | None = None
    taken_at: datetime | None = None
    error: str | None = None
    report: FlattenReport | None = None
    flattening: bool = False
    dead_man: dict[str, Any] = field(default_factory=dict)

    @property
    def flat(self) -> bool | None:
        """True with nothing open, False with something open, None when the read failed."""
        if self.error is not None:
            return None
        return not self.positions and not self.orders

    @property
    def unrealised_pnl(self) -> float | None:
        """Sum over the positions whose PnL is known (None with no position priced)."""
        values = [v for v in (unrealised_pnl(p) for p in self.positions) if v is not None]
        return sum(values) if values else None
