"""WCAG contrast of the control room's safety text: the banner (both flash phases) and every band
word, computed from a theme's colours. A shipped theme must pass AA (4.5:1); a user theme that
fails is loaded, with a warning in the event log."""

from __future__ import annotations

from collections.abc import Mapping

#: WCAG 2 AA for normal text.
AA = 4.5

BANDS = ("ok", "warn", "fire", "error", "unknown")


def _channel(value: int) -> float:
    c = value / 255.0
    return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4


def luminance(colour: str) -> float:
    """Relative luminance of ``#RRGGBB``."""
    text = colour.strip().lstrip("#")
    if len(text) == 3:
        text = "".join(ch * 2 for ch in text)
    r, g, b = (int(text[i:i + 2], 16) for i in (0, 2, 4))
    return 0.2126 * _channel(r) + 0.7152 * _channel(g) + 0.0722 * _channel(b)


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two colours (1 … 21)."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def safety_pairs(colours: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """(text, background) of every safety text, by what it is. ``colours`` holds the theme's
    ``background`` and ess-tui's variables (defaults already applied)."""
    latched_fg = colours["banner-latched-foreground"]
    pairs = {
        "banner armed": (colours["banner-armed-foreground"], colours["banner-armed-background"]),
        "banner latched (flash on)": (latched_fg, colours["banner-latched-background"]),
        "banner latched (flash off)": (colours.get("banner-latched-dim-foreground", latched_fg),
                                       colours["banner-latched-dim-background"]),
    }
    for band in BANDS:
        # the band word is drawn in the background colour on the band's colour
        pairs[f"band word {band.upper()}"] = (colours["background"], colours[f"band-{band}"])
    return pairs


def failures(colours: Mapping[str, str], minimum: float = AA) -> list[str]:
    """Every safety text under ``minimum``, as "what: ratio" lines (empty: the theme passes)."""
    out = []
    for what, (fg, bg) in safety_pairs(colours).items():
        ratio = contrast(fg, bg)
        if ratio < minimum:
            out.append(f"{what}: {fg} on {bg} is {ratio:.2f}:1 (needs {minimum}:1)")
    return out
