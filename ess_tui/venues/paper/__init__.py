"""The paper exchange, ess-tui's embedded default venue: an in-memory book, market and wire.

Rooms: ``exchange`` (the :class:`PaperExchange` venue), ``book`` (positions, orders, matching, the
reduce-only rule), ``market`` (prices and feed), ``wire`` (latency, rate limit, faults, call log),
``demo`` (the default world's data). Imports neither ccxt nor Textual.
"""

from __future__ import annotations

from ess_tui.venues.paper.exchange import (
    DEFAULT_PRICES,
    GARBAGE_KINDS,
    CallRecord,
    FaultConfig,
    Fill,
    OrderAck,
    PaperExchange,
    PaperSnapshot,
    Tick,
)

__all__ = [
    "DEFAULT_PRICES",
    "GARBAGE_KINDS",
    "CallRecord",
    "FaultConfig",
    "Fill",
    "OrderAck",
    "PaperExchange",
    "PaperSnapshot",
    "Tick",
]
