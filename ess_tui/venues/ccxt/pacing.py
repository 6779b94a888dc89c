"""The venue's own pacing: its Retry-After / ban headers after a 418 or 429, and its clock.

* :func:`retry_after_seconds` reads how long the venue asked us to wait: ``Retry-After`` (seconds
  or an HTTP date; Binance sends it with 418 and 429), Bybit's ``X-Bapi-Limit-Reset-Timestamp``
  (epoch ms). :class:`Backoff` then holds every call to that venue until the time is up: a short
  wait is slept through, a long ban makes each call fail at once with the time left in its text —
  the venue is never hammered while it is refusing us.
* :func:`is_clock_error` spots Binance's -1021 (timestamp outside the recvWindow): the caller
  reloads ccxt's time difference and resends once (a -1021 order was refused, never placed).
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = ["GONE", "Backoff", "is_clock_error", "is_gone", "retry_after_seconds"]

#: What ``CcxtVenue._call(..., gone_ok=True)`` returns when the venue says the order is not there.
GONE = object()

#: A back-off at most this long is waited out inside the call; a longer one fails the call.
SLEEP_THROUGH_SEC = 2.0


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    try:
        value = headers.get(name)
        if value is None:
            value = next((v for k, v in headers.items() if str(k).lower() == name.lower()), None)
    except AttributeError:
        return None
    return None if value is None else str(value).strip()


def retry_after_seconds(headers: Any, *, now: float | None = None) -> float | None:
    """Seconds the venue asked us to wait, from its response headers (None: it did not say)."""
    now = time.time() if now is None else now
    value = _header(headers, "Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError, IndexError):
                pass
    reset = _header(headers, "X-Bapi-Limit-Reset-Timestamp")
    if reset:
        try:
            return max(0.0, float(reset) / 1000.0 - now)
        except ValueError:
            pass
    return None


def is_clock_error(exc: BaseException) -> bool:
    """Binance -1021: the request's timestamp is outside the venue's recvWindow."""
    import ccxt

    return isinstance(exc, ccxt.BaseError) and (
        isinstance(exc, ccxt.InvalidNonce) or '"code":-1021' in str(exc).replace(" ", "")
    )


def is_gone(exc: BaseException) -> bool:
    """The venue says the order does not exist (filled, cancelled or never there)."""
    import ccxt

    return isinstance(exc, ccxt.OrderNotFound)


class Backoff:
    """The time before which no call goes to the venue (monotonic seconds)."""

    def __init__(self) -> None:
        self.until = 0.0
        self.reason = ""

    def hold(self, seconds: float, reason: str) -> None:
        self.until = max(self.until, time.monotonic() + seconds)
        self.reason = reason

    def remaining(self) -> float:
        return max(0.0, self.until - time.monotonic())
