"""The level graph: a networkx DiGraph of levels and the edges between them.

Each ``per`` clause gives an edge ``upper -> lower`` of kind ``"per"``; these
edges form a tree that fixes timing and nesting. A level whose objective or
optimizer reads a level further above it (not its ``per`` level) gets one more
upper level: an edge of kind ``"reads"``. So a level may have several upper
levels and several lower levels, and the graph is a DAG, not only a tree.

Node attribute ``spec`` is the :class:`~chronos.spec.LevelSpec`; edge
attribute ``spec`` is the lower level's spec and ``kind`` the edge kind.
"""

from __future__ import annotations

import networkx as nx

from chronos.errors import CompileError, did_you_mean
from chronos.spec import LevelSpec, Name, ProblemSpec, SourceSpan

__all__ = ["build_level_graph", "per_ancestors", "per_upper", "validate_graph"]


def _loc(span: SourceSpan | None):
    return span.location() if span is not None else None


def build_level_graph(spec: ProblemSpec) -> nx.DiGraph:
    """Build the level graph; raise CompileError for self-edges, unknown levels and cycles."""
    graph = nx.DiGraph()
    for level in spec.levels:
        graph.add_node(level.name, spec=level)
    names = [level.name for level in spec.levels]
    for level in spec.levels:
        if level.per is None:
            continue
        if level.per == level.name:
            raise CompileError(
                f"level '{level.name}' is timed 'per {level.name}', an edge to itself",
                location=_loc(level.per_span or level.span),
                level=level.name,
                hint="name the level above this one after 'per'",
            )
        if level.per not in graph:
            raise CompileError(
                f"level '{level.name}' is timed per unknown level '{level.per}'"
                f"{did_you_mean(level.per, names)}",
                location=_loc(level.per_span or level.span),
                level=level.name,
            )
        graph.add_edge(level.per, level.name, spec=level, kind="per")
    _reject_cycles(graph)
    _add_read_edges(graph, spec)
    validate_graph(graph)
    return graph


def per_upper(graph: nx.DiGraph, name: str) -> str | None:
    """Return the level that ``name`` is timed ``per``, or None for a top level."""
    return graph.nodes[name]["spec"].per


def per_ancestors(graph: nx.DiGraph, name: str) -> list[str]:
    """Return the chain of ``per`` levels above ``name``, nearest first."""
    chain = []
    upper = per_upper(graph, name)
    while upper is not None:
        chain.append(upper)
        upper = per_upper(graph, upper)
    return chain


def _add_read_edges(graph: nx.DiGraph, spec: ProblemSpec) -> None:
    for level in spec.levels:
        ancestors = per_ancestors(graph, level.name)
        names = [arg.name for arg in level.loss.args] if level.loss else []
        if level.optimizer is not None:
            names += [value.name for value in level.optimizer.kwargs.values() if isinstance(value, Name)]
        names += [param.init.name for param in level.params if isinstance(param.init, Name)]
        for name in names:
            if name in ancestors[1:] and not graph.has_edge(name, level.name):
                graph.add_edge(name, level.name, spec=level, kind="reads")


def _reject_cycles(graph: nx.DiGraph) -> None:
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    path = " -> ".join([edge[0] for edge in cycle] + [cycle[0][0]])
    first: LevelSpec = graph.nodes[cycle[0][1]]["spec"]
    raise CompileError(
        f"the levels form a cycle: {path}",
        location=_loc(first.per_span or first.span),
        level=first.name,
        hint="levels must form a DAG; remove one 'per' clause on the cycle",
    )


def validate_graph(graph: nx.DiGraph) -> None:
    """Check the graph's invariants; raise CompileError naming the level or edge.

    Invariants: the graph is acyclic. Every upper level's objective reads each
    of its lower levels or a level below that one. Objectives read only levels
    above or below them. In a problem of several levels, every level is linked.
    """
    if not nx.is_directed_acyclic_graph(graph):
        _reject_cycles(graph)
    for upper, lower, kind in graph.edges(data="kind"):
        if kind != "per":
            continue
        upper_spec: LevelSpec = graph.nodes[upper]["spec"]
        if upper_spec.loss is not None and not _reads_subtree(graph, upper_spec, lower):
            raise CompileError(
                f"the objective of level '{upper}' reads neither its lower level '{lower}' nor a "
                f"level below it, so no hypergradient can reach '{upper}' through it",
                location=_loc(upper_spec.loss.span or upper_spec.span),
                edge=(upper, lower),
                hint=f"pass {lower} to the loss of '{upper}', or drop 'per {upper}' from '{lower}'",
            )
    for name in graph.nodes:
        spec: LevelSpec = graph.nodes[name]["spec"]
        # Levels above or below ``name``, searched only for an argument that is
        # not a direct upper or lower level. A search from every level would
        # cost levels x depth steps, which is quadratic on a chain.
        related: set[str] | None = None
        for other in _level_args(spec, graph):
            if other == name:
                raise CompileError(
                    f"the objective of level '{name}' lists the level itself; it is always "
                    "passed first, so drop it from the arguments",
                    location=_loc(spec.loss.span if spec.loss else spec.span),
                    level=name,
                )
            if graph.has_edge(name, other) or graph.has_edge(other, name):
                continue
            if related is None:
                related = nx.ancestors(graph, name) | nx.descendants(graph, name)
            if other not in related:
                raise CompileError(
                    f"the objective of level '{name}' reads level '{other}', which is neither "
                    f"above nor below it",
                    location=_loc(spec.loss.span if spec.loss else spec.span),
                    level=name,
                    hint=f"link them with 'steps = N per {other}' in '{name}' or the reverse",
                )
        if graph.number_of_nodes() > 1 and graph.degree(name) == 0:
            raise CompileError(
                f"level '{name}' is not linked to any other level: no objective uses it",
                location=_loc(spec.span),
                level=name,
                hint="give it 'steps = N per UPPER' or remove it",
            )


def _reads_subtree(graph: nx.DiGraph, upper_spec: LevelSpec, lower: str) -> bool:
    """Return whether the objective of ``upper_spec`` reads ``lower`` or a level below it."""
    args = _level_args(upper_spec, graph)
    if lower in args:
        return True  # the usual case, without a search below ``lower``
    return not nx.descendants(graph, lower).isdisjoint(args)


def _level_args(spec: LevelSpec, graph: nx.DiGraph) -> list[str]:
    if spec.loss is None:
        return []
    return [arg.name for arg in spec.loss.args if arg.name in graph]
