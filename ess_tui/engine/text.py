"""Text and time at the engine's edge: operator and venue text made safe, the OS user, UTC clocks.

Text from an operator, a venue or a data source is made safe *once*, where it enters the engine
(the controller's ``activate`` / ``latch`` / ``reset``, an evaluator's reading, a venue's error):
:func:`clean_text` replaces control and format characters and bounds the length. Code further in
trusts what it is handed.
"""

from __future__ import annotations

from datetime import datetime, timezone

#: Longest reason / name / note text the ESS stores; longer text is cut with an ellipsis.
MAX_TEXT = 500


def utcnow() -> datetime:
    """Timezone-aware now in UTC."""
    return datetime.now(timezone.utc)


def os_user() -> str:
    """The operating-system user running this process (recorded when no name is given)."""
    import getpass
    import os

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry, no env: still record something
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def as_utc(value: datetime) -> datetime:
    """A naive datetime means UTC (the seed's convention); an aware one is converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def clean_text(value: object, *, limit: int = MAX_TEXT) -> str:
    """Operator or evaluator text made safe to store and show.

    Control characters (ANSI escapes included), bidi overrides and other format characters are
    replaced by a visible ``?`` or a space, runs of whitespace collapse, and the result is bounded to
    ``limit`` characters. Never raises.
    """
    import unicodedata

    text = value if isinstance(value, str) else str(value)
    if text.isascii() and text.isprintable():
        # The common case (plain ASCII, no control characters): only collapse and bound.
        cleaned = " ".join(text.split())
        return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
    out: list[str] = []
    for ch in text:
        if ch in "\t\n\r":
            out.append(" ")
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            out.append("?")
        else:
            out.append(ch)
    cleaned = " ".join("".join(out).split())
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1] + "…"
    return cleaned


__all__ = ["MAX_TEXT", "as_utc", "clean_text", "os_user", "utcnow"]
