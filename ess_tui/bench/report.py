"""The benchmark's table: plain text for the terminal, Markdown for the README, JSON for machines.

    python -m ess_tui.bench.report bench.json     # the Markdown table of a saved run
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ess_tui.bench.machine import one_line
from ess_tui.bench.stats import Figure, ScenarioResult


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def verdict(figure: dict[str, Any], quick: bool) -> str:
    if figure.get("error"):
        return "ERROR"
    if figure.get("skipped"):
        return "skipped"
    if figure.get("goal") is None:
        return ""
    if quick:
        return "not judged"
    met = figure.get("met")
    return "" if met is None else ("met" if met else "MISSED")


def _rows(data: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None]]:
    rows: list[tuple[str, dict[str, Any] | None]] = []
    for scenario in data["scenarios"].values():
        rows.append((scenario["title"], None))
        for figure in scenario["figures"]:
            rows.append((scenario["title"], figure))
    return rows


def render_text(data: dict[str, Any]) -> str:
    """The table printed at the end of a run."""
    quick = bool(data.get("quick"))
    head = ("figure", "median", "p99", "unit", "n", "goal", "")
    lines: list[str] = []
    body: list[tuple[str, ...]] = []
    for scenario in data["scenarios"].values():
        body.append((f"== {scenario['title']}", "", "", "", "", "", ""))
        if scenario.get("error"):
            body.append((f"   ERROR: {scenario['error']}", "", "", "", "", "", ""))
        for f in scenario["figures"]:
            if f.get("skipped") or f.get("error"):
                body.append((f"   {f['name']}", "—", "—", f["unit"], "0",
                             (f.get("goal") or {}).get("text", ""), verdict(f, quick)))
                body.append((f"     {f.get('skipped') or f.get('error')}", "", "", "", "", "", ""))
                continue
            body.append((f"   {f['name']}", fmt(f["median"]), fmt(f["p99"]), f["unit"],
                         f"{f['n']:,}", (f.get("goal") or {}).get("text", ""), verdict(f, quick)))
            if f.get("note"):
                body.append((f"       {f['note']}", "", "", "", "", "", ""))
        for note in scenario.get("notes", []):
            body.append((f"   note: {note}", "", "", "", "", "", ""))
    table_rows = [head, *(r for r in body if any(r[1:]))]
    widths = [max(len(r[i]) for r in table_rows) for i in range(len(head))]
    widths[0] = min(widths[0], 58)

    def line(row: Sequence[str]) -> str:
        if not any(row[1:]):
            return row[0]
        name = row[0] if len(row[0]) <= widths[0] else row[0][: widths[0] - 1] + "…"
        cells = [name.ljust(widths[0])]
        cells += [row[i].rjust(widths[i]) for i in (1, 2)]
        cells += [row[3].ljust(widths[3]), row[4].rjust(widths[4]), row[5].ljust(widths[5]), row[6]]
        return "  ".join(cells).rstrip()

    lines.append(f"ess-tui bench{' --quick' if quick else ''} — {data['started_at']}")
    lines.append(f"machine: {one_line(data['machine'])}")
    lines.append("p99 is the worst 1%: the 99th percentile, or the 1st where more is better (/min).")
    if quick:
        lines.append("--quick: a smoke check with few samples; no figure is judged against its goal.")
    lines.append("")
    lines.append(line(head))
    lines.extend(line(r) for r in body)
    load = data.get("load_average_at_end")
    lines.append("")
    lines.append(f"took {data['seconds']:.0f} s; load average at end "
                 f"{'n/a' if not load else f'{load[0]:.2f}'}")
    return "\n".join(lines)


def render_markdown(data: dict[str, Any]) -> str:
    """The README's table: one row per figure, the scenario in the first column; a flatten's
    round trips are folded into its time (``61.8 ms · 3.09 RTT``)."""
    quick = bool(data.get("quick"))
    out = [
        "| Scenario | Figure | Median | p99 | Goal | |",
        "|---|---|---:|---:|---|---|",
    ]
    for scenario in data["scenarios"].values():
        title = scenario["title"]
        figures = {f["name"]: f for f in scenario["figures"]}
        for f in scenario["figures"]:
            if f["name"].endswith(": round trips") and f["name"][: -len(": round trips")] in figures:
                continue
            unit = f["unit"]
            goal = (f.get("goal") or {}).get("text", "")
            if f.get("skipped") or f.get("error"):
                out.append(f"| {title} | {f['name']} | — | — | {goal} | "
                           f"{f.get('skipped') or 'error: ' + str(f.get('error'))} |")
                title = ""
                continue
            median, p99 = f"{fmt(f['median'])} {unit}", f"{fmt(f['p99'])} {unit}"
            rtt = figures.get(f"{f['name']}: round trips")
            if rtt is not None and rtt.get("median") is not None:
                median += f" · {fmt(rtt['median'])} RTT"
                p99 += f" · {fmt(rtt['p99'])} RTT"
            out.append(f"| {title} | {f['name']} | {median} | {p99} | {goal} | {verdict(f, quick)} |")
            title = ""
    return "\n".join(out)


def build_json(results: list[ScenarioResult], *, machine: dict[str, Any], quick: bool,
               started_at: str, seconds: float, load_at_end: Any) -> dict[str, Any]:
    return {
        "tool": "ess-tui bench",
        "quick": quick,
        "started_at": started_at,
        "seconds": seconds,
        "machine": machine,
        "load_average_at_end": load_at_end,
        "scenarios": {r.key: r.to_json() for r in results},
    }


def figures_of(results: list[ScenarioResult]) -> list[Figure]:
    return [f for r in results for f in r.figures]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m ess_tui.bench.report BENCH.json  (prints the Markdown table)",
              file=sys.stderr)
        return 2
    try:
        data = json.loads(Path(args[0]).read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read {args[0]}: {exc}", file=sys.stderr)
        return 2
    print(f"Machine: {one_line(data['machine'])}.\n")
    print(render_markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
