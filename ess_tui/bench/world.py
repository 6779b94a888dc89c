"""What every scenario shares: the run context, settings for a throwaway paper world, books of any size.

The benchmark never opens the configured database: it works in a fresh directory beside it (so
fsync is measured on the same disk) and removes it afterwards. Every scenario runs on the paper
venue, whatever venue the configuration names.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ess_tui.config import PaperSettings, Settings, VenueSettings

#: Round trip of one simulated venue call in the flatten scenarios (the issue's 20 ms).
VENUE_LATENCY_MS = 20.0


@dataclass
class BenchContext:
    """Passed to every scenario."""

    quick: bool
    workdir: Path
    python: str = sys.executable
    progress: Any = None  # callable(str) -> None
    _count: int = field(default=0, repr=False)

    def say(self, text: str) -> None:
        if self.progress is not None:
            self.progress(text)

    def path(self, stem: str, suffix: str = ".db") -> Path:
        """A fresh file name in the bench directory."""
        self._count += 1
        return self.workdir / f"{stem}-{self._count}{suffix}"

    def child_env(self) -> dict[str, str]:
        """Environment for child processes: no ``QT_ESS_*`` settings, and config/state directories
        inside the bench directory, so neither the user's ess.toml nor their state is read or
        written (children also run with the bench directory as their working directory)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("QT_ESS_")}
        for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
            env[var] = str(self.workdir / "xdg" / var.lower())
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env


def bench_settings(db: Path, *, check_interval: float = 0.1, latency_ms: float = 0.0,
                   drift: bool = True, rate_limit: float | None = None) -> Settings:
    """Settings for a paper world on ``db``: explicit values only, nothing read from ess.toml."""
    return Settings(
        db=db,
        check_interval=check_interval,
        log_file=db.with_suffix(".log"),
        venue=VenueSettings(kind="paper"),
        paper=PaperSettings(latency_ms=latency_ms, drift=drift, rate_limit=rate_limit),
    )


def symbols(count: int) -> dict[str, float]:
    """``count`` made-up USDT pairs with distinct prices."""
    return {f"B{i:04d}/USDT": 10.0 + i for i in range(count)}


def build_book(positions: int, orders: int, *, latency_ms: float = VENUE_LATENCY_MS,
               rate_limit: float | None = None) -> Any:
    """A paper venue holding ``positions`` positions (one per symbol, long and short alternating)
    and ``orders`` resting orders spread over them: entries far from the market (never fill) and
    protective reduce-only stops. No price drift: the book stays as built until flattened."""
    from ess_tui.venues.paper.exchange import PaperExchange

    prices = symbols(max(positions, 1))
    venue = PaperExchange(
        name="paper-bench", prices=prices, volatility=0.0, latency_ms=latency_ms,
        rate_limit=rate_limit, call_log_limit=1000,
    )
    names = list(prices)
    for i in range(positions):
        venue.seed_position(names[i], "long" if i % 2 == 0 else "short", 1.0 + i % 7)
    for j in range(orders):
        symbol = names[j % len(names)]
        mid = prices[symbol]
        long = (j % len(names)) % 2 == 0
        if positions and j % 4 == 3:
            # a protective stop on the position's closing side
            side, price = ("sell", mid * 0.5) if long else ("buy", mid * 1.5)
            venue.seed_order(symbol, side, 0.5, "stop", price, True)
        else:
            venue.seed_order(symbol, "buy", 1.0, "limit", mid * 0.5, False)
    return venue


class WorkerFailed(RuntimeError):
    """A benchmark child process failed; the message carries its last words."""


def run_worker(ctx: BenchContext, *args: str, timeout: float) -> dict[str, Any]:
    """Run ``python -m ess_tui.bench.worker ARGS`` and return the JSON it printed."""
    import json
    import subprocess

    cmd = [ctx.python, "-m", "ess_tui.bench.worker", *args]
    try:
        done = subprocess.run(cmd, cwd=ctx.workdir, env=ctx.child_env(), capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise WorkerFailed(f"benchmark worker {args[0]} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise WorkerFailed(f"benchmark worker {args[0]} exited {done.returncode}: {last}")
    try:
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError) as exc:
        raise WorkerFailed(f"benchmark worker {args[0]} printed no JSON: {exc}") from None
