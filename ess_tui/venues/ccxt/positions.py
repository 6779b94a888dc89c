"""Positions on a ccxt venue: read them (every position of the market type, or the listed
symbols), and close them with reduce-only market orders split under the venue's market-order cap
and batched where the venue batches (:mod:`ess_tui.venues.ccxt.closing`).

A mixin of :class:`~ess_tui.venues.ccxt.venue.CcxtVenue` (it uses the venue's ``_call``, profile,
exchange and clock); kept apart so that each module stays readable.
"""

from __future__ import annotations

import asyncio
import logging
import math
from decimal import Decimal
from typing import Any

from ess_tui.engine.venue import Position, VenueAuthError, VenueError, VenueRejected
from ess_tui.venues.ccxt.closing import BatchItemRefused, CloseRequest, Dust, split_close
from ess_tui.venues.ccxt.errors import redact

log = logging.getLogger("ess_tui.venues.ccxt.venue")

__all__ = ["PositionsMixin", "worst"]


def worst(errors: list[BaseException]) -> BaseException:
    """The error to raise after a fan-out: an auth error first, else the first one."""
    for exc in errors:
        if isinstance(exc, VenueAuthError):
            return exc
    return errors[0]


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _side_from_info(info: dict[str, Any]) -> str | None:
    """The position's side from the venue's own fields, when ccxt could not tell (None: unknown)."""
    position_side = str(info.get("positionSide") or info.get("posSide") or "").lower()
    if position_side in ("long", "short"):
        return position_side
    for key in ("positionAmt", "pos", "currentQty"):
        amount = _number(info.get(key))
        if amount:
            return "long" if amount > 0 else "short"
    side = str(info.get("side") or "").lower()
    return {"buy": "long", "sell": "short"}.get(side)


class PositionsMixin:
    """fetch_positions, close_position, close_all_positions for :class:`CcxtVenue`."""


    async def _positions_raw(self) -> list[dict[str, Any]]:
        if self.config.market_type == "spot":
            return await self._spot_holdings()
        batches = await self._fan_out([
            self._call("fetch_positions", symbols, dict(params))
            for symbols, params in self._profile.position_queries
        ])
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for raw in (p for batch in batches for p in (batch or [])):
            symbol = raw.get("symbol")
            if not self._in_scope(symbol) or abs(_number(raw.get("contracts"))) <= 0:
                continue
            side = raw.get("side")
            if side not in ("long", "short"):
                side = _side_from_info(raw.get("info") or {})
                raw = {**raw, "side": side or "long", "_side_guessed": side is None}
            seen[(symbol, raw["side"])] = raw
        self._positions = seen
        return list(seen.values())

    async def _spot_holdings(self) -> list[dict[str, Any]]:
        """Spot balances of the listed symbols' base currencies, when configured; else none."""
        if not self.config.include_spot_balances:
            self._positions = {}
            return []
        balance = await self._call("fetch_balance")
        markets = self.exchange.markets or {}
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for symbol in self.config.symbols:
            market = markets.get(symbol) or {}
            base = market.get("base")
            total = _number((balance.get("total") or {}).get(base))
            minimum = _number(((market.get("limits") or {}).get("amount") or {}).get("min"))
            if total <= 0 or total < minimum:
                continue  # nothing, or dust the market will not take
            free = _number((balance.get("free") or {}).get(base))
            seen[(symbol, "long")] = {
                "symbol": symbol, "side": "long", "contracts": total, "free": free,
            }
        self._positions = seen
        return list(seen.values())

    @staticmethod
    def _to_position(raw: dict[str, Any]) -> Position:
        return Position(
            symbol=raw["symbol"],
            side=raw["side"],
            amount=abs(_number(raw.get("contracts"))),
            entry_price=_number(raw.get("entryPrice")),
            mark_price=_number(raw.get("markPrice")),
        )

    async def fetch_positions(self) -> list[Position]:
        """Every open position in scope (amount in the market's order units: contracts)."""
        await self._ready()
        return [self._to_position(raw) for raw in await self._positions_raw()]

    def _split(self, position: Position, amount: float) -> list[Decimal]:
        """``amount`` of ``position`` as market orders the venue takes (see :func:`split_close`)."""
        market = self.exchange.market(position.symbol)
        try:
            pieces, _rest = split_close(market, amount)
        except Dust as exc:
            raise VenueRejected(
                f"{self.exchange_id}: {position.symbol} {position.side} {amount:g} cannot be closed "
                f"by order: {exc}; close it by hand", venue=self.exchange_id, call="create_order",
            ) from None
        except ValueError as exc:
            raise VenueRejected(
                f"{self.exchange_id}: {position.symbol} position of {amount:g} {exc}; close it by "
                "hand", venue=self.exchange_id, call="create_order",
            ) from None
        return pieces

    async def _send_close(self, request: CloseRequest) -> Any:
        return await self._call(
            "create_order", request.symbol, "market", request.side, float(request.amount), None,
            dict(request.params),
        )

    async def _send_closes(self, requests: list[CloseRequest]) -> list[Any]:
        return await self._call("create_orders", [
            {"symbol": r.symbol, "type": "market", "side": r.side, "amount": float(r.amount),
             "price": None, "params": dict(r.params)}
            for r in requests
        ])

    async def _place(self, symbol: str, side: str, piece: Decimal, params: dict[str, Any]) -> Any:
        try:
            market = self.exchange.market(symbol)
            key = (market.get("type"), bool(market.get("linear")), market.get("settle"))
            return await self._closer.submit(
                symbol, side, format(piece.normalize(), "f"), params, key=key
            )
        except BatchItemRefused as refused:
            exc = VenueRejected(
                redact(f"{self.exchange_id} create_orders: {symbol} {side} {piece.normalize():f} "
                       f"refused: {refused}", self._secrets),
                venue=self.exchange_id, call="create_orders",
            )
            self._note_error(exc)
            raise exc from None

    async def close_position(self, position: Position) -> float:
        """See :meth:`_close_position`; the dead-man re-arm steps aside while it runs."""
        self._emergency += 1
        try:
            return await self._close_position(position)
        finally:
            self._emergency -= 1

    async def _close_position(self, position: Position) -> float:
        """Reduce-only market orders (several, above the venue's market-order cap) closing ``position``.

        The amount is the smaller of ``position.amount`` and what the venue last said is open; a
        position the venue no longer shows is not traded. Orders of concurrent closes go out
        together where the venue batches (:class:`~ess_tui.venues.ccxt.closing.CloseBatcher`).
        Returns the amount filled, or sent when the venue does not report fills in its answer.
        An amount below the market's minimum raises "cannot be closed by order: …".
        """
        await self._ready()
        key = (position.symbol, position.side)
        raw = self._positions.get(key)
        if raw is None:
            await self._positions_raw()  # look again rather than trade on a stale picture
            raw = self._positions.get(key)
            if raw is None:
                return 0.0
        if raw.get("_side_guessed"):
            raise VenueRejected(
                f"{self.exchange_id}: {position.symbol} position side not reported by the venue; "
                "not closing blind, close it by hand",
                venue=self.exchange_id, call="create_order",
            )
        held = abs(_number(raw.get("contracts")))
        if self.config.market_type == "spot":
            balance = await self._call("fetch_balance")
            base = self.exchange.market(position.symbol)["base"]
            held = min(held, _number((balance.get("free") or {}).get(base)))
        amount = min(position.amount, held)
        if amount <= 0:
            return 0.0
        side = position.closing_side
        params = self._profile.close_params(raw)
        pieces = self._split(position, amount)
        results = await asyncio.gather(
            *(self._place(position.symbol, side, piece, dict(params)) for piece in pieces),
            return_exceptions=True,
        )
        filled_total = 0.0
        errors: list[BaseException] = []
        for piece, result in zip(pieces, results):
            if isinstance(result, BaseException):
                errors.append(result)
                continue
            filled = (result or {}).get("filled")
            filled_total += _number(filled) if filled is not None else float(piece)
        for exc in errors:
            if isinstance(exc, VenueError) and not isinstance(exc, VenueAuthError):
                self._order_failures.append((self._clock(), str(exc)))
        if errors:
            raise worst(errors)
        log.info("closed %s: %s %s market reduce-only", position.describe(), side, amount)
        return filled_total

    async def close_all_positions(self) -> int:
        """Close every position concurrently. Returns how many; raises if any could not be."""
        positions = await self.fetch_positions()
        results = await asyncio.gather(
            *(self.close_position(p) for p in positions), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise worst(errors)
        return sum(1 for r in results if _number(r) > 0)

