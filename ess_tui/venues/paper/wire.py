"""The wire between a caller and the paper exchange: latency, rate limit, injected faults, call log.

Every venue call of :class:`~ess_tui.venues.paper.exchange.PaperExchange` goes through :meth:`PaperWire.send`:
it waits for a rate-limit token (FIFO, like ccxt's throttler), records the call, spends half the
round-trip latency going out, rolls the injected faults, runs the venue-side action, and spends the
other half coming back. Sleeping and the monotonic clock are injectable so tests can run on fake time.

Faults are drawn from their own seeded RNG, so the same :class:`FaultConfig` gives the same sequence
of failures, and turning faults on does not change the simulated prices.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from ess_tui.engine.venue import (
    VenueError,
    VenueRateLimited,
    VenueTimeout,
    VenueUnavailable,
)

T = TypeVar("T")

#: One entry of the call log: (monotonic time the request left, method name, its arguments).
CallRecord = tuple[float, str, dict[str, Any]]

Sleep = Callable[[float], Awaitable[None]]

#: Calls that can change the book: the opt-in call log file records these.
BOOK_CHANGING_CALLS = frozenset({"cancel_all_orders", "cancel_order", "close_position", "place_order"})


@dataclass
class FaultConfig:
    """How badly the paper venue misbehaves. Rates are probabilities per call (or per order).

    ``timeout_rate``, ``rate_limit_rate`` and ``server_error_rate`` fail a whole call with
    VenueTimeout, VenueRateLimited or VenueUnavailable (the request has no effect).
    ``reject_cancel_rate`` rejects single cancels (that order stays open); ``partial_fill_rate``
    fills only part of a market order (the rest is cancelled). ``down`` fails every call.
    Mutable on purpose: a drill may flip ``down`` while the venue runs.
    """

    timeout_rate: float = 0.0
    rate_limit_rate: float = 0.0
    server_error_rate: float = 0.0
    reject_cancel_rate: float = 0.0
    partial_fill_rate: float = 0.0
    seed: int = 0
    down: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the bad field if a rate is not a probability."""
        for f in fields(self):
            if not f.name.endswith("_rate"):
                continue
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 <= value <= 1.0:
                raise ValueError(
                    f"FaultConfig.{f.name} must be a probability between 0 and 1, got {value!r}"
                )
        call_failures = self.timeout_rate + self.rate_limit_rate + self.server_error_rate
        if call_failures > 1.0 + 1e-12:
            raise ValueError(
                "FaultConfig: timeout_rate + rate_limit_rate + server_error_rate must not exceed 1 "
                f"(got {call_failures:g})"
            )


class TokenBucket:
    """Requests-per-second limiter: callers wait, first come first served, for a token.

    Holds at most ``burst`` tokens and refills at ``rate`` per second; it starts full, so the first
    ``burst`` calls go at once and later ones are spaced ``1 / rate`` seconds apart.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        monotonic: Callable[[], float],
        sleep: Sleep,
    ) -> None:
        if not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"rate limit must be a positive number of requests per second, got {rate!r}")
        if int(burst) < 1:
            raise ValueError(f"rate limit burst must be at least 1, got {burst!r}")
        self.rate = float(rate)
        self.burst = int(burst)
        self._monotonic = monotonic
        self._sleep = sleep
        self._tokens = float(self.burst)
        self._last: float | None = None
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._monotonic()
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now

    async def acquire(self) -> float:
        """Wait for a token; return how long this caller waited (seconds)."""
        waited = 0.0
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1.0 - 1e-9:
                    self._tokens -= 1.0
                    return waited
                wait = (1.0 - self._tokens) / self.rate
                await self._sleep(wait)
                waited += wait


class PaperWire:
    """Latency, rate limiting, fault injection and the call log for one paper venue."""

    def __init__(
        self,
        *,
        venue: str,
        latency_ms: float,
        rate_limit: float | None,
        rate_limit_burst: int,
        faults: FaultConfig | None,
        monotonic: Callable[[], float],
        sleep: Sleep,
        call_log_limit: int | None,
    ) -> None:
        if not isinstance(latency_ms, (int, float)) or not math.isfinite(latency_ms) or latency_ms < 0:
            raise ValueError(f"latency_ms must be a number >= 0, got {latency_ms!r}")
        self.venue = venue
        self.latency_ms = float(latency_ms)
        self.monotonic = monotonic
        self.sleep = sleep
        self.bucket = (
            TokenBucket(rate_limit, rate_limit_burst, monotonic=monotonic, sleep=sleep)
            if rate_limit is not None
            else None
        )
        self.calls: list[CallRecord] = []
        self.round_trips = 0
        self.call_log_limit = call_log_limit
        #: Opt-in (``[paper] call_log``): one JSON line per book-changing call, as it leaves.
        self.call_log_path: str | os.PathLike[str] | None = None
        self.faults = FaultConfig()
        self._rng = random.Random(0)
        self.set_faults(faults or FaultConfig())

    def set_faults(self, faults: FaultConfig) -> None:
        """Install a fault configuration and restart its RNG from ``faults.seed``."""
        faults.validate()
        self.faults = faults
        self._rng = random.Random(faults.seed)

    def chance(self, rate: float) -> bool:
        """True with probability ``rate`` (draws nothing when the rate is 0, keeping runs stable)."""
        return rate > 0.0 and self._rng.random() < rate

    def uniform(self, low: float, high: float) -> float:
        return self._rng.uniform(low, high)

    def _log(self, method: str, args: dict[str, Any]) -> None:
        self.round_trips += 1
        self.calls.append((self.monotonic(), method, args))
        limit = self.call_log_limit
        if limit is not None and len(self.calls) > limit:
            del self.calls[: len(self.calls) - limit]
        if self.call_log_path is not None and method in BOOK_CHANGING_CALLS:
            self._append_call(method, args)

    def _append_call(self, method: str, args: dict[str, Any]) -> None:
        """One line, written with a single O_APPEND write: it survives the process being killed,
        and the times (system-wide CLOCK_MONOTONIC and wall) compare with other processes'."""
        line = json.dumps({"mono": time.monotonic(), "wall": time.time(), "pid": os.getpid(),
                           "venue": self.venue, "method": method, "args": args}, default=str)
        fd = os.open(self.call_log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def _raise_injected(self, method: str) -> None:
        f = self.faults
        where = f"{self.venue} venue, {method}"
        if f.down:
            raise VenueUnavailable(
                f"{where}: the venue is down (fault injection down=True); every call fails until "
                "faults.down is set back to False",
                venue=self.venue,
                call=method,
            )
        total = f.timeout_rate + f.rate_limit_rate + f.server_error_rate
        if total <= 0.0:
            return
        u = self._rng.random()
        if u < f.timeout_rate:
            raise VenueTimeout(
                f"{where}: request timed out (simulated, timeout_rate={f.timeout_rate:g}); "
                "re-fetch to see what happened, then retry",
                venue=self.venue,
                call=method,
            )
        if u < f.timeout_rate + f.rate_limit_rate:
            raise VenueRateLimited(
                f"{where}: 429 Too Many Requests (simulated, rate_limit_rate={f.rate_limit_rate:g}); "
                "back off and retry",
                venue=self.venue,
                call=method,
            )
        if u < total:
            raise VenueUnavailable(
                f"{where}: 503 Service Unavailable (simulated, server_error_rate="
                f"{f.server_error_rate:g}); retry with backoff",
                venue=self.venue,
                call=method,
            )

    async def send(self, method: str, args: dict[str, Any], action: Callable[[], T]) -> T:
        """One round trip: token, log, half latency, faults, ``action()``, half latency."""
        if self.bucket is not None:
            await self.bucket.acquire()
        self._log(method, args)
        half = self.latency_ms / 2000.0
        if half > 0:
            await self.sleep(half)
        try:
            self._raise_injected(method)
            result = action()
        except VenueError:
            if half > 0:
                await self.sleep(half)
            raise
        if half > 0:
            await self.sleep(half)
        return result
