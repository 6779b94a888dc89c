"""Figures: a median and a p99 over many samples, a goal, and whether the goal was met.

"p99" always means *the worst 1%*: the 99th percentile for figures where less is better
(latency, memory, CPU share), the 1st percentile for figures where more is better (throughput).
Percentiles interpolate linearly between the closest ranks (numpy's default).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0…100) of ``samples``, interpolated linearly. ValueError if empty."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be between 0 and 100, got {q!r}")
    data = sorted(samples)
    rank = (len(data) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (rank - low)


@dataclass(frozen=True)
class Goal:
    """A promise a figure is held to: ``stat`` (median or p99) ``op`` ``limit``, in the figure's unit."""

    text: str
    limit: float
    op: Literal["<=", ">="] = "<="
    stat: Literal["median", "p99"] = "p99"

    def met_by(self, median: float | None, p99: float | None) -> bool | None:
        value = median if self.stat == "median" else p99
        if value is None:
            return None
        return value <= self.limit if self.op == "<=" else value >= self.limit


@dataclass
class Figure:
    """One line of the report."""

    name: str
    unit: str
    median: float | None = None
    p99: float | None = None
    n: int = 0
    goal: Goal | None = None
    note: str = ""
    higher_is_better: bool = False
    skipped: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Set by the runner: None when not judged (--quick, skipped, no goal).
    met: bool | None = None

    @classmethod
    def from_samples(
        cls, name: str, unit: str, samples: Iterable[float], *, higher_is_better: bool = False,
        goal: Goal | None = None, note: str = "", extra: dict[str, Any] | None = None,
    ) -> Figure:
        data = [float(s) for s in samples]
        if not data:
            return cls(name, unit, goal=goal, note=note, error="no samples were taken",
                       higher_is_better=higher_is_better, extra=dict(extra or {}))
        worst = percentile(data, 1.0) if higher_is_better else percentile(data, 99.0)
        return cls(
            name, unit, median=percentile(data, 50.0), p99=worst, n=len(data), goal=goal,
            note=note, higher_is_better=higher_is_better, extra=dict(extra or {}),
        )

    @classmethod
    def not_measured(cls, name: str, unit: str, why: str, *, goal: Goal | None = None,
                     error: bool = False) -> Figure:
        """A figure that could not be taken: skipped (by design) or an error (something broke)."""
        if error:
            return cls(name, unit, goal=goal, error=why)
        return cls(name, unit, goal=goal, skipped=why)

    def judge(self, enabled: bool) -> None:
        self.met = self.goal.met_by(self.median, self.p99) if (enabled and self.goal) else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "median": self.median,
            "p99": self.p99,
            "p99_is": "1st percentile (worst 1%)" if self.higher_is_better else "99th percentile",
            "n": self.n,
            "goal": None if self.goal is None else {
                "text": self.goal.text, "stat": self.goal.stat, "op": self.goal.op,
                "limit": self.goal.limit,
            },
            "met": self.met,
            "note": self.note,
            "skipped": self.skipped,
            "error": self.error,
            "extra": self.extra,
        }


@dataclass
class ScenarioResult:
    """What one scenario measured, and what bounds it."""

    key: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "figures": [f.to_json() for f in self.figures],
            "notes": list(self.notes),
            "error": self.error,
            "seconds": round(self.seconds, 2),
        }


def ms(seconds: float) -> float:
    return seconds * 1000.0
