"""The embedded-default world: four USDT pairs, a mixed long/short book, resting and protective orders.

``PaperExchange.demo()`` builds it. The book is about 1.9x levered on 100,000 USDT, so the drills
bite: ``drill_crash(10)`` costs roughly 18% of equity (past the default -10% daily-loss limit) and
gaps through every protective stop, which then count as stop-loss hits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

#: The exchange type being built (``PaperExchange``); kept generic so this module imports nothing
#: from the exchange, which imports it.
E = TypeVar("E")

#: Starting mid prices (USDT) of the paper market.
DEFAULT_PRICES: dict[str, float] = {
    "BTC/USDT": 97_000.0,
    "ETH/USDT": 3_400.0,
    "SOL/USDT": 180.0,
    "XRP/USDT": 2.40,
}

#: Standard deviation of the log return per square-root second: enough for PnL to move on the
#: gauges minute by minute (about 250 USDT a minute on this book), not enough to empty it in an hour.
DEMO_VOLATILITY: dict[str, float] = {
    "BTC/USDT": 0.0003,
    "ETH/USDT": 0.0004,
    "SOL/USDT": 0.0006,
    "XRP/USDT": 0.0005,
}

#: (symbol, side, amount, entry price)
DEMO_POSITIONS: tuple[tuple[str, str, float, float], ...] = (
    ("BTC/USDT", "long", 0.8, 95_400.0),
    ("ETH/USDT", "short", 12.0, 3_455.0),
    ("SOL/USDT", "long", 150.0, 172.5),
    ("XRP/USDT", "short", 20_000.0, 2.46),
)

#: (symbol, side, amount, kind, price, reduce_only): protective stops, take-profits, an entry.
DEMO_ORDERS: tuple[tuple[str, str, float, str, float, bool], ...] = (
    ("BTC/USDT", "sell", 0.8, "stop", 91_000.0, True),
    ("BTC/USDT", "buy", 0.2, "limit", 94_000.0, False),
    ("ETH/USDT", "buy", 12.0, "stop", 3_650.0, True),
    ("ETH/USDT", "buy", 6.0, "limit", 3_200.0, True),
    ("SOL/USDT", "sell", 150.0, "stop", 163.0, True),
    ("SOL/USDT", "sell", 75.0, "limit", 198.0, True),
    ("XRP/USDT", "buy", 20_000.0, "stop", 2.62, True),
)


def build_demo(cls: Callable[..., E], *, seed: int = 0, **overrides: Any) -> E:
    """A PaperExchange holding the demo book; ``overrides`` go to the constructor."""
    options: dict[str, Any] = {
        "name": "paper",
        "prices": DEFAULT_PRICES,
        "volatility": DEMO_VOLATILITY,
        "starting_cash": 100_000.0,
        "latency_ms": 20.0,
        "seed": seed,
    }
    options.update(overrides)
    exchange = cls(**options)
    for symbol, side, amount, entry in DEMO_POSITIONS:
        exchange.seed_position(symbol, side, amount, entry)  # type: ignore[attr-defined]
    for symbol, side, amount, kind, price, reduce_only in DEMO_ORDERS:
        exchange.seed_order(symbol, side, amount, kind, price, reduce_only)  # type: ignore[attr-defined]
    return exchange
