"""Closing orders: how a position is split under the venue's market-order cap, and how the close
orders of one flatten pass are sent together where the venue batches them.

* :func:`split_close` — the pieces, in exact decimals at the market's amount step, each at most
  the venue's *market*-order cap (OKX's ``maxMktSz``, Bybit's ``maxMktOrderQty``, Binance's
  ``MARKET_LOT_SIZE``; never only ``limits.amount.max``, which on OKX is the limit-order cap),
  and the remainder no order can close (below the step or the minimum size).
* :class:`CloseBatcher` — close orders submitted in the same moment (the flattener closes every
  position concurrently) go out through ccxt's ``create_orders`` in chunks of the venue's batch
  size (OKX 20, Bybit 20 / spot 10, Binance futures 5); one refused order fails only its own close.

No ccxt import here: it works through the exchange object it is given.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

__all__ = ["BatchItemRefused", "CloseBatcher", "CloseRequest", "Dust", "market_order_cap", "split_close"]

#: Most market orders one close may be split into.
MAX_CHUNKS = 50


class BatchItemRefused(Exception):
    """The venue answered the batch but refused this one order in it."""


class Dust(Exception):
    """The amount (or what is left of it) is below what one order may carry."""


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() and number > 0 else None


def market_order_cap(market: dict[str, Any]) -> Decimal | None:
    """The largest amount one *market* order may carry on ``market`` (None: no cap known).

    The smallest of what the venue says: OKX's ``maxMktSz`` (contracts on derivatives; on spot it
    is a quote-currency cost, so not used there), Bybit's ``maxMktOrderQty``, ccxt's
    ``limits.market.max`` (Binance MARKET_LOT_SIZE) and ``limits.amount.max``.
    """
    info = market.get("info") or {}
    limits = market.get("limits") or {}
    candidates = [
        (limits.get("market") or {}).get("max"),
        (info.get("lotSizeFilter") or {}).get("maxMktOrderQty") if isinstance(info, dict) else None,
        (limits.get("amount") or {}).get("max"),
    ]
    if market.get("contract") and isinstance(info, dict):
        candidates.append(info.get("maxMktSz"))
    caps = [c for c in (_dec(v) for v in candidates) if c is not None]
    return min(caps) if caps else None


def _floor(value: Decimal, step: Decimal | None) -> Decimal:
    if step is None:
        return value
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def split_close(market: dict[str, Any], amount: float) -> tuple[list[Decimal], Decimal]:
    """(pieces, remainder) for a market close of ``amount`` on ``market``.

    Pieces are exact multiples of the amount step, as even as the step allows, each within the
    market-order cap and at least the minimum size. The remainder is what no order can close
    (under one step). Raises :class:`Dust` when nothing of ``amount`` can be sent, and
    ``ValueError`` when more than :data:`MAX_CHUNKS` orders would be needed.
    """
    precision = market.get("precision") or {}
    step = _dec(precision.get("amount"))
    minimum = _dec(((market.get("limits") or {}).get("amount") or {}).get("min"))
    wanted = _dec(amount)
    if wanted is None:
        return [], Decimal(0)
    total = _floor(wanted, step)
    remainder = wanted - total
    floor_size = max(x for x in (minimum, step, Decimal(0)) if x is not None)
    if total <= 0 or (minimum is not None and total < minimum):
        raise Dust(f"{wanted.normalize():f} is below the minimum order size {floor_size.normalize():f}")
    cap = market_order_cap(market)
    if cap is not None:
        cap = _floor(cap, step)
    if cap is None or cap <= 0 or total <= cap:
        return [total], remainder
    count = math.ceil(total / cap)
    while True:
        if count > MAX_CHUNKS:
            raise ValueError(
                f"needs {count} market orders of at most {cap.normalize():f}"
            )
        base = _floor(total / count, step)
        last = total - base * (count - 1)
        if last <= cap:
            break
        count += 1
    return [base] * (count - 1) + [last], remainder


@dataclass
class CloseRequest:
    """One close order waiting for its batch."""

    symbol: str
    side: str
    amount: str
    params: dict[str, Any]
    done: asyncio.Future[Any] = field(repr=False, default=None)  # type: ignore[assignment]


def order_refused(order: Any) -> str | None:
    """Why the venue refused this item of a batch answer (None: it took it)."""
    if not isinstance(order, dict):
        return "no answer for this order"
    info = order.get("info") or {}
    if isinstance(info, dict):
        s_code = info.get("sCode")
        if s_code not in (None, "", "0", 0):
            return f"{s_code} {info.get('sMsg') or ''}".strip()
        code = info.get("code")
        if code not in (None, "", "0", 0, 200, "200"):
            return f"{code} {info.get('msg') or info.get('retMsg') or ''}".strip()
    if order.get("status") == "rejected" or not order.get("id"):
        return "refused (no order id in the answer)"
    return None


class CloseBatcher:
    """Gathers the close orders of one moment and sends them ``size`` at a time.

    ``send_batch(requests)`` returns one answer per request (ccxt ``create_orders``);
    ``send_one(request)`` is used for a lone order and when the venue has no batch endpoint.
    A full chunk is sent at once; the rest after ``window_sec`` (the other closes of the same
    pass arrive within microseconds of each other).
    """

    def __init__(
        self,
        *,
        size: int,
        send_batch: Callable[[list[CloseRequest]], Awaitable[list[Any]]] | None,
        send_one: Callable[[CloseRequest], Awaitable[Any]],
        window_sec: float = 0.002,
        one_by_one_after: Callable[[BaseException], bool] = lambda exc: False,
    ) -> None:
        self.size = max(1, size)
        self._send_batch = send_batch
        self._send_one = send_one
        self.window_sec = window_sec
        self._one_by_one_after = one_by_one_after
        self._pending: dict[Any, list[CloseRequest]] = {}
        self._timer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # strong references while in flight
        self.calls = 0

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def submit(self, symbol: str, side: str, amount: str, params: dict[str, Any],
                     *, key: Any = None) -> Any:
        """Queue one close; returns the venue's order, or raises what refused it.

        Only closes with the same ``key`` share a batch (a venue batches one category at a time:
        Bybit linear or inverse, Binance one margin type).
        """
        if self._send_batch is None or self.size <= 1:
            self.calls += 1
            return await self._send_one(CloseRequest(symbol, side, amount, params))
        request = CloseRequest(symbol, side, amount, params, asyncio.get_running_loop().create_future())
        group = self._pending.setdefault(key, [])
        group.append(request)
        if len(group) >= self.size:
            self._pending[key] = group[self.size:]
            self._spawn(self._send(group[: self.size]))
        elif self._timer is None or self._timer.done():
            self._timer = self._spawn(self._flush_later())
        return await request.done

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.window_sec)
        chunks: list[list[CloseRequest]] = []
        pending, self._pending = self._pending, {}
        for group in pending.values():
            chunks.extend(group[i:i + self.size] for i in range(0, len(group), self.size))
        await asyncio.gather(*(self._send(c) for c in chunks))

    async def _one_by_one(self, chunk: list[CloseRequest]) -> None:
        """The venue refused the batch as such: each order on its own, so each answers for itself."""
        self.calls += len(chunk)
        results = await asyncio.gather(*(self._send_one(r) for r in chunk), return_exceptions=True)
        for request, result in zip(chunk, results):
            if request.done.done():
                continue
            if isinstance(result, BaseException):
                request.done.set_exception(result)
            else:
                request.done.set_result(result)

    async def _send(self, chunk: list[CloseRequest]) -> None:
        self.calls += 1
        try:
            if len(chunk) == 1 or self._send_batch is None:
                answers = [await self._send_one(chunk[0])] if len(chunk) == 1 else []
            else:
                try:
                    answers = list(await self._send_batch(chunk))
                except Exception as exc:  # noqa: BLE001 - the venue refused the batch as a whole
                    if not self._one_by_one_after(exc):
                        raise
                    await self._one_by_one(chunk)
                    return
        except BaseException as exc:  # noqa: BLE001 - every waiting close learns of it
            for request in chunk:
                if not request.done.done():
                    request.done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        paired = _pair(chunk, answers)
        if len(chunk) > 1 and all(order_refused(a) is not None for a in paired):
            # every order of the batch refused: the batch's shape may be what the venue refused
            # (a field it reads differently in a batch), so each goes once more on its own
            await self._one_by_one(chunk)
            return
        for request, answer in zip(chunk, paired):
            if request.done.done():
                continue
            if len(chunk) == 1:
                request.done.set_result(answer)
                continue
            reason = order_refused(answer)
            if reason is None:
                request.done.set_result(answer)
            else:
                request.done.set_exception(BatchItemRefused(reason))


def _same(request: CloseRequest, answer: dict[str, Any]) -> bool:
    if answer.get("symbol") != request.symbol:
        return False
    if answer.get("side") not in (None, request.side):
        return False
    amount = _dec(answer.get("amount"))
    return amount is None or amount == Decimal(request.amount)


def _pair(chunk: list[CloseRequest], answers: list[Any]) -> list[Any]:
    """The answer for each request. ccxt sorts a batch answer by timestamp (binance puts refused
    items, which have none, first), so answers that name their order are matched on symbol, side
    and amount; the rest (OKX names none; refusals name none) pair up in the order sent. A wrong
    pairing cannot hide an open position: the flattener verifies by reading the positions again.
    """
    if len(chunk) == 1:
        return [answers[0] if answers else None]
    paired: list[Any] = [None] * len(chunk)
    taken: set[int] = set()
    rest: list[Any] = []
    for answer in answers:
        if isinstance(answer, dict) and answer.get("symbol") and order_refused(answer) is None:
            for index, request in enumerate(chunk):
                if index not in taken and _same(request, answer):
                    paired[index] = answer
                    taken.add(index)
                    break
            else:
                rest.append(answer)
        else:
            rest.append(answer)
    for index in range(len(chunk)):
        if index not in taken and rest:
            paired[index] = rest.pop(0)
    return paired
