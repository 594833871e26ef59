"""The benchmark's printed output: one table of medians, and each goal of issue 9 as a ratio.

Pure functions of given numbers, so they are tested without running anything.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One measurement: its name, unit and every round's value."""

    name: str
    values: Sequence[float]
    unit: str = "s"

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else math.nan


@dataclass(frozen=True)
class Goal:
    """A goal of issue 9: ``value`` (a ratio, a count) must be at most ``limit``."""

    text: str
    value: float
    limit: float

    @property
    def met(self) -> bool:
        return not math.isnan(self.value) and self.value <= self.limit


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; NaN when either is missing or the denominator is not > 0."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator <= 0:
        return math.nan
    return numerator / denominator


def overhead(cold: float, direct: float, warm: float) -> float:
    """What verification adds to a cold pull: cold − direct (the fetch) − warm (the serve)."""
    return cold - direct - warm


def main_goals(m: Mapping[str, float], label: str) -> list[Goal]:
    """The goals on the default image, from medians keyed direct, dist cold, dist warm,
    pullguard cold, pullguard warm and sha256 (missing keys give NaN)."""

    def get(key: str) -> float:
        return m.get(key, math.nan)

    verification = overhead(get("pullguard cold"), get("direct"), get("pullguard warm"))
    return [
        Goal(
            f"cold / distribution cold ({label})",
            ratio(get("pullguard cold"), get("dist cold")),
            1.0,
        ),
        Goal("verification overhead / one sha256 pass", ratio(verification, get("sha256")), 1.5),
        Goal("warm / direct", ratio(get("pullguard warm"), get("direct")), 1.1),
    ]


def throttled_goal(pullguard_cold: float, dist_cold: float, rate_mb: float) -> Goal:
    return Goal(
        f"throttled {rate_mb:g} MB/s: cold / distribution cold",
        ratio(pullguard_cold, dist_cold),
        1.1,
    )


def linearity_goal(costs: Mapping[int, float]) -> Goal:
    """Cost linear in size: the largest size's cold pull over the line through the two smallest.

    ``costs`` maps MiB to seconds; with fewer than three sizes the value is NaN.
    """
    sizes = sorted(costs)
    text = "size: cold at largest / line through the two smaller sizes"
    if len(sizes) < 3:
        return Goal(text, math.nan, 1.1)
    (a, b), c = sizes[:2], sizes[-1]
    slope = (costs[b] - costs[a]) / (b - a)
    predicted = costs[a] + slope * (c - a)
    return Goal(f"{text} ({c} MiB)", ratio(costs[c], predicted), 1.1)


def spread_goal(text: str, values: Sequence[float], limit: float) -> Goal:
    """The largest over the smallest of ``values`` (1.0 is no spread at all)."""
    present = [v for v in values if not math.isnan(v)]
    if len(present) < 2:
        return Goal(text, math.nan, limit)
    return Goal(text, ratio(max(present), min(present)), limit)


def render_rows(rows: Sequence[Row], title: str) -> str:
    width = max([len(r.name) for r in rows] + [len(title)])
    lines = [f"{title:<{width}}  {'median':>9}   rounds"]
    for row in rows:
        values = " ".join(_number(v) for v in row.values)
        lines.append(f"{row.name:<{width}}  {_number(row.median):>7} {row.unit:<2}  {values}")
    return "\n".join(lines)


def render_matrix(title: str, cells: Mapping[str, Mapping[str, float]]) -> str:
    """A table of ``cells[row][column]``; the columns in the order they first appear."""
    columns = list(dict.fromkeys(c for row in cells.values() for c in row))
    width = max([len(r) for r in cells] + [len(title)])
    lines = [f"{title:<{width}}" + "".join(f"  {c:>9}" for c in columns)]
    for name, row in cells.items():
        values = "".join(f"  {_number(row.get(c, math.nan)):>9}" for c in columns)
        lines.append(f"{name:<{width}}{values}")
    return "\n".join(lines)


def render_goals(goals: Sequence[Goal]) -> str:
    width = max(len(g.text) for g in goals) if goals else 4
    lines = [f"{'goal':<{width}}  {'value':>7}  {'limit':>7}  met"]
    for goal in goals:
        met = "n/a" if math.isnan(goal.value) else ("yes" if goal.met else "NO")
        limit = "≤ " + _number(goal.limit)
        lines.append(f"{goal.text:<{width}}  {_number(goal.value):>7}  {limit:>7}  {met}")
    return "\n".join(lines)


def _number(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value >= 100 and value == int(value):
        return f"{value:.0f}"
    return f"{value:.2f}"
