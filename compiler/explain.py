"""Render a plan for people: a text report and the level graph as DOT or PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Union

from chronos.compiler.plan import Plan
from chronos.errors import PlanError

__all__ = ["explain", "render_graph", "to_dot"]


def _bytes(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count} B"


def _hyper(value) -> str:
    return value.ref if value.ref is not None else f"{value.value:g}"


def explain(plan: Plan) -> str:
    """Return a text report: levels, edges with methods and reasons, and the schedule."""
    lines = [f"problem {plan.problem}" + (f"  (from {plan.source})" if plan.source else "")]
    lines.append(f"backend {plan.backend.name}; {plan.macro_steps} macro step(s) of {plan.ticks_per_macro_step} tick(s)")
    lines.append("")
    lines.append("levels:")
    for level in plan.levels:
        timing = f"{level.steps} per {level.per}" if level.per else f"{level.steps} total"
        hyper = ", ".join(f"{key} = {_hyper(value)}" for key, value in level.optimizer.hyperparameters.items())
        lines.append(
            f"  {level.name}: steps {timing}, period {level.period} tick(s), "
            f"optimizer {level.optimizer.name}({hyper})"
        )
        for variable in level.variables:
            shape = "x".join(str(size) for size in variable.shape) or "scalar"
            frozen = "" if variable.trainable else ", constant"
            start = f", starts from {variable.init_from}" if variable.init_from else ""
            lines.append(f"      {variable.name}: {shape} {variable.dtype}{frozen}{start}")
        args = ", ".join(name for _, name in level.loss.args)
        lines.append(f"      objective {level.loss.ref}({level.name}{', ' + args if args else ''})")
    lines.append("")
    lines.append("edges:")
    if not plan.edges:
        lines.append("  (none: a single level)")
    for edge in plan.edges:
        kind = " (reads)" if edge.kind == "reads" else ""
        lines.append(f"  {edge.upper} -> {edge.lower}{kind}: {edge.method.describe()} (requested {edge.requested})")
        lines.append(f"      reason: {edge.reason}")
        lines.append(f"      staleness bound {edge.staleness}")
        if edge.optimizer_reads:
            lines.append(f"      optimizer reads {', '.join(edge.optimizer_reads)}")
        if edge.init_reads:
            lines.append(f"      starts from {', '.join(edge.init_reads)}")
        if edge.dependencies:
            lines.append(f"      traced: {edge.dependencies.split(': ', 1)[-1]}")
        if edge.unrolled_bytes is not None:
            lines.append(f"      estimated full-unroll memory {_bytes(edge.unrolled_bytes)}")
    lines.append("")
    lines.append("schedule (one macro step):")
    for entry in plan.schedule:
        lines.append(f"  {entry.level}: every {entry.period} tick(s), {entry.count} time(s)")
    return "\n".join(lines) + "\n"


def to_dot(plan: Plan) -> str:
    """Return the level graph in Graphviz DOT, edges labelled with their method."""
    lines = [f"digraph {_quote(plan.problem)} {{", "  rankdir=TB;", "  node [shape=box];"]
    for level in plan.levels:
        # DOT's escape for a line break inside a label is the two characters backslash, n.
        label = _quote(level.name)[:-1] + f'\\nsteps {level.steps}, period {level.period}"'
        lines.append(f"  {_quote(level.name)} [label={label}];")
    for edge in plan.edges:
        style = ", style=dashed" if edge.kind == "reads" else ""
        lines.append(f"  {_quote(edge.upper)} -> {_quote(edge.lower)} [label={_quote(edge.method.describe())}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """Quote ``text`` as a DOT identifier: backslashes and double quotes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_graph(plan: Plan, path: Union[str, Path]) -> Path:
    """Write the level graph to ``path``: ``.dot`` as DOT text, ``.png`` drawn with matplotlib."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".dot":
        path.write_text(to_dot(plan), encoding="utf-8")
        return path
    if path.suffix != ".png":
        raise PlanError(f"cannot render the level graph to '{path}': use a .dot or .png file name")
    _draw_png(plan, path)
    return path


def _draw_png(plan: Plan, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    graph = nx.DiGraph()
    for level in plan.levels:
        graph.add_node(level.name)
    for edge in plan.edges:
        graph.add_edge(edge.upper, edge.lower, label=edge.method.describe(), kind=edge.kind)
    depth = {}
    for name in nx.topological_sort(graph):
        depth[name] = max((depth[upper] + 1 for upper in graph.predecessors(name)), default=0)
    rows: dict[int, list[str]] = {}
    for name, row in depth.items():
        rows.setdefault(row, []).append(name)
    position = {
        name: (index - (len(names) - 1) / 2, -row) for row, names in rows.items() for index, name in enumerate(names)
    }
    figure, axes = plt.subplots(figsize=(max(4, 2 * max(len(n) for n in rows.values())), 1.8 * (len(rows) + 1)))
    labels = {level.name: f"{level.name}\nsteps {level.steps}, period {level.period}" for level in plan.levels}
    nx.draw_networkx_nodes(graph, position, ax=axes, node_shape="s", node_color="#dde8f5", node_size=3200)
    nx.draw_networkx_labels(graph, position, labels=labels, ax=axes, font_size=8)
    per = [(u, v) for u, v, kind in graph.edges(data="kind") if kind == "per"]
    reads = [(u, v) for u, v, kind in graph.edges(data="kind") if kind == "reads"]
    nx.draw_networkx_edges(graph, position, edgelist=per, ax=axes, node_size=3200, node_shape="s", arrows=True)
    # A "reads" edge skips levels and would lie under the per edges of the same
    # column, so it is drawn curved and dashed, with its label on the curve.
    nx.draw_networkx_edges(
        graph, position, edgelist=reads, ax=axes, node_size=3200, node_shape="s", arrows=True,
        style="dashed", connectionstyle="arc3,rad=0.35",
    )
    edge_labels = nx.get_edge_attributes(graph, "label")
    nx.draw_networkx_edge_labels(graph, position, edge_labels={e: edge_labels[e] for e in per}, ax=axes, font_size=8)
    if reads:
        nx.draw_networkx_edge_labels(
            graph, position, edge_labels={e: f"reads: {edge_labels[e]}" for e in reads}, ax=axes, font_size=8,
            connectionstyle="arc3,rad=0.35",
        )
    axes.set_title(f"problem {plan.problem}")
    axes.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
