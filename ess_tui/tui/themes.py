"""Control-room themes: the four shipped in the wheel, the user's own, and the remembered choice.

A theme is a TOML file::

    name = "night-desk"
    dark = true
    [colors]        # Textual theme colours: primary, secondary, accent, warning, error, success,
                    # foreground, background, surface, panel, boost
    primary = "#3B82F6"
    [variables]     # ess-tui's own: band-ok, band-warn, band-fire, band-error, band-unknown,
                    # banner-armed-background, banner-armed-foreground, banner-latched-background,
                    # banner-latched-foreground, banner-latched-dim-background,
                    # banner-latched-dim-foreground (all optional)

Shipped themes live in the top-level ``themes/`` folder, packaged into the wheel as ``ess_tui.themes``
(so a plain ``pip install .`` has them); users drop their own into ``<user config dir>/ess-tui/themes/``. A user file with a shipped
name replaces the shipped theme. A broken file is skipped with a reason, never fatal.
"""

from __future__ import annotations

import json
import logging
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from textual.theme import Theme

log = logging.getLogger(__name__)

DEFAULT_THEME = "dark"
SHIPPED_THEMES = ("dark", "light", "high-contrast", "colour-blind-safe")

_COLOR_KEYS = (
    "primary", "secondary", "warning", "error", "success", "accent",
    "foreground", "background", "surface", "panel", "boost",
)


def variable_defaults(colors: dict[str, str], dark: bool) -> dict[str, str]:
    """ess-tui's own CSS variables, derived from a theme's colours when the file leaves them out."""
    error = colors.get("error", "#EF4444")
    return {
        "band-ok": colors.get("success", "#22C55E"),
        "band-warn": colors.get("warning", "#F59E0B"),
        "band-fire": error,
        "band-error": colors.get("accent", "#D946EF"),
        "band-unknown": colors.get("secondary", "#94A3B8"),
        "banner-armed-background": colors.get("success", "#14532D"),
        "banner-armed-foreground": "#FFFFFF" if dark else "#000000",
        "banner-latched-background": error,
        "banner-latched-foreground": "#FFFFFF",
        "banner-latched-dim-background": colors.get("panel", "#450A0A" if dark else "#FECACA"),
        "banner-latched-dim-foreground": "#FFFFFF",
    }


def theme_colours(theme: Theme) -> dict[str, str]:
    """The resolved colours of ``theme`` as ``#RRGGBB`` (Textual's generated ones and ours)."""
    generated = theme.to_color_system().generate()
    out: dict[str, str] = {}
    for key, value in {**generated, **theme.variables}.items():
        text = str(value)
        if text.startswith("#") and len(text) in (4, 7, 9):
            out[key] = text[:7]
    return out


def contrast_problems(themes: dict[str, Theme]) -> list[str]:
    """One line per theme whose banner or band words fall under WCAG AA, in either flash phase."""
    from ess_tui.tui.contrast import failures

    problems = []
    for name, theme in themes.items():
        bad = failures(theme_colours(theme))
        if bad:
            problems.append(f"theme {name!r} is hard to read (WCAG AA 4.5:1): " + "; ".join(bad))
    return problems


#: Fallbacks the app hands Textual so the stylesheet always parses.
CSS_VARIABLE_DEFAULTS = variable_defaults({}, True)


@dataclass(frozen=True)
class ThemeProblem:
    """A theme file that could not be used, and why."""

    path: Path
    problem: str


def theme_from_mapping(data: dict[str, Any], *, source: str) -> Theme:
    """Build a Textual :class:`Theme` from a parsed theme file. Raises ValueError with a reason."""
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{source}: 'name' must be a non-empty string")
    colors = data.get("colors", {})
    if not isinstance(colors, dict):
        raise ValueError(f"{source}: [colors] must be a table")
    unknown = sorted(set(colors) - set(_COLOR_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown colour(s) {', '.join(unknown)}; allowed: {', '.join(_COLOR_KEYS)}")
    if "primary" not in colors:
        raise ValueError(f"{source}: [colors] needs at least 'primary'")
    variables = data.get("variables", {})
    if not isinstance(variables, dict):
        raise ValueError(f"{source}: [variables] must be a table")
    dark = bool(data.get("dark", True))
    merged = {**variable_defaults(colors, dark), **{str(k): str(v) for k, v in variables.items()}}
    # The flash's off phase keeps the latched text colour unless the theme gives its own.
    if "banner-latched-dim-foreground" not in variables:
        merged["banner-latched-dim-foreground"] = merged["banner-latched-foreground"]
    theme = Theme(
        name=name.strip(),
        dark=dark,
        luminosity_spread=float(data.get("luminosity_spread", 0.15)),
        text_alpha=float(data.get("text_alpha", 0.95)),
        variables=merged,
        **{key: str(value) for key, value in colors.items()},
    )
    try:  # colour strings are checked here, not later while drawing
        theme.to_color_system().generate()
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        raise ValueError(f"{source}: bad colour value: {exc}") from None
    return theme


def load_theme_file(path: Path) -> Theme:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    return theme_from_mapping(data, source=str(path))


def shipped_theme_files() -> list[Path]:
    """The theme files inside the installed package."""
    folder = resources.files("ess_tui.themes")
    with resources.as_file(folder) as real:
        return sorted(Path(real).glob("*.toml"))


def user_theme_dir() -> Path:
    from ess_tui.config import default_config_dir

    return default_config_dir() / "themes"


def load_themes(user_dir: Path | None = None) -> tuple[dict[str, Theme], list[ThemeProblem]]:
    """Every usable theme (shipped, then the user's, which may replace a shipped one)."""
    themes: dict[str, Theme] = {}
    problems: list[ThemeProblem] = []
    files = shipped_theme_files()
    folder = user_dir if user_dir is not None else user_theme_dir()
    if folder.is_dir():
        files += sorted(folder.glob("*.toml"))
    for path in files:
        try:
            theme = load_theme_file(path)
        except ValueError as exc:
            log.warning("theme skipped: %s", exc)
            problems.append(ThemeProblem(path, str(exc)))
            continue
        themes[theme.name] = theme
    return themes, problems


class ThemeMemory:
    """Remembers the operator's theme choice in a small JSON file (next to the ESS database)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> str | None:
        if self.path is None:
            return None
        try:
            value = json.loads(self.path.read_text(encoding="utf-8")).get("theme")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None

    def save(self, name: str) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"theme": name}), encoding="utf-8")
            tmp.replace(self.path)
        except OSError as exc:
            log.warning("could not remember theme %s in %s: %s", name, self.path, exc.strerror)


def choose_theme(available: dict[str, Theme], configured: str | None, remembered: str | None) -> str:
    """Config wins, then the remembered choice, then dark; names not available are skipped."""
    for name in (configured, remembered, DEFAULT_THEME):
        if name and name in available:
            return name
    return next(iter(available), DEFAULT_THEME)
