"""The compiler pipeline: ProblemSpec -> level graph -> timescales -> methods -> Plan.

Each pass validates what it produced before the next one runs, so an error
always names the first place where the problem shows.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Optional, Union

import networkx as nx

from chronos.compiler.graph import build_level_graph, per_ancestors
from chronos.compiler.lower_levels import lower_level, resolve_data
from chronos.compiler.methods import choose_method, default_memory_budget
from chronos.compiler.plan import BackendPlan, EdgePlan, LevelPlan, MethodPlan, Plan, ScheduleEntry
from chronos.compiler.resolve import import_ref, search_path
from chronos.compiler.timescales import assign_timescales
from chronos.errors import CompileError
from chronos.gc_pause import collector_paused
from chronos.spec import ProblemSpec

__all__ = ["compile_file", "compile_spec"]

logger = logging.getLogger(__name__)

BACKEND_DEFAULT_STALENESS = {"local": 0, "torch": 0, "horovod": 0}


def compile_file(path: Union[str, Path], *, memory_budget: Optional[int] = None, trace: bool = True) -> Plan:
    """Parse the ``.chronos`` file at ``path`` and compile it to a Plan."""
    from chronos.dsl import parse_file

    # compile_spec runs the spec checks, so parsing skips them.
    return compile_spec(parse_file(path, check=False), memory_budget=memory_budget, trace=trace)


def compile_spec(spec: ProblemSpec, *, memory_budget: Optional[int] = None, trace: bool = True) -> Plan:
    """Compile a ProblemSpec to a validated Plan.

    With ``trace`` (the default), every objective is traced with torch.fx to
    find which variables it reads. The reads and a note go on each edge, and
    an edge that no objective uses gets a DependencyWarning. Tracing loads
    every data set and runs each objective once on example inputs.

    Raises:
        SpecError: the spec breaks an invariant (unknown names, bad values).
        CompileError: a reference does not import, the levels form a cycle,
            timescales conflict, or a requested method cannot apply.
    """
    started = time.perf_counter()
    if memory_budget is not None and (isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget < 1):
        raise CompileError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
    spec.validate_spec()
    if spec.source is not None and spec.source != os.path.abspath(spec.source):
        # Plans are run later from other directories: record where the spec was.
        spec = spec.model_copy(update={"source": os.path.abspath(spec.source)})
    _check_backend(spec)
    spec_dir = [os.path.dirname(os.path.abspath(spec.source))] if spec.source else []
    with search_path(spec_dir), collector_paused():
        plan = _compile(spec, memory_budget, trace)
    plan = plan.model_copy(update={"import_root": os.getcwd()})
    plan.validate_plan()
    logger.info(
        "compiled problem '%s': %d level(s), %d edge(s) in %.3f s",
        plan.problem,
        len(plan.levels),
        len(plan.edges),
        time.perf_counter() - started,
    )
    return plan


def _check_backend(spec: ProblemSpec) -> None:
    """Reject, at the spec's backend line, a backend or option this version cannot run."""
    backend = spec.backend
    location = backend.span.location() if backend.span else None
    if backend.name in ("torch", "horovod"):
        raise CompileError(
            f"backend '{backend.name}' is not available in this version of Chronos",
            location=location,
            hint="use 'backend local'",
        )
    ignored = sorted(set(backend.options) & {"world_size", "timeout", "device"})
    if backend.name == "local" and ignored:
        raise CompileError(
            f"the local backend runs in one process on the CPU, so it does not take {', '.join(ignored)}",
            location=location,
            hint="remove those options, which apply to distributed backends",
        )


def _trace_levels(levels: dict[str, LevelPlan], catalog, timescales, spec: ProblemSpec):
    """Trace every objective; return the levels with ``objective_bytes`` set, and the results."""
    from chronos.compiler.trace import trace_plan

    data = {name: catalog.load(name) for name in catalog.names()}
    provisional = Plan(
        problem=spec.name,
        levels=list(levels.values()),
        macro_steps=timescales.macro_steps,
        ticks_per_macro_step=timescales.ticks_per_macro_step,
    )
    results = trace_plan(provisional, data)
    traced = {
        name: level.model_copy(update={"objective_bytes": results[name].forward_bytes})
        for name, level in levels.items()
    }
    return traced, results


def _attach_reads(plan: Plan, results) -> Plan:
    """Store what each edge's objectives read, warn about unused edges, and add the notes."""
    from chronos.compiler.trace import check_reads, objective_reads

    notes = check_reads(plan, results)
    edges = [
        edge.model_copy(update={"objective_reads": objective_reads(results[edge.lower], edge.upper), "dependencies": note})
        for edge, note in zip(plan.edges, notes)
    ]
    return plan.model_copy(update={"edges": edges})


def _compile(spec: ProblemSpec, memory_budget: Optional[int], trace: bool) -> Plan:
    graph = build_level_graph(spec)
    catalog = resolve_data(spec)
    timescales = assign_timescales(graph)
    names = set(graph.nodes)
    levels: dict[str, LevelPlan] = {}
    for level in spec.levels:
        levels[level.name] = lower_level(
            level,
            catalog,
            names,
            uppers=sorted(graph.predecessors(level.name)),
            lowers=sorted(graph.successors(level.name)),
            period=timescales.periods[level.name],
        )

    levels, init_reads = _resolve_init_from(spec, graph, levels)
    results = None
    if trace:
        # Before choosing methods: the traced objective sizes enter the memory estimate.
        levels, results = _trace_levels(levels, catalog, timescales, spec)
    reads = _optimizer_reads(spec, graph, levels)
    budget = memory_budget or int(spec.backend.options.get("memory_budget", 0)) or default_memory_budget()

    estimates: dict[str, int] = {}
    edges = [
        _edge(spec, graph, levels, upper, lower, reads.get((upper, lower), []), budget, estimates, init_reads.get((upper, lower), []))
        for upper, lower in graph.edges
    ]
    _check_staleness_paths(spec, graph, edges)

    if spec.report is not None:
        span = spec.report_span
        import_ref(spec.report, location=span.location() if span else None, role="report")
    plan = Plan(
        problem=spec.name,
        source=spec.source,
        data=catalog.plans(),
        levels=list(levels.values()),
        edges=edges,
        macro_steps=timescales.macro_steps,
        ticks_per_macro_step=timescales.ticks_per_macro_step,
        schedule=[
            ScheduleEntry(level=name, period=timescales.periods[name], count=timescales.count(name))
            for name in nx.topological_sort(graph)
        ],
        backend=BackendPlan(name=spec.backend.name, options=dict(spec.backend.options)),
        report=spec.report,
    )
    return plan if results is None else _attach_reads(plan, results)


def _edge(spec, graph, levels, upper, lower, optimizer_reads, budget, estimates, init_reads) -> EdgePlan:
    lower_spec = graph.nodes[lower]["spec"]
    staleness = lower_spec.staleness
    if staleness is None:
        staleness = BACKEND_DEFAULT_STALENESS.get(spec.backend.name, 0)
    if graph.edges[upper, lower]["kind"] == "reads":
        return EdgePlan(
            upper=upper,
            lower=lower,
            kind="reads",
            method=MethodPlan(name="unrolled"),
            reason=(
                f"'{lower}' reads '{upper}' directly; the total derivative reaches '{upper}' through "
                f"the nested unroll of '{lower_spec.per}'"
            ),
            staleness=staleness,
            optimizer_reads=optimizer_reads,
            init_reads=init_reads,
            source=(lower_spec.loss.span if lower_spec.loss else None) or lower_spec.span,
        )
    span = (lower_spec.hypergradient.span if lower_spec.hypergradient else None) or lower_spec.per_span
    return choose_method(
        upper,
        levels[lower],
        lower_spec.hypergradient,
        optimizer_reads,
        budget,
        staleness,
        span or lower_spec.span,
        levels,
        estimates,
        init_reads,
    )


def _resolve_init_from(spec: ProblemSpec, graph: nx.DiGraph, levels: dict[str, LevelPlan]):
    """Give each ``param w = upper.v`` the shape and dtype of ``upper.v``; map edges to those reads."""
    reads: dict[tuple[str, str], list[str]] = {}
    resolved = dict(levels)
    for level in spec.levels:
        if not any(variable.init_from for variable in levels[level.name].variables):
            continue
        variables = []
        for variable in levels[level.name].variables:
            if variable.init_from is None:
                variables.append(variable)
                continue
            upper, _, name = variable.init_from.partition(".")
            param = next(p for p in level.params if p.name == variable.name)
            location = param.init.span.location() if param.init.span else None
            if upper not in per_ancestors(graph, level.name):
                raise CompileError(
                    f"param '{variable.name}' of level '{level.name}' starts from '{variable.init_from}', "
                    f"but '{upper}' is not a level above '{level.name}'",
                    location=location,
                    level=level.name,
                )
            source = {v.name: v for v in levels[upper].variables}.get(name)
            if source is None or not source.trainable:
                raise CompileError(
                    f"param '{variable.name}' of level '{level.name}' starts from '{variable.init_from}', "
                    f"which is not a trainable variable of '{upper}'",
                    location=location,
                    level=level.name,
                )
            variables.append(variable.model_copy(update={"shape": source.shape, "dtype": source.dtype}))
            reads.setdefault((upper, level.name), []).append(variable.init_from)
        resolved[level.name] = levels[level.name].model_copy(update={"variables": variables})
    return resolved, reads


def _check_staleness_paths(spec: ProblemSpec, graph: nx.DiGraph, edges: list[EdgePlan]) -> None:
    """Raise CompileError if the staleness bounds along some top-to-bottom path exceed ``max_staleness``.

    Lags compound along a path: a level may read an upper level that is itself
    behind its own upper, so the bound that matters is the sum over the path.
    """
    total = spec.backend.options.get("max_staleness")
    if total is None:
        return
    bounds = {(edge.upper, edge.lower): edge.staleness for edge in edges if edge.kind == "per"}
    worst: dict[str, tuple[int, list[str]]] = {}
    for name in nx.topological_sort(graph):
        per = graph.nodes[name]["spec"].per
        if per is None:
            worst[name] = (0, [name])
            continue
        lag, path = worst[per]
        worst[name] = (lag + bounds[(per, name)], [*path, name])
    for name, (lag, path) in worst.items():
        if lag > total:
            level = graph.nodes[name]["spec"]
            raise CompileError(
                f"staleness bounds along {' -> '.join(path)} add up to {lag}, over the backend's "
                f"max_staleness = {total}",
                location=level.staleness_span.location() if level.staleness_span else None,
                level=name,
                hint="lower the 'staleness' of a level on that path, or raise max_staleness",
            )


def _optimizer_reads(spec: ProblemSpec, graph: nx.DiGraph, levels: dict[str, LevelPlan]):
    """Map each edge to the ``upper.variable`` names that the lower level's optimizer reads."""
    reads: dict[tuple[str, str], list[str]] = {}
    for level in spec.levels:
        optimizer = level.optimizer
        for key, value in optimizer.kwargs.items():
            if not hasattr(value, "attr"):
                continue
            location = (value.span or optimizer.span).location() if (value.span or optimizer.span) else None
            if value.name not in per_ancestors(graph, level.name):
                raise CompileError(
                    f"optimizer of '{level.name}' reads '{value.dotted()}' for {key}, but "
                    f"'{value.name}' is not a level above '{level.name}'",
                    location=location,
                    level=level.name,
                    hint="an optimizer hyperparameter may read variables of the levels above only",
                )
            variables = [variable.name for variable in levels[value.name].variables]
            shapes = {variable.name: variable.shape for variable in levels[value.name].variables}
            if value.attr in shapes and math.prod(shapes[value.attr]) != 1:
                raise CompileError(
                    f"optimizer of '{level.name}' reads '{value.dotted()}' for {key}, which has shape "
                    f"{tuple(shapes[value.attr])}; a hyperparameter must be one number",
                    location=location,
                    level=level.name,
                    hint=f"declare it as zeros() or full(value) in '{value.name}'",
                )
            if value.attr not in variables:
                raise CompileError(
                    f"optimizer of '{level.name}' reads '{value.dotted()}', but level '{value.name}' "
                    f"has variables {variables}",
                    location=location,
                    level=level.name,
                )
            reads.setdefault((value.name, level.name), []).append(value.dotted())
    return reads
