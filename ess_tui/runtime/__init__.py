"""The runtime: one running ESS assembled from Settings — store, venues, sources, evaluators, runner.

Rooms: ``assembly`` (:class:`Runtime`), ``ccxt_world`` (the sources of a real venue). The headless
runner and the control room each build one. May import every lower room (engine, store, market,
venues); nothing below imports it.
"""

from __future__ import annotations

from ess_tui.runtime.assembly import DRILLS, Runtime, VenueSnapshot

__all__ = ["DRILLS", "Runtime", "VenueSnapshot"]
