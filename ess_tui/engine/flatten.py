"""Flatten a venue: cancel every order, close every position reduce-only, verify, retry until flat.

One pass is: cancel all orders (stop/trigger orders too) → fetch positions → close each with a
reduce-only market order, all concurrently → re-fetch positions and orders to verify flat. Passes
repeat with exponential backoff while the ESS stays latched, until the venue is verified flat or an
error that retrying cannot fix (API key rejected) stops it.

A seed-shaped exchange that only has ``cancel_all_orders()`` and ``close_all_positions()`` is called
once each, cancel first; it cannot be verified, so the report says ``flat=None``.

Fencing: immediately before every call that can change the book (each cancel, each close, the bulk
calls) and every read (the fetches, the verify) the flattener awaits its ``fence()`` hook. A hook
that raises :class:`FencedOut` (this runner lost its lease, or the activation it flattens is no
longer latched) ends the flatten at once: no further venue call is sent, and the report says
``fenced``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ess_tui.engine.aio import maybe_await
from ess_tui.engine.bus import EventBus
from ess_tui.engine.state import FlattenProgressEvent, FlattenReport
from ess_tui.engine.store import FencedOut
from ess_tui.engine.text import clean_text
from ess_tui.engine.venue import Position, VenueAuthError, VenueError

log = logging.getLogger(__name__)

#: Venue calls that can change the book: each is fenced.
BOOK_CHANGING = frozenset({"cancel_all_orders", "close_position", "close_all_positions",
                           "cancel_order"})

#: A position whose remaining amount is below this fraction of the original counts as closed.
_DUST = 1e-9


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff between flatten passes: ``initial_sec`` × ``factor``ⁿ, capped, with ±``jitter``."""

    initial_sec: float = 0.25
    factor: float = 2.0
    max_sec: float = 10.0
    jitter: float = 0.1
    max_attempts: int | None = None  # None: keep going while latched

    def delay(self, attempt: int) -> float:
        base = min(self.max_sec, self.initial_sec * self.factor ** max(0, attempt - 1))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


def describe_error(exc: BaseException) -> str:
    """One line for an operator: the error's class and message, bounded, with no traceback."""
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, VenueError):
        text = f"{type(exc).__name__}: {text}"
    return clean_text(text, limit=300)


def _is_full_venue(venue: Any) -> bool:
    return all(
        callable(getattr(venue, m, None))
        for m in ("fetch_positions", "fetch_open_orders", "close_position")
    )


async def _nothing() -> None:
    return None


def _count(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, (int, float)):
        return int(value)
    try:
        return len(value)
    except TypeError:
        return 0


class Flattener:
    """Runs flatten passes against one venue until flat, fatal, or told to stop."""

    def __init__(
        self,
        venue: Any,
        *,
        bus: EventBus | None = None,
        retry: RetryPolicy | None = None,
        still_latched: Callable[[], bool] = lambda: True,
        fence: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.venue = venue
        self.fence = fence
        #: Why the fence stopped this flatten (None: it did not).
        self.fenced: str | None = None
        #: Totals of the passes finished so far (a flatten cut short by a reset reports these).
        self.orders_canceled = 0
        self.positions_closed = 0
        self.bus = bus
        self.retry = retry or RetryPolicy()
        self.still_latched = still_latched
        self.venue_calls = 0
        #: What the venue last said is open (None: it has not said since the latch). When a
        #: check fails these are what the report and the retry message name, as last seen.
        self.last_positions: tuple[str, ...] | None = None
        self.last_orders: tuple[str, ...] | None = None
        self._verified = False

    def _progress(self, step: str, message: str, attempt: int, error: str | None = None) -> None:
        if error:
            log.warning("flatten %s (attempt %d): %s (error: %s)", step, attempt, message, error)
        else:
            log.info("flatten %s (attempt %d): %s", step, attempt, message)
        if self.bus is not None:
            self.bus.publish(FlattenProgressEvent(step, message, attempt, error))

    async def _call(self, method: str, *args: Any) -> Any:
        # Every venue call is fenced, reads too: a runner that lost its lease (stopped past it,
        # say) must not go on talking to the venue or report a book it no longer owns.
        await self._check_fence()
        self.venue_calls += 1
        return await maybe_await(getattr(self.venue, method)(*args))

    async def _check_fence(self) -> None:
        """Raise :class:`FencedOut` unless this flatten may still send. Checked again after the
        hook answers (no await in between and the call), so once one concurrent close is fenced
        out, none sent after that moment gets through."""
        if self.fenced is not None:
            raise FencedOut(self.fenced)
        if self.fence is not None:
            try:
                await self.fence()
            except FencedOut as exc:
                if self.fenced is None:
                    self.fenced = describe_error(exc)
                    log.critical("flatten fenced out, sending nothing more: %s", self.fenced)
                raise
        if self.fenced is not None:
            raise FencedOut(self.fenced)

    def _raise_if_fenced(self, *results: Any) -> None:
        for result in results:
            if isinstance(result, FencedOut):
                raise result

    async def run(self) -> FlattenReport:
        """Pass after pass until flat, fatal, or no longer latched. Never raises VenueError."""
        canceled = closed = 0
        attempt = 0
        report = FlattenReport()
        while True:
            attempt += 1
            try:
                report = await self.one_pass(attempt)
            except FencedOut as exc:
                self.fenced = self.fenced or describe_error(exc)
                self._progress("fenced", f"stopped: {self.fenced}", attempt, self.fenced)
                return FlattenReport(
                    orders_canceled=canceled, positions_closed=closed, flat=False,
                    attempts=attempt, last_error=self.fenced, venue_calls=self.venue_calls,
                    fenced=True,
                )
            canceled += report.orders_canceled
            closed += report.positions_closed
            self.orders_canceled, self.positions_closed = canceled, closed
            done = (
                report.flat is not False
                or report.fatal
                or not self.still_latched()
                or (self.retry.max_attempts is not None and attempt >= self.retry.max_attempts)
            )
            if done:
                break
            delay = self.retry.delay(attempt)
            left = self._still_open(report)
            self._progress(
                "retry",
                f"not flat after pass {attempt}; still open: {left}; retrying in {delay:.2f}s",
                attempt,
                report.last_error,
            )
            await asyncio.sleep(delay)
            if not self.still_latched():
                break
        return FlattenReport(
            orders_canceled=canceled,
            positions_closed=closed,
            flat=report.flat,
            attempts=attempt,
            remaining_positions=report.remaining_positions,
            remaining_orders=report.remaining_orders,
            last_error=report.last_error,
            fatal=report.fatal,
            venue_calls=self.venue_calls,
        )

    def _still_open(self, report: FlattenReport) -> str:
        """What is still open, for the retry message; says when it is only as last seen."""
        items = ", ".join((*report.remaining_positions, *report.remaining_orders))
        if self._verified:
            return items or "unknown"
        unknown = [name for name, seen in (("positions", self.last_positions),
                                           ("orders", self.last_orders)) if seen is None]
        text = f"{items} (as last seen: the venue did not answer the check)" if items else ""
        if unknown:
            text += ("; " if text else "") + (
                f"{' and '.join(unknown)} unknown: the venue has not answered since the latch"
            )
        return text or "unknown"

    def _unverified(self, canceled: int, closed: int, attempt: int, errors: list[str],
                    fatal: bool) -> FlattenReport:
        """The report of a pass whose check failed: not flat, naming what was last seen open."""
        return FlattenReport(
            orders_canceled=canceled, positions_closed=closed, flat=False, attempts=attempt,
            remaining_positions=self.last_positions or (), remaining_orders=self.last_orders or (),
            last_error=errors[-1], fatal=fatal,
        )

    async def one_pass(self, attempt: int = 1) -> FlattenReport:
        """Cancel, then close, then verify. Errors are reported in the result, not raised."""
        errors: list[str] = []
        fatal = False
        self._verified = False

        def note(step: str, exc: BaseException) -> None:
            nonlocal fatal
            msg = describe_error(exc)
            if isinstance(exc, VenueAuthError):
                fatal = True
            errors.append(f"{step}: {msg}")
            self._progress(step, f"{step} failed", attempt, msg)

        full = _is_full_venue(self.venue)
        # 1. Cancel first, so no resting order can re-open what we close. Reading the positions
        #    changes nothing, so it runs alongside the cancel and saves a round trip.
        canceled = 0
        positions: list[Position] = []
        cancel_result, positions_result = await asyncio.gather(
            self._call("cancel_all_orders"),
            self._call("fetch_positions") if full else _nothing(),
            return_exceptions=True,
        )
        self._raise_if_fenced(cancel_result)
        if isinstance(cancel_result, BaseException):
            note("cancel", cancel_result)  # reported; we still close: reduce-only cannot add risk
        else:
            canceled = _count(cancel_result)
            self._progress("cancel", f"cancelled {canceled} order(s)", attempt)
        if isinstance(positions_result, BaseException):
            note("fetch positions", positions_result)
        elif full:
            positions = list(positions_result)
            self.last_positions = tuple(p.describe() for p in positions)
        if fatal:
            return FlattenReport(orders_canceled=canceled, flat=False, attempts=attempt,
                                 last_error=errors[-1], fatal=True)

        if not full:
            # Seed-shaped exchange: one bulk close, no verification possible.
            closed = 0
            try:
                closed = _count(await self._call("close_all_positions"))
                self._progress("close", f"closed {closed} position(s)", attempt)
            except FencedOut:
                raise
            except Exception as exc:  # noqa: BLE001
                note("close", exc)
            return FlattenReport(
                orders_canceled=canceled, positions_closed=closed,
                flat=None if not errors else False, attempts=attempt,
                last_error=errors[-1] if errors else None, fatal=fatal,
            )

        # 2. Close every position with a reduce-only market order, all symbols concurrently.
        closed = 0
        if positions:
            results = await asyncio.gather(
                *(self._close_one(p) for p in positions), return_exceptions=True
            )
            self._raise_if_fenced(*results)
            still_open: list[str] = []
            for position, result in zip(positions, results):
                if isinstance(result, BaseException):
                    note(f"close {position.symbol}", result)
                    still_open.append(position.describe())
                elif result >= position.amount * (1 - 1e-9) - _DUST:
                    closed += 1
                else:
                    still_open.append(position.describe())
            self.last_positions = tuple(still_open)
            self._progress("close", f"closed {closed} of {len(positions)} position(s)", attempt)
        if fatal:
            return FlattenReport(orders_canceled=canceled, positions_closed=closed, flat=False,
                                 attempts=attempt, last_error=errors[-1], fatal=True)

        # 3. Verify: re-fetch both books. Each failure is reported, not only the first.
        left_positions, left_orders = await asyncio.gather(
            self._call("fetch_positions"), self._call("fetch_open_orders"), return_exceptions=True
        )
        if isinstance(left_positions, BaseException):
            note("verify", left_positions)
        else:
            self.last_positions = tuple(p.describe() for p in left_positions)
        if isinstance(left_orders, BaseException):
            note("verify", left_orders)
        else:
            self.last_orders = tuple(o.describe() for o in left_orders)
        if isinstance(left_positions, BaseException) or isinstance(left_orders, BaseException):
            return self._unverified(canceled, closed, attempt, errors, fatal)
        self._verified = True
        remaining_p = self.last_positions
        remaining_o = self.last_orders
        flat = not remaining_p and not remaining_o
        self._progress(
            "verify",
            "venue is flat" if flat else f"{len(remaining_p)} position(s), {len(remaining_o)} order(s) still open",
            attempt,
        )
        return FlattenReport(
            orders_canceled=canceled, positions_closed=closed, flat=flat, attempts=attempt,
            remaining_positions=remaining_p, remaining_orders=remaining_o,
            last_error=errors[-1] if errors else None, fatal=fatal,
        )

    async def _close_one(self, position: Position) -> float:
        filled = await self._call("close_position", position)
        return float(filled or 0.0)
