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


# --- contrast: the banner and every band word, in both flash phases ---------------------------

import pytest  # noqa: E402

from ess_tui.tui.contrast import AA, contrast, failures, safety_pairs  # noqa: E402
from ess_tui.tui.themes import theme_colours  # noqa: E402


@pytest.mark.parametrize("name", SHIPPED_THEMES)
def test_shipped_theme_passes_wcag_aa_in_both_flash_phases(tmp_path: Path, name: str) -> None:
    theme = load_themes(tmp_path / "none")[0][name]
    pairs = safety_pairs(theme_colours(theme))
    assert {"banner latched (flash on)", "banner latched (flash off)", "band word FIRE"} <= set(pairs)
    for what, (fg, bg) in pairs.items():
        assert contrast(fg, bg) >= AA, f"{name}: {what}: {fg} on {bg} is {contrast(fg, bg):.2f}:1"


def test_contrast_ratio_matches_wcag_reference_values() -> None:
    assert contrast("#000000", "#FFFFFF") == pytest.approx(21.0)
    assert contrast("#777777", "#FFFFFF") == pytest.approx(4.48, abs=0.01)  # the classic near miss
    assert contrast("#FFFFFF", "#FF0000") == pytest.approx(4.0, abs=0.01)


def test_a_user_theme_that_fails_is_loaded_and_named(tmp_path: Path) -> None:
    (tmp_path / "dim.toml").write_text(
        'name = "dim-desk"\n[colors]\nprimary = "#112233"\nbackground = "#000000"\n'
        '[variables]\nbanner-latched-dim-background = "#FECACA"\n'
        'banner-latched-foreground = "#FFFFFF"\n'
    )
    from ess_tui.tui.themes import contrast_problems

    themes, problems = load_themes(tmp_path)
    assert "dim-desk" in themes and not problems
    lines = contrast_problems(themes)
    assert len(lines) == 1 and "dim-desk" in lines[0] and "flash off" in lines[0]
    assert failures(theme_colours(themes["dim-desk"]))


async def test_a_failing_user_theme_warns_in_the_event_log(tmp_path: Path) -> None:
    from ess_tui.tui.scenarios import ScenarioHost, fixed_clock
    from ess_tui.tui.app import ControlRoomApp

    (tmp_path / "dim.toml").write_text(
        'name = "dim-desk"\n[colors]\nprimary = "#112233"\n'
        '[variables]\nbanner-latched-dim-background = "#FECACA"\n'
    )
    app = ControlRoomApp(None, host=ScenarioHost("armed"), clock=fixed_clock, frozen=True,
                         user_theme_dir=tmp_path, prefs_path=tmp_path / "p.json", operator="maria")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        texts = [m for _, kind, m in app.dashboard.log_widget.entries if kind == "WARN"]
        assert any("dim-desk" in t and "WCAG" in t for t in texts), texts
