"""Snapshot tests of the control room, one per scenario of ``ess_tui.tui.scenarios`` (120×40, and
armed / warning / latched / the reset wizard at 80×24 and 200×50 too).

The scenarios are deterministic (fixed clock, frozen flash, no cursor blink, in-memory engine), and
``python -m ess_tui.tui.screenshots`` draws the README pictures from the same list. After a change
that alters a picture, look at the SVG before accepting it with ``--snapshot-update``.
"""

from __future__ import annotations

import pytest

from ess_tui.tui.scenarios import SCENARIOS, build_app


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_control_room_snapshot(snap_compare, scenario) -> None:
    assert snap_compare(build_app(scenario), terminal_size=scenario.size, run_before=scenario.steps)
