"""The runtime: one running ESS assembled from Settings — store, venues, sources, evaluators, runner.

Rooms: ``assembly`` (:class:`Runtime`), ``panel`` (:class:`VenueSnapshot`, what the venue panel
draws), ``book`` (the book poller), ``drills`` (the one table of drills), ``ccxt_world`` (the
sources of a real venue). The headless
runner and the control room each build one. May import every lower room (engine, store, market,
venues); nothing below imports it.
"""

from __future__ import annotations

from ess_tui.runtime.assembly import Runtime
from ess_tui.runtime.drills import DRILLS
from ess_tui.runtime.panel import VenueSnapshot

__all__ = ["DRILLS", "Runtime", "VenueSnapshot"]
