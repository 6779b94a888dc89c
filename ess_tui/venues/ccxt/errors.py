"""ccxt exceptions mapped onto the engine's :class:`~ess_tui.engine.venue.VenueError` family.

============================================  ======================================
ccxt                                          ess-tui
============================================  ======================================
AuthenticationError, PermissionDenied,        VenueAuthError — "cannot flatten: API
AccountSuspended, AccountNotEnabled           key rejected (…)"; not retried
RateLimitExceeded, DDoSProtection             VenueRateLimited
RequestTimeout                                VenueTimeout
ExchangeNotAvailable, OnMaintenance,          VenueUnavailable
NetworkError and BadResponse (the rest)
InvalidOrder, InsufficientFunds, BadRequest,  VenueRejected (ReduceOnlyViolation when
NotSupported, ExchangeError (the rest)        the venue refused a reduce-only order)
============================================  ======================================

Messages are made safe before they leave: key material (the values handed in as ``secrets``),
signatures and whole query strings are cut out, control characters are removed and the length
is bounded. The original exception is not chained (``raise … from None``), so a traceback cannot
leak a signed URL either.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ess_tui.engine.state import clean_text
from ess_tui.engine.venue import (
    ReduceOnlyViolation,
    VenueAuthError,
    VenueError,
    VenueRateLimited,
    VenueRejected,
    VenueTimeout,
    VenueUnavailable,
)

__all__ = ["map_ccxt_error", "redact"]

_QUERY = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")
_SECRETISH = re.compile(
    r"(?i)\b(signature|sign|apikey|api_key|api-key|x-mbx-apikey|ok-access-key|ok-access-sign|"
    r"ok-access-passphrase|x-bapi-api-key|x-bapi-sign|passphrase|secret|password|listenkey)"
    r"(['\"]?\s*[:=]\s*['\"]?)[^\s&'\",}]+"
)
_REDUCE_ONLY = re.compile(r"(?i)reduce[\s_-]?only|reduceonly")


def redact(text: str, secrets: Sequence[str] = (), *, limit: int = 300) -> str:
    """``text`` without key material, signatures or query strings, one bounded line."""
    for value in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(value, "***")
    text = _QUERY.sub(r"\1?…", text)
    text = _SECRETISH.sub(r"\1\2***", text)
    return clean_text(text, limit=limit)


def map_ccxt_error(
    exc: BaseException, *, venue: str, call: str, secrets: Sequence[str] = ()
) -> VenueError | None:
    """The VenueError for a ccxt exception, or None when ``exc`` is not a ccxt error."""
    import ccxt

    if isinstance(exc, VenueError):
        return exc
    if not isinstance(exc, ccxt.BaseError):
        return None
    detail = redact(str(exc) or type(exc).__name__, secrets, limit=240)
    where = f"{venue} {call}"
    kind = type(exc).__name__
    if isinstance(exc, ccxt.AuthenticationError):  # PermissionDenied, AccountSuspended… subclass it
        return VenueAuthError(
            f"cannot flatten: API key rejected ({where}: {kind}: {detail})", venue=venue, call=call
        )
    if isinstance(exc, (ccxt.DDoSProtection, ccxt.RateLimitExceeded)):
        return VenueRateLimited(f"{where}: rate limited ({kind}): {detail}", venue=venue, call=call)
    if isinstance(exc, ccxt.RequestTimeout):
        return VenueTimeout(f"{where}: timed out: {detail}", venue=venue, call=call)
    if isinstance(exc, ccxt.OperationFailed):  # NetworkError (ExchangeNotAvailable…), BadResponse
        return VenueUnavailable(f"{where}: unavailable ({kind}): {detail}", venue=venue, call=call)
    if _REDUCE_ONLY.search(str(exc)) and isinstance(exc, (ccxt.InvalidOrder, ccxt.ExchangeError)):
        return ReduceOnlyViolation(
            f"{where}: reduce-only order refused ({kind}): {detail}", venue=venue, call=call
        )
    return VenueRejected(f"{where}: rejected ({kind}): {detail}", venue=venue, call=call)
