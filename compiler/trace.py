"""Trace each objective with torch.fx to find which level variables its value depends on.

The objective is called once as ``loss(own, *args)`` on example inputs, the
way backends call it, through a wrapper whose arguments are the variables of
every level it takes, flattened: ``f(*flat_tensors) -> value``. ``make_fx``
records the aten operations into an fx graph in which each variable is a
placeholder and data tensors are constants. A variable is read when its
placeholder has a path to the output node.

``symbolic_trace`` cannot be used: it does not see through
``torch.func.functional_call``, which module levels run on.

Tracing mode: ``tracing_mode="real"``, the default. The objective runs once on
real tensors: the levels' initial variables and the data as loaded. In this
mode make_fx raises as soon as Python reads a value out of a traced tensor
(``bool(t)``, ``.item()``, ``float(t)``), which is exactly data-dependent
control flow on a variable. Branches on data alone run normally, because data
tensors are untraced constants. ``"fake"`` mode would skip the computation
but would also reject every branch on a data value, and it cannot take real
data tensors as constants without letting non-fake inputs through, which this
pass does not do. Guards are never turned off.

A failed trace falls back to "reads every declared variable" and records why,
with the objective's line. Optimizer hyperparameters that read an upper
variable are not part of the objective; the compiler records them separately
as ``EdgePlan.optimizer_reads``.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import torch
from torch import fx, nn
from torch.fx.experimental.proxy_tensor import make_fx
from torch.func import functionalize

from chronos.compiler.plan import EdgePlan, LevelPlan, Plan
from chronos.compiler.resolve import import_ref
from chronos.errors import CompileError
from chronos.views import LevelView

__all__ = [
    "MAX_TRACE_ELEMENTS",
    "DependencyWarning",
    "TraceResult",
    "check_reads",
    "trace_objective",
    "trace_plan",
]

logger = logging.getLogger(__name__)

# Tracing runs the objective once on real tensors, so it allocates every
# variable of the levels involved. Above 50 million elements (200 MB of
# float32, before any activations) one trace would take seconds and memory
# that compile should not spend, so the objective is not traced.
MAX_TRACE_ELEMENTS = 50_000_000

# Operations whose output depends on the shape, dtype and device of an input
# but not on its values, such as zeros_like(upper.x). The graph walk does not
# follow their inputs.
_METADATA_ONLY_OPS = frozenset(
    {
        torch.ops.aten.empty_like,
        torch.ops.aten.zeros_like,
        torch.ops.aten.ones_like,
        torch.ops.aten.full_like,
        torch.ops.aten.rand_like,
        torch.ops.aten.randn_like,
        torch.ops.aten.new_empty,
        torch.ops.aten.new_zeros,
        torch.ops.aten.new_ones,
        torch.ops.aten.new_full,
    }
)


class DependencyWarning(UserWarning):
    """A declared edge that an objective never uses, so no hypergradient flows along it."""


@dataclass(frozen=True)
class TraceResult:
    """Which variables one level's objective reads, as ``"level.variable"`` names.

    ``reads`` holds variables of the other levels the objective takes and
    ``own_reads`` the level's own. When ``traced`` is False both hold every
    declared variable of those levels, and ``reason`` says why tracing failed
    or was skipped.
    """

    level: str
    reads: frozenset[str]
    own_reads: frozenset[str]
    traced: bool
    reason: Optional[str] = None


@dataclass
class _Example:
    """Example inputs of one level: its initial variables, keyed by name, and its module."""

    plan: LevelPlan
    tensors: dict[str, torch.Tensor]
    module: Optional[nn.Module]
    module_keys: Optional[frozenset[str]]

    def view(self, flat: Mapping[str, torch.Tensor]) -> LevelView:
        trainable = {variable.name for variable in self.plan.variables if variable.trainable}
        params = {key: value for key, value in flat.items() if key in trainable}
        constants = {key: value for key, value in flat.items() if key not in trainable}
        return LevelView(self.plan.name, params, constants, self.module, self.module_keys)


def trace_plan(plan: Plan, data: Mapping[str, Any]) -> dict[str, TraceResult]:
    """Trace the objective of every level of ``plan``; return the results by level name.

    ``data`` maps each data set name to the value its data function returned.
    Each level's example inputs are built once and shared by every objective
    that takes the level.

    Raises:
        CompileError: an objective takes a data set that ``data`` lacks.
    """
    started = time.perf_counter()
    levels = {level.name: level for level in plan.levels}
    examples: dict[str, _Example] = {}
    results = {level.name: _trace(level, levels, data, examples) for level in plan.levels}
    logger.info(
        "traced %d of %d objective(s) of problem '%s' in %.3f s",
        sum(result.traced for result in results.values()),
        len(results),
        plan.problem,
        time.perf_counter() - started,
    )
    return results


def trace_objective(level: LevelPlan, levels: dict[str, LevelPlan], data: Mapping[str, Any]) -> TraceResult:
    """Trace the objective of ``level``; ``levels`` holds every level it takes, by name.

    Raises:
        CompileError: the objective takes a data set that ``data`` lacks.
    """
    return _trace(level, levels, data, {})


def _trace(
    level: LevelPlan,
    levels: Mapping[str, LevelPlan],
    data: Mapping[str, Any],
    examples: dict[str, _Example],
) -> TraceResult:
    involved = _involved_levels(level)
    keys = [(name, variable.name) for name in involved for variable in levels[name].variables]
    elements = sum(variable.numel() for name in involved for variable in levels[name].variables)
    if elements > MAX_TRACE_ELEMENTS:
        reason = (
            f"the variables of levels {', '.join(involved)} hold {elements} elements, over the "
            f"tracing limit of {MAX_TRACE_ELEMENTS}"
        )
        return _fallback(level, keys, reason)

    for name in involved:
        if name not in examples:
            examples[name] = _example(levels[name])
    loss = import_ref(level.loss.ref, what="objective")
    call = _flat_objective(level, examples, involved, _data_args(level, data), loss)
    flat = [examples[name].tensors[variable] for name, variable in keys]
    try:
        graph = _trace_graph(call, flat)
    except Exception as error:  # any failure of the user's code or of the tracer
        return _fallback(level, keys, _failure_reason(level, loss, error))

    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    if len(placeholders) != len(flat):
        reason = f"the traced graph has {len(placeholders)} inputs for {len(flat)} variables"
        return _fallback(level, keys, reason)
    reached = _nodes_reaching_output(graph)
    read = [key for key, node in zip(keys, placeholders) if node in reached]
    result = _result(level, read, traced=True)
    logger.debug("objective of level '%s' reads %s", level.name, sorted(result.reads | result.own_reads))
    return result


def _involved_levels(level: LevelPlan) -> list[str]:
    """Return the level itself, then each level its objective takes, once each."""
    names = [level.name]
    for kind, name in level.loss.args:
        if kind == "level" and name not in names:
            names.append(name)
    return names


def _data_args(level: LevelPlan, data: Mapping[str, Any]) -> dict[str, Any]:
    values = {}
    for kind, name in level.loss.args:
        if kind != "data":
            continue
        if name not in data:
            raise CompileError(
                f"cannot trace the objective of level '{level.name}': data set '{name}' was not loaded",
                level=level.name,
                hint="pass every data set the objectives take to trace_plan",
            )
        values[name] = data[name]
    return values


def _example(plan: LevelPlan) -> _Example:
    """Build the level's initial variables, as backends do, with trainable ones requiring grad."""
    from chronos.backends.materialize import _initial_tensor
    from chronos.functional import split_module

    module = None
    module_keys = None
    state: dict[str, torch.Tensor] = {}
    if plan.module is not None:
        module = import_ref(plan.module, what="module factory")()
        params, constants = split_module(module)
        module_keys = frozenset([*params, *constants])
        state = {**params, **constants}
    tensors = {}
    for variable in plan.variables:
        if variable.init is not None:
            tensor = _initial_tensor(variable)
        elif variable.name in state:
            tensor = state[variable.name].detach()
        else:
            raise CompileError(
                f"module factory \"{plan.module}\" of level '{plan.name}' returned a module without "
                f"variable '{variable.name}'; the plan lists {[v.name for v in plan.variables]}",
                level=plan.name,
                hint="make the factory return the same module on every call",
            )
        tensors[variable.name] = tensor.requires_grad_(variable.trainable and tensor.is_floating_point())
    return _Example(plan=plan, tensors=tensors, module=module, module_keys=module_keys)


def _flat_objective(
    level: LevelPlan,
    examples: Mapping[str, _Example],
    involved: list[str],
    data: Mapping[str, Any],
    loss: Callable[..., Any],
) -> Callable[..., Any]:
    """Wrap ``loss`` as ``f(*flat)``, with flat holding the variables of ``involved`` in plan order."""

    def call(*flat: torch.Tensor) -> Any:
        views: dict[str, LevelView] = {}
        position = 0
        for name in involved:
            example = examples[name]
            count = len(example.plan.variables)
            names = [variable.name for variable in example.plan.variables]
            views[name] = example.view(dict(zip(names, flat[position : position + count])))
            position += count
        args = [views[name] if kind == "level" else data[name] for kind, name in level.loss.args]
        return loss(views[level.name], *args)

    return call


def _trace_graph(call: Callable[..., Any], flat: list[torch.Tensor]) -> fx.Graph:
    """Trace ``call``; retrace it functionalized when the first graph mutates a tensor in place.

    An in-place write through a view (``out[:, 0] = upper.x``) is recorded
    on the view, and a later read of the base tensor does not link to it, so
    the graph walk would miss the read. Functionalization rewrites mutations
    as out-of-place operations, which makes every such read a graph edge. It
    is not the default because it rejects ``torch.autograd.grad`` inside an
    objective (a gradient penalty), which the plain trace records.
    """
    graph = make_fx(call)(*flat).graph
    if any(_mutates(node) for node in graph.nodes):
        graph = make_fx(functionalize(call))(*flat).graph
    return graph


def _mutates(node: fx.Node) -> bool:
    target = node.target
    return node.op == "call_function" and isinstance(target, torch._ops.OpOverload) and target._schema.is_mutable


def _nodes_reaching_output(graph: fx.Graph) -> set[fx.Node]:
    """Return every node with a path to the output node, skipping inputs of metadata-only ops."""
    output = next(node for node in reversed(graph.nodes) if node.op == "output")
    reached: set[fx.Node] = set()
    pending = [output]
    while pending:
        node = pending.pop()
        if node in reached:
            continue
        reached.add(node)
        if getattr(node.target, "overloadpacket", None) in _METADATA_ONLY_OPS:
            continue
        pending.extend(node.all_input_nodes)
    return reached


def _result(level: LevelPlan, read: list[tuple[str, str]], *, traced: bool, reason: Optional[str] = None):
    return TraceResult(
        level=level.name,
        reads=frozenset(f"{name}.{variable}" for name, variable in read if name != level.name),
        own_reads=frozenset(f"{name}.{variable}" for name, variable in read if name == level.name),
        traced=traced,
        reason=reason,
    )


def _fallback(level: LevelPlan, keys: list[tuple[str, str]], reason: str) -> TraceResult:
    logger.info(
        "objective of level '%s' was not traced, so it is assumed to read every declared variable: %s",
        level.name,
        reason,
    )
    return _result(level, keys, traced=False, reason=reason)


def _failure_reason(level: LevelPlan, loss: Callable[..., Any], error: Exception) -> str:
    """Describe a failed trace: what failed and the objective's line that was running."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if "_local_scalar_dense" in message or "DataDependent" in type(error).__name__:
        what = (
            "it reads the value of a variable in Python (data-dependent control flow such as "
            "'if x.sum() > 0:', .item() or float())"
        )
    else:
        what = f"it raised {type(error).__name__}: {message[:200]}"
    frame = _objective_frame(loss, error)
    where = f" at {frame.filename}:{frame.lineno}: {(frame.line or '').strip()}" if frame is not None else ""
    return f"objective \"{level.loss.ref}\" of level '{level.name}' could not be traced: {what}{where}"


def _objective_frame(loss: Callable[..., Any], error: BaseException) -> Optional[traceback.FrameSummary]:
    """Return the innermost traceback frame in the objective's source file, or None."""
    try:
        source = inspect.getsourcefile(inspect.unwrap(loss))
    except TypeError:
        return None
    if source is None:
        return None
    source = os.path.realpath(source)
    current: Optional[BaseException] = error
    while current is not None:
        frames = [
            frame
            for frame in traceback.extract_tb(current.__traceback__)
            if os.path.realpath(frame.filename) == source
        ]
        if frames:
            return frames[-1]
        current = current.__cause__ or current.__context__
    return None


def check_reads(plan: Plan, results: Mapping[str, TraceResult]) -> list[str]:
    """Warn about edges that no objective uses; return one note per edge for ``chronos explain``.

    An edge ``upper -> lower`` gets a DependencyWarning when the objective of
    ``lower`` reads no trainable variable of ``upper`` and its optimizer reads
    none either (the hypergradient of ``upper`` through ``lower`` is then
    zero), and when the objective of ``upper`` reads no trainable variable of
    ``lower`` (no hypergradient reaches ``upper``). A level absent from
    ``results`` is treated as reading everything.

    An objective cannot read a variable that the spec never declared: a
    LevelView exposes only the variables of the level passed as that
    argument, and reading any other name raises at the call. So there is no
    undeclared-read error to check for here.
    """
    notes = []
    for edge in plan.edges:
        upper = plan.level(edge.upper)
        lower = plan.level(edge.lower)
        lower_result = results.get(edge.lower)
        upper_result = results.get(edge.upper)
        lower_reads = _reads_of(lower_result, upper)
        upper_reads = _reads_of(upper_result, lower)
        if lower_result is not None and not lower_reads and not edge.optimizer_reads:
            _warn_unread(edge, reader=lower, read=upper, result=lower_result)
        if upper_result is not None and not upper_reads:
            _warn_unread(edge, reader=upper, read=lower, result=upper_result)
        notes.append(_note(edge, lower_result, upper_result))
    return notes


def _trainable(level: LevelPlan) -> list[str]:
    return [f"{level.name}.{variable.name}" for variable in level.variables if variable.trainable]


def _reads_of(result: Optional[TraceResult], other: LevelPlan) -> list[str]:
    """Return the trainable variables of ``other`` that ``result`` reads; all of them if no result."""
    trainable = _trainable(other)
    if result is None:
        return trainable
    return [name for name in trainable if name in result.reads]


def _warn_unread(edge: EdgePlan, *, reader: LevelPlan, read: LevelPlan, result: TraceResult) -> None:
    taken = any(kind == "level" and name == read.name for kind, name in reader.loss.args)
    argument = "" if taken else f" (it does not take '{read.name}' as an argument)"
    variables = ", ".join(_trainable(read)) or "none"
    if reader.name == edge.lower:
        consequence = (
            f"and its optimizer reads none either, so the hypergradient of '{edge.upper}' "
            f"through '{edge.lower}' is always zero"
        )
        hint = f"read an upper variable in the objective, or drop 'per {edge.upper}' from '{edge.lower}'"
    else:
        consequence = f"so no hypergradient reaches '{edge.upper}' through '{edge.lower}'"
        hint = f"use the variables of '{edge.lower}' in the objective, or drop 'per {edge.upper}' from '{edge.lower}'"
    message = (
        f"edge {edge.upper} -> {edge.lower}: the objective \"{reader.loss.ref}\" of level "
        f"'{reader.name}' never reads a trainable variable of level '{read.name}' "
        f"(trainable variables: {variables}){argument}, {consequence}; {hint}"
    )
    warnings.warn(message, DependencyWarning, stacklevel=_caller_stacklevel())


def _caller_stacklevel() -> int:
    """Return the stacklevel, for the function calling this one, of the first frame outside Chronos.

    compile_spec is reached through compile_file, chronos.compile or the CLI,
    so a fixed stacklevel would point at a different frame for each.
    """
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and _in_chronos(frame):
        frame = frame.f_back
        level += 1
    return level


def _in_chronos(frame) -> bool:
    module = frame.f_globals.get("__name__", "")
    return module == "chronos" or module.startswith("chronos.")


def _note(edge: EdgePlan, lower_result: Optional[TraceResult], upper_result: Optional[TraceResult]) -> str:
    parts = [
        _describe(lower_result, edge.lower, edge.upper),
        _describe(upper_result, edge.upper, edge.lower),
    ]
    if edge.optimizer_reads:
        parts.append(f"optimizer of '{edge.lower}' reads {', '.join(edge.optimizer_reads)}")
    return f"{edge.upper} -> {edge.lower}: " + "; ".join(parts)


def _describe(result: Optional[TraceResult], reader: str, other: str) -> str:
    if result is None:
        return f"objective of '{reader}' not traced"
    read = sorted(name for name in result.reads if name.startswith(f"{other}."))
    listed = ", ".join(read) if read else f"no variable of '{other}'"
    if result.traced:
        return f"objective of '{reader}' reads {listed}"
    return f"objective of '{reader}' is assumed to read {listed} (not traced: {result.reason})"
