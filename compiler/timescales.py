"""Turn relative timescales (``steps = N per UPPER``) into periods on one clock.

One tick is the step of the fastest level. A root level steps once per macro
step, so its period is the number of ticks in a macro step, T. A level with
``steps = N per U`` has period ``period(U) / N``. T is the least common
multiple of the step products along every root-to-level path, so every period
is a positive integer by construction. Only ``per`` edges time a level, so
each level has one path from the top and one period.
"""

from __future__ import annotations

import math

import networkx as nx

from chronos.errors import CompileError

__all__ = ["Timescales", "assign_timescales"]


class Timescales:
    """Periods in ticks per level, ticks per macro step and the number of macro steps."""

    def __init__(self, periods: dict[str, int], ticks_per_macro_step: int, macro_steps: int) -> None:
        self.periods = periods
        self.ticks_per_macro_step = ticks_per_macro_step
        self.macro_steps = macro_steps

    def count(self, level: str) -> int:
        """Steps ``level`` takes per macro step."""
        return self.ticks_per_macro_step // self.periods[level]


def assign_timescales(graph: nx.DiGraph) -> Timescales:
    """Compute periods for every level of an acyclic level graph."""
    roots = [name for name in nx.topological_sort(graph) if graph.nodes[name]["spec"].per is None]
    macro_steps = _root_steps(graph, roots)
    rate: dict[str, int] = {}  # steps per macro step
    for name in nx.topological_sort(graph):
        spec = graph.nodes[name]["spec"]
        if spec.per is None:
            rate[name] = 1
            continue
        # Only the 'per' edge times a level; 'reads' edges add no timing.
        rate[name] = rate[spec.per] * spec.steps
    ticks = math.lcm(*rate.values()) if rate else 1
    periods = {name: ticks // count for name, count in rate.items()}
    return Timescales(periods, ticks, macro_steps)


def _root_steps(graph: nx.DiGraph, roots: list[str]) -> int:
    steps = {name: graph.nodes[name]["spec"].steps for name in roots}
    if len(set(steps.values())) > 1:
        raise CompileError(
            f"top levels take different numbers of steps: {steps}",
            hint="top levels advance together, one step per macro step; give them equal steps",
        )
    return next(iter(steps.values()))
