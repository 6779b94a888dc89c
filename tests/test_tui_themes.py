"""Themes: the four shipped in the package, the user's own files, and bad files skipped."""

from __future__ import annotations

import colorsys
from pathlib import Path

from ess_tui.tui.themes import SHIPPED_THEMES, ThemeMemory, choose_theme, load_themes


def hue(colour: str) -> float:
    r, g, b = (int(colour.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4))
    return colorsys.rgb_to_hsv(r, g, b)[0] * 360


def test_shipped_themes_load_from_the_package(tmp_path: Path) -> None:
    themes, problems = load_themes(tmp_path / "none")
    assert set(SHIPPED_THEMES) <= set(themes)
    assert not problems
    for theme in themes.values():
        assert {"band-ok", "band-warn", "band-fire", "band-error"} <= set(theme.variables)


def test_colour_blind_safe_has_no_red_green_band_pair(tmp_path: Path) -> None:
    theme = load_themes(tmp_path / "none")[0]["colour-blind-safe"]
    ok = hue(theme.variables["band-ok"])
    assert 180 <= ok <= 260, f"OK band should be blue, hue {ok:.0f}"
    for band in ("band-warn", "band-fire"):
        assert not 90 <= hue(theme.variables[band]) <= 150, f"{band} must not be green"


def test_user_theme_is_added_and_a_broken_one_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "desk.toml").write_text(
        'name = "night-desk"\n[colors]\nprimary = "#112233"\nbackground = "#000000"\n'
    )
    (tmp_path / "broken.toml").write_text('name = "oops"\n[colors]\nprimary = "not-a-colour"\n')
    (tmp_path / "typo.toml").write_text('name = "typo"\n[colors]\nprimray = "#112233"\n')
    themes, problems = load_themes(tmp_path)
    assert "night-desk" in themes and "dark" in themes
    assert themes["night-desk"].variables["band-ok"]  # filled in from the theme's colours
    assert {p.path.name for p in problems} == {"broken.toml", "typo.toml"}
    assert any("primray" in p.problem for p in problems)


def test_choice_is_remembered_and_config_wins(tmp_path: Path) -> None:
    memory = ThemeMemory(tmp_path / "prefs.json")
    assert memory.load() is None
    memory.save("light")
    themes, _ = load_themes(tmp_path / "none")
    assert choose_theme(themes, None, memory.load()) == "light"
    assert choose_theme(themes, "high-contrast", memory.load()) == "high-contrast"
    assert choose_theme(themes, "no-such-theme", None) == "dark"
