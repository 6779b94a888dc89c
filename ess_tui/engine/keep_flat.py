"""Keep the book flat while latched: a position or order that appears after the flatten ended (a
strategy that ignored the gate, a fill arriving late, a venue that re-opened something) is
flattened again, audited ``reflatten``.

The controller owns this, so a user of the seed API alone gets it: the runner asks on each cycle
while latched (:meth:`KeepFlat.check` fetches the book at most every ``interval_sec``), and a caller
that reads the book anyway (the control room's venue panel) hands it over instead of a second fetch.
The seed's event bus still gets one ``emergency.stop`` per activation, however often it re-flattens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ess_tui.engine.flatten import describe_error

if TYPE_CHECKING:
    from ess_tui.engine.controller import EmergencyStopController

log = logging.getLogger(__name__)


def _describe(item: Any) -> str:
    describe = getattr(item, "describe", None)
    if callable(describe):
        try:
            return str(describe())
        except Exception:  # noqa: BLE001
            pass
    return str(getattr(item, "symbol", None) or type(item).__name__)


class KeepFlat:
    """While latched and after a flatten ended, flatten again when the book is open."""

    def __init__(self, controller: EmergencyStopController, *, interval_sec: float = 2.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.controller = controller
        self.interval_sec = float(interval_sec)
        self.monotonic = monotonic
        self._last_look: float | None = None

    def _may_act(self) -> bool:
        c = self.controller
        report = c.last_report
        return (
            c.known_latched and not c.flattening and c.exchange is not None
            and (c.acting or c.not_durable is not None)
            and report is not None and not report.fatal and not report.fenced
        )

    async def check(self, positions: Any = None, orders: Any = None) -> bool:
        """Flatten again if the book is open; returns whether a flatten was started."""
        if not self._may_act():
            return False
        now = self.monotonic()
        if positions is None and orders is None:
            if self._last_look is not None and now - self._last_look < self.interval_sec:
                return False
            venue = self.controller.exchange
            fetch_p = getattr(venue, "fetch_positions", None)
            fetch_o = getattr(venue, "fetch_open_orders", None)
            if not callable(fetch_p) or not callable(fetch_o):
                return False  # a seed-shaped exchange cannot be looked at
            self._last_look = now
            try:
                positions, orders = await asyncio.gather(
                    _answer(fetch_p), _answer(fetch_o)
                )
            except Exception as exc:  # noqa: BLE001 - the next look tries again
                log.debug("keep-flat look at the venue failed: %s", describe_error(exc))
                return False
            if not self._may_act():
                return False  # reset, or a flatten started, while we looked
        else:
            self._last_look = now
        open_now = [_describe(p) for p in (positions or ())] + [_describe(o) for o in (orders or ())]
        if not open_now:
            return False
        return await self.controller.flatten_again(f"open while latched: {', '.join(open_now)}")


async def _answer(method: Callable[[], Any]) -> list[Any]:
    from ess_tui.engine.aio import maybe_await

    return list(await maybe_await(method()) or ())
