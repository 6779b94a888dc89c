"""Real venues through ccxt. Nothing here is imported unless a venue of kind ``ccxt`` is configured.

Rooms: ``config`` (the venue's settings and credentials from the environment), ``profiles`` (what
each exchange needs: books to cancel, modes, hosts), ``venue`` (the :class:`~ess_tui.engine.venue.Venue`
on a ccxt exchange), ``errors`` (ccxt errors mapped to venue errors, secrets redacted), ``deadman``
(the venue-side cancel-on-disconnect timer), ``feed`` (tickers), ``account`` (equity and PnL).
"""
