"""How the control room writes times, ages and amounts: UTC clock times, short ages, grouped sizes."""

from __future__ import annotations

from datetime import datetime

from ess_tui.engine.state import as_utc


def clock_time(value: datetime | None) -> str:
    """``04:03:31`` in UTC, or an em dash."""
    if value is None:
        return "—"
    return as_utc(value).strftime("%H:%M:%S")


def date_time(value: datetime | None) -> str:
    """``2025-11-30 04:03:31 UTC``, or an em dash."""
    if value is None:
        return "—"
    return as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``4m 12s``, ``2h 03m``, ``3d 04h``."""
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, sec = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def since(now: datetime, then: datetime | None) -> float | None:
    """Seconds from ``then`` to ``now`` (None when ``then`` is unknown)."""
    if then is None:
        return None
    return (as_utc(now) - as_utc(then)).total_seconds()


def amount(value: float) -> str:
    """A size: up to 6 significant digits, no exponent for ordinary sizes."""
    return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.0f}"


def money(value: float | None) -> str:
    """``12,345.67``, or an em dash."""
    if value is None:
        return "—"
    return f"{value:,.2f}"


def signed_money(value: float | None) -> str:
    """``+1,234.50`` / ``-87.20``; an em dash for unknown."""
    if value is None:
        return "—"
    return f"{value:+,.2f}"
