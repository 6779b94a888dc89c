"""Write the README screenshots from the same scenarios as the snapshot tests.

    python -m ess_tui.tui.screenshots [--out screenshots] [NAME ...]

Each scenario of :mod:`ess_tui.tui.scenarios` becomes ``<out>/<name>.svg`` at 120×40, drawn the
same way ``pytest-textual-snapshot`` draws the snapshots in ``tests/__snapshots__/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ess_tui.tui.scenarios import SCENARIOS, Scenario, build_app


def render(scenario: Scenario) -> str:
    """The scenario's screen as an SVG string."""
    from textual._doc import take_svg_screenshot

    return take_svg_screenshot(app=build_app(scenario), terminal_size=scenario.size,
                               run_before=scenario.steps)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ess_tui.tui.screenshots",
                                     description="Write the control room screenshots (SVG).")
    parser.add_argument("--out", type=Path, default=Path("screenshots"), help="folder to write to")
    parser.add_argument("names", nargs="*", help="only these scenarios (default: all)")
    args = parser.parse_args(argv)
    known = {s.name: s for s in SCENARIOS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for scenario in [known[n] for n in args.names] or SCENARIOS:
        path = args.out / f"{scenario.name}.svg"
        path.write_text(render(scenario), encoding="utf-8")
        print(f"{path}  {scenario.caption}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
