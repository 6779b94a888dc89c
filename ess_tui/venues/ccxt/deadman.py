"""The exchange-side dead-man switch: if the ESS dies, the exchange cancels the orders itself.

While the ESS runs, a countdown is kept armed on the exchange and re-armed every third of its
timeout, so one or two missed re-arms still leave it armed; if the ESS process, host or network
dies, the countdown runs out and the exchange cancels every open order. A clean shutdown disarms it.

Two mechanisms are used, chosen by :mod:`ess_tui.venues.ccxt.profiles`:

* ``cancel_all_after`` — ccxt's ``cancel_all_orders_after(ms)`` (OKX: account-wide; 0 disarms);
* ``countdown`` — Binance futures' ``countdownCancelAll`` (per symbol; 0 disarms), which ccxt
  exposes only as an implicit endpoint.

A heartbeat never delays an emergency order: the per-symbol countdown calls go one at a time and
at zero cost in ccxt's rate limiter (they take no tokens from the orders queued behind them), and a
re-arm steps aside while the venue is cancelling or closing (``busy``); if a flatten outlasts the
countdown, the exchange cancels the resting orders — which is what the flatten is doing anyway.
Orders on symbols a per-symbol countdown does not cover are named in :meth:`status`.

``armed`` is true only while the last successful arm has not yet run out: what the venue panel
shows is what the exchange will do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from ess_tui.engine.state import utcnow
from ess_tui.engine.venue import VenueError

log = logging.getLogger(__name__)

__all__ = ["DeadManSwitch"]

Caller = Callable[..., Awaitable[Any]]


class DeadManSwitch:
    """Arms, re-arms and disarms one exchange's cancel-all countdown."""

    def __init__(
        self,
        *,
        mechanism: str | None,
        timeout_sec: float,
        call: Caller,
        market_ids: Callable[[], list[str]],
        exchange_id: str,
        note: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        busy: Callable[[], bool] = lambda: False,
        open_order_symbols: Callable[[], list[str]] = list,
    ) -> None:
        self.mechanism = mechanism
        self.timeout_sec = timeout_sec
        self.note = note
        self._call = call
        self._market_ids = market_ids
        self._exchange_id = exchange_id
        self._clock = clock
        self._busy = busy
        self._open_order_symbols = open_order_symbols
        self.deferred = 0  # re-arms that stepped aside for an emergency
        self._expires_at: datetime | None = None
        self._task: asyncio.Task[None] | None = None
        self._arming: asyncio.Future[bool] | None = None
        self.last_error: str | None = None
        self.arm_count = 0

    @property
    def supported(self) -> bool:
        return self.mechanism is not None

    @property
    def armed(self) -> bool:
        return self._expires_at is not None and self._clock() < self._expires_at

    @property
    def expires_at(self) -> datetime | None:
        return self._expires_at if self.armed else None

    @property
    def rearm_interval_sec(self) -> float:
        return self.timeout_sec / 3.0

    async def _send(self, milliseconds: int, *, yield_to_emergency: bool = False) -> bool:
        """Send the countdown. False: a re-arm stepped aside for an emergency (not all sent)."""
        if self.mechanism == "cancel_all_after":
            await self._call("cancel_all_orders_after", milliseconds)
        elif self.mechanism == "countdown":
            api = "dapiPrivate" if self._exchange_id == "binancecoinm" else "fapiPrivate"
            for market_id in self._market_ids():
                if yield_to_emergency and self._busy():
                    return False
                # cost 0: the heartbeat takes no tokens from the orders queued behind it
                await self._call("request", "countdownCancelAll", [api], "POST",
                                 {"symbol": market_id, "countdownTime": milliseconds}, {"cost": 0})
        return True

    async def arm(self, *, yield_to_emergency: bool = False) -> bool:
        """(Re-)arm the countdown once. Returns whether it is armed; errors are kept, not raised."""
        if not self.supported:
            return False
        sent_at = self._clock()
        try:
            if not await self._send(int(self.timeout_sec * 1000), yield_to_emergency=yield_to_emergency):
                self.deferred += 1  # some symbols re-armed, not all: the earlier expiry stands
                return self.armed
        except VenueError as exc:
            self.last_error = str(exc)
            log.warning("dead-man switch not re-armed: %s", exc)
            return self.armed
        self._expires_at = sent_at + timedelta(seconds=self.timeout_sec)
        self.last_error = None
        self.arm_count += 1
        return True

    async def disarm(self) -> None:
        """Stop re-arming and cancel the countdown on the exchange (clean shutdown)."""
        await self.stop()
        if not self.supported or self._expires_at is None:
            return
        try:
            await self._send(0)
        except VenueError as exc:
            self.last_error = str(exc)
            log.warning("dead-man switch could not be disarmed (it will fire): %s", exc)
            return
        self._expires_at = None

    def start(self) -> None:
        """Keep it armed in the background, re-arming every third of the timeout."""
        if self.supported and self._task is None:
            self._task = asyncio.create_task(self._keep_armed(), name="ess-dead-man-switch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        # A re-arm already on the wire is let finish, so that it cannot reach the exchange after
        # the disarm that follows and leave a countdown running after a clean shutdown.
        arming, self._arming = self._arming, None
        if arming is not None and not arming.done():
            await asyncio.wait({arming})

    async def _keep_armed(self) -> None:
        while True:
            await asyncio.sleep(self.rearm_interval_sec)
            if self._busy():
                self.deferred += 1
                while self._busy():  # re-arm as soon as the emergency calls are done
                    await asyncio.sleep(min(0.25, self.rearm_interval_sec))
            try:
                self._arming = asyncio.ensure_future(self.arm(yield_to_emergency=True))
                await asyncio.shield(self._arming)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug must not silently end the re-arming
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("dead-man switch re-arm failed")

    def status(self) -> dict[str, Any]:
        expires = self.expires_at
        return {
            "supported": self.supported,
            "armed": self.armed,
            "mechanism": self.mechanism,
            "timeout_sec": self.timeout_sec if self.supported else None,
            "expires_at": expires.isoformat() if expires else None,
            "note": self.note,
            "last_error": self.last_error,
            # open orders the exchange's countdown will not cancel (per-symbol countdown only)
            "uncovered_symbols": self.uncovered_symbols(),
        }

    def uncovered_symbols(self) -> list[str]:
        if self.mechanism != "countdown":
            return []
        return sorted(self._open_order_symbols())
