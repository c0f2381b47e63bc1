"""Invariants of a :class:`~chronos.compiler.plan.Plan`, checked after compiling and on load."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from chronos.errors import PlanError

if TYPE_CHECKING:
    from chronos.compiler.plan import Plan


def check_plan(plan: "Plan") -> None:
    """Raise PlanError at the first broken invariant, naming the level or edge."""
    names = [level.name for level in plan.levels]
    if not names:
        raise PlanError("plan has no levels")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise PlanError(f"plan lists level(s) {duplicates} more than once")
    known = set(names)
    data_names = {data.name for data in plan.data}

    for level in plan.levels:
        _check_level(level, known, data_names)
    edge_pairs = set()
    for edge in plan.edges:
        for end in (edge.upper, edge.lower):
            if end not in known:
                raise PlanError(f"edge {edge.upper} -> {edge.lower} names unknown level '{end}'")
        if edge.staleness < 0:
            raise PlanError(
                f"edge {edge.upper} -> {edge.lower} has negative staleness bound {edge.staleness}"
            )
        edge_pairs.add((edge.upper, edge.lower))
    by_name = {level.name: level for level in plan.levels}
    for level in plan.levels:
        for upper in level.uppers:
            if (upper, level.name) not in edge_pairs:
                raise PlanError(f"level '{level.name}' lists upper '{upper}' but the plan has no such edge")
    for upper, lower in edge_pairs:
        if lower not in by_name[upper].lowers or upper not in by_name[lower].uppers:
            raise PlanError(
                f"edge {upper} -> {lower} is missing from the lowers of '{upper}' or the uppers of '{lower}'",
                hint="edit the spec and recompile instead of editing the plan",
            )
    periods = {level.name: level.period for level in plan.levels}
    for level in plan.levels:
        if level.per is not None and level.per in periods and periods[level.per] != level.period * level.steps:
            raise PlanError(
                f"level '{level.name}': period {level.period} x steps {level.steps} must equal the period "
                f"{periods[level.per]} of '{level.per}'",
                hint="edit the spec and recompile instead of editing steps or periods in the plan",
            )
        if level.per is None and level.steps != plan.macro_steps:
            raise PlanError(
                f"top level '{level.name}' has steps {level.steps} but the plan has {plan.macro_steps} macro steps",
                hint="edit the spec and recompile instead of editing the plan",
            )
    if plan.macro_steps < 1 or plan.ticks_per_macro_step < 1:
        raise PlanError(
            f"macro_steps ({plan.macro_steps}) and ticks_per_macro_step "
            f"({plan.ticks_per_macro_step}) must be positive"
        )
    for entry in plan.schedule:
        if entry.level not in known:
            raise PlanError(f"schedule names unknown level '{entry.level}'")
        if entry.period * entry.count != plan.ticks_per_macro_step:
            raise PlanError(
                f"schedule entry for level '{entry.level}': period {entry.period} x count "
                f"{entry.count} must equal ticks_per_macro_step {plan.ticks_per_macro_step}"
            )


def _check_level(level, known: set[str], data_names: set[str]) -> None:
    if not 1 <= level.steps <= 10**9:
        raise PlanError(f"level '{level.name}' has steps {level.steps}; steps must be from 1 to 1,000,000,000")
    if level.per is not None and level.per not in level.uppers:
        raise PlanError(f"level '{level.name}' is timed per '{level.per}', which is not one of its uppers {level.uppers}")
    names = [variable.name for variable in level.variables]
    if len(set(names)) != len(names):
        raise PlanError(f"level '{level.name}' lists a variable twice: {names}")
    if level.period < 1:
        raise PlanError(f"level '{level.name}' has period {level.period}; periods must be positive")
    for other in level.uppers + level.lowers:
        if other not in known:
            raise PlanError(f"level '{level.name}' links to unknown level '{other}'")
    for kind, name in level.loss.args:
        pool = known if kind == "level" else data_names
        if name not in pool:
            raise PlanError(f"level '{level.name}' objective reads unknown {kind} '{name}'")
    if not level.variables:
        raise PlanError(f"level '{level.name}' has no variables")
