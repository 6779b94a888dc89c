"""Text the CLI prints that came from an operator, a venue or the database, made safe and bounded.

Nothing such a source supplies reaches the terminal raw: escape sequences (CSI, OSC), C0/C1 controls,
bidi overrides and other format characters become ``?``, whitespace collapses, and every field is
bounded. JSON output is built from the same cleaned values and dumped ASCII-only, so its bytes carry
no escape character either.
"""

from __future__ import annotations

import sys
from typing import Any

from ess_tui.engine.state import clean_text

NAME_LIMIT = 120  # operator names, holders, actions
TEXT_LIMIT = 500  # reasons, notes, problems
LINE_LIMIT = 2000  # any one line the CLI prints


def safe(value: object, limit: int = TEXT_LIMIT) -> str:
    """``value`` as one printable, bounded line. Never raises."""
    if value is None:
        return ""
    try:
        return clean_text(value, limit=limit)
    except Exception:  # noqa: BLE001 - a value whose str() fails is shown as its type
        return f"<{type(value).__name__}>"


def safe_json(value: Any, limit: int = TEXT_LIMIT, depth: int = 0) -> Any:
    """A JSON-able copy of ``value`` with every string (keys included) cleaned and bounded."""
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, str):
        return safe(value, limit)
    if depth > 8:
        return "…"
    if isinstance(value, dict):
        items = list(value.items())[:100]
        return {safe(k, NAME_LIMIT): safe_json(v, limit, depth + 1) for k, v in items}
    if isinstance(value, (list, tuple)):
        return [safe_json(v, limit, depth + 1) for v in list(value)[:100]]
    return safe(value, limit)


def out(line: str) -> None:
    """Print one line to stdout; a last guard drops any control character left in it."""
    print(_guard(line))


def err(line: str) -> None:
    print(_guard(line), file=sys.stderr)


def _guard(line: str) -> str:
    """Controls and format characters out, spacing kept (columns line up), length bounded."""
    import unicodedata

    text = line if isinstance(line, str) else safe(line, LINE_LIMIT)
    if not (text.isascii() and text.isprintable()):
        text = "".join(
            " " if ch == "\t" else
            "?" if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") else ch
            for ch in text
        )
    return text if len(text) <= LINE_LIMIT else text[: LINE_LIMIT - 1] + "…"


def latch_lines(latches: list[Any]) -> list[str]:
    """One clean, bounded line per scoped or reduce-only latch (for ``status``)."""
    return [f"  {x.level.replace('_', '-').upper():<11} {safe(str(x.scope), 80)} — "
            f"{safe(x.reason, 200)} (latch {x.id}, by {safe(x.latched_by, NAME_LIMIT)})"
            for x in latches]
