"""Venues the ESS flattens: ``paper`` (the embedded default) and ``ccxt`` (real exchanges, lazily)."""
