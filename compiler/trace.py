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
real tensors: the levels' initial variables and the data as loaded, so it
takes one evaluation of the objective. In this mode make_fx (torch 2.13)
raises as soon as Python reads a value out of a tensor computed during the
trace (``bool(t)``, ``.item()``, ``float(t)``), which is how data-dependent
control flow shows. That includes branches on a value computed from data
alone, which therefore fall back too. ``"fake"`` mode would skip the
computation, but it rejects the real data tensors that objectives capture
unless non-fake inputs are allowed through, which this pass never does.
Guards are never turned off.

The first trace in a process imports torch._dynamo and sympy. That took
about 2 s on a 2-core CPU machine, and later traces of the small objectives
in tests/toy.py took about 5 to 20 ms each there.

A failed trace falls back to "reads every declared variable" and records why,
with the objective's line. Optimizer hyperparameters that read an upper
variable are not part of the objective, so the compiler records them
separately, as ``EdgePlan.optimizer_reads``.
"""

from __future__ import annotations

import dataclasses

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
from chronos.errors import ChronosError, CompileError
from chronos.views import LevelView

__all__ = [
    "MAX_TRACE_ELEMENTS",
    "DependencyWarning",
    "TraceResult",
    "check_reads",
    "objective_reads",
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
    """The variables one level's objective reads, as ``"level.variable"`` names.

    ``reads`` contains variables of the other levels the objective takes,
    and ``own_reads`` contains the level's own. When ``traced`` is False,
    both contain every declared variable of those levels, and ``reason``
    gives why tracing failed or was skipped, with the objective's
    ``file:line`` when the failure happened inside it. ``forward_bytes`` is
    the size of the tensors one evaluation of the objective creates (views
    excluded), from the traced graph; None when not traced.
    """

    level: str
    reads: frozenset[str]
    own_reads: frozenset[str]
    traced: bool
    reason: Optional[str] = None
    forward_bytes: Optional[int] = None


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
    """Trace the objective of every level of ``plan`` and return the results by level name.

    ``data`` maps each data set name to the value its data function returned.
    Each level's example inputs are built once and shared by every objective
    that takes the level.

    Raises:
        CompileError: an objective takes a data set that ``data`` lacks.
    """
    started = time.perf_counter()
    levels = {level.name: level for level in plan.levels}
    examples: dict[str, _Example] = {}
    memo: dict[tuple, TraceResult] = {}
    results = {level.name: _trace_memoized(level, levels, data, examples, memo) for level in plan.levels}
    logger.info(
        "traced %d of %d objective(s) of problem '%s' in %.3f s",
        sum(result.traced for result in results.values()),
        len(results),
        plan.problem,
        time.perf_counter() - started,
    )
    return results


def trace_objective(level: LevelPlan, levels: dict[str, LevelPlan], data: Mapping[str, Any]) -> TraceResult:
    """Trace the objective of ``level``. ``levels`` maps the name of every level it takes to its plan.

    Raises:
        CompileError: the objective takes a data set that ``data`` lacks.
    """
    return _trace(level, levels, data, {})


def _trace_memoized(
    level: LevelPlan,
    levels: Mapping[str, LevelPlan],
    data: Mapping[str, Any],
    examples: dict[str, _Example],
    memo: dict[tuple, TraceResult],
) -> TraceResult:
    """Trace ``level``, or reuse the trace of an earlier level of the same structure.

    Two levels have the same structure when they call the same objective on
    the same data sets with levels whose variables match in name, shape,
    dtype and trainability, in the same positions. The traced graph depends
    only on that, so the reads carry over with the level names replaced. Large
    generated specs repeat a few objectives many times; this keeps tracing
    them linear in the number of distinct objectives.
    """
    involved = _involved_levels(level)
    key = (
        level.loss.ref,
        tuple(kind if kind == "level" else name for kind, name in level.loss.args),
        tuple(_structure(levels[name]) for name in involved),
    )
    cached = memo.get(key)
    if cached is None:
        memo[key] = result = _trace(level, levels, data, examples)
        return result
    renamed = dict(zip(_involved_levels(levels[cached.level]), involved))
    return TraceResult(
        level=level.name,
        reads=frozenset(_rename(name, renamed) for name in cached.reads),
        own_reads=frozenset(_rename(name, renamed) for name in cached.own_reads),
        traced=cached.traced,
        reason=cached.reason,
        forward_bytes=cached.forward_bytes,
    )


def _structure(level: LevelPlan) -> tuple:
    variables = tuple((v.name, tuple(v.shape), v.dtype, v.trainable) for v in level.variables)
    return (level.module, variables)


def _rename(qualified: str, renamed: Mapping[str, str]) -> str:
    level, _, variable = qualified.partition(".")
    return f"{renamed[level]}.{variable}"


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
    loss = import_ref(level.loss.ref, role="objective")
    call = _flat_objective(level, examples, involved, _data_args(level, data), loss)
    flat = [examples[name].tensors[variable] for name, variable in keys]
    try:
        graph = _trace_graph(call, flat)
    except ChronosError as error:
        # A view raised: the objective reads a variable or a module that the
        # level does not have. Every run would fail the same way, so raise at compile time.
        raise CompileError(
            f"objective \"{level.loss.ref}\" of level '{level.name}' failed on example inputs: {error.message}",
            location=level.source.location() if level.source else None,
            level=level.name,
            hint=error.hint,
        ) from error
    except Exception as error:  # any failure of the user's code or of the tracer
        return _fallback(level, keys, _failure_reason(level, loss, error))

    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    if len(placeholders) != len(flat):
        reason = f"the traced graph has {len(placeholders)} inputs for {len(flat)} variables"
        return _fallback(level, keys, reason)
    reached = _nodes_reaching_output(graph)
    read = [key for key, node in zip(keys, placeholders) if node in reached]
    result = dataclasses.replace(_result(level, read, traced=True), forward_bytes=_forward_bytes(graph))
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
        module = import_ref(plan.module, role="module factory")()
        params, constants = split_module(module)
        module_keys = frozenset([*params, *constants])
        state = {**params, **constants}
    tensors = {}
    for variable in plan.variables:
        if variable.init is not None:
            tensor = _initial_tensor(variable)
        elif variable.init_from is not None:
            tensor = torch.zeros(variable.shape, dtype=getattr(torch, variable.dtype))
        elif variable.name in state:
            tensor = state[variable.name].detach()
        else:
            raise CompileError(
                f"module factory \"{plan.module}\" of level '{plan.name}' returned a module without "
                f"variable '{variable.name}'; the plan lists {[entry.name for entry in plan.variables]}",
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
    """Trace ``call``, and trace it again functionalized when the first graph mutates a tensor in place.

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


def _forward_bytes(graph: fx.Graph) -> int:
    """Sum the bytes of the tensors that the graph's operations create; views share storage and count 0."""
    total = 0
    for node in graph.nodes:
        if node.op != "call_function" or getattr(node.target, "is_view", False):
            continue
        value = node.meta.get("val")
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
    return total


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


def _result(
    level: LevelPlan, read: list[tuple[str, str]], *, traced: bool, reason: Optional[str] = None
) -> TraceResult:
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
    """Describe a failed trace: the objective's line that was running and what failed there."""
    text = str(error).strip()
    # make_fx in real mode raises RuntimeError naming aten._local_scalar_dense when
    # Python reads a traced tensor's value; the other modes raise *DataDependent* errors.
    if "_local_scalar_dense" in text or "DataDependent" in type(error).__name__:
        failure = (
            "the objective reads a tensor's value in Python, as data-dependent control flow "
            "(if x.sum() > 0:), .item() and float() do"
        )
    else:
        first_line = text.splitlines()[0] if text else ""
        failure = f"{type(error).__name__}: {first_line[:200]}"
    frame = _objective_frame(loss, error)
    where = f" at {frame.filename}:{frame.lineno} (`{(frame.line or '').strip()}`)" if frame is not None else ""
    return f"tracing objective \"{level.loss.ref}\" of level '{level.name}' failed{where}: {failure}"


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
    """Warn about edges that no objective uses, and return one note per edge for ``chronos explain``.

    The subtree of ``lower`` is ``lower`` and every level timed under it. An
    edge ``upper -> lower`` of kind ``per`` gets a DependencyWarning in two
    cases. First, when no objective or optimizer in the subtree reads a
    trainable variable of ``upper``: the hypergradient of ``upper`` through
    ``lower`` is then zero. Second, when the objective of ``upper`` reads no
    trainable variable of the subtree: then no hypergradient reaches
    ``upper`` through it. An edge of kind ``reads`` gets a DependencyWarning
    when neither the objective nor the optimizer of ``lower`` reads a
    trainable variable of ``upper``. A level absent from ``results`` counts
    as reading everything.

    An objective cannot read a variable that the spec never declared: a
    LevelView exposes only the variables of the level passed as that
    argument, and reading any other name raises at the call. So there is no
    undeclared-read error to check for here.
    """
    levels = {level.name: level for level in plan.levels}
    timed_under: dict[str, list[str]] = {}
    for level in plan.levels:
        if level.per is not None:
            timed_under.setdefault(level.per, []).append(level.name)
    for level in plan.levels:
        if level.name not in timed_under:
            _warn_unused_own(level, results.get(level.name))
    notes = []
    for edge in plan.edges:
        upper = levels[edge.upper]
        names = [edge.lower] if edge.kind == "reads" else _subtree(timed_under, edge.lower)
        readers = [levels[name] for name in names]
        if not any(_reads_of(results.get(reader.name), reader, upper) for reader in readers):
            _warn_lower_side(edge, upper, readers)
        if edge.kind == "per" and not _objective_reads(results.get(upper.name), readers, trainable=True):
            _warn_upper_side(edge, upper, readers)
        notes.append(_note(edge, upper, readers, results))
    return notes


def objective_reads(result: TraceResult, upper: str) -> list[str]:
    """Return the variables of level ``upper`` that the traced objective reads, sorted, for ``EdgePlan``."""
    return sorted(name for name in result.reads if name.startswith(f"{upper}."))


def _subtree(timed_under: Mapping[str, list[str]], name: str) -> list[str]:
    """Return ``name`` and every level timed under it through ``per``, nearest first."""
    names = [name]
    for current in names:
        names.extend(timed_under.get(current, ()))
    return names


def _trainable(level: LevelPlan) -> list[str]:
    return [f"{level.name}.{variable.name}" for variable in level.variables if variable.trainable]


def _optimizer_refs(reader: LevelPlan, upper: LevelPlan) -> list[str]:
    refs = [value.ref for value in reader.optimizer.hyperparameters.values() if value.ref is not None]
    return [ref for ref in refs if ref.startswith(f"{upper.name}.")]


def _reads_of(result: Optional[TraceResult], reader: LevelPlan, upper: LevelPlan) -> list[str]:
    """Return the trainable variables of ``upper`` that the objective, optimizer or initial values of ``reader`` read.

    Without a trace result the objective is taken to read all of them.
    """
    trainable = _trainable(upper)
    read = set(_optimizer_refs(reader, upper))
    read |= {v.init_from for v in reader.variables if v.init_from and v.init_from.startswith(f"{upper.name}.")}
    read |= set(trainable) if result is None else set(result.reads)
    return [name for name in trainable if name in read]


def _objective_reads(result: Optional[TraceResult], levels: list[LevelPlan], *, trainable: bool) -> list[str]:
    """Return the variables of ``levels`` that ``result`` reads, or all of them if there is no result."""
    names = [
        f"{level.name}.{variable.name}"
        for level in levels
        for variable in level.variables
        if variable.trainable or not trainable
    ]
    if result is None:
        return names
    return [name for name in names if name in result.reads]


def _warn_lower_side(edge: EdgePlan, upper: LevelPlan, readers: list[LevelPlan]) -> None:
    variables = ", ".join(_trainable(upper)) or "it has none"
    if len(readers) == 1:
        reader = readers[0]
        takes_upper = any(kind == "level" and name == upper.name for kind, name in reader.loss.args)
        argument = "" if takes_upper else f"; it does not take '{upper.name}' as an argument"
        subject = f"the objective \"{reader.loss.ref}\" of level '{reader.name}' never reads"
        where = f"({variables}){argument}, and its optimizer reads none either"
    else:
        listed = ", ".join(f"'{reader.name}'" for reader in readers)
        subject = f"no objective or optimizer of the levels {listed} (the subtree of '{edge.lower}') reads"
        where = f"({variables})"
    if edge.kind == "reads":
        consequence = (
            f"So the reads edge carries nothing. To fix, drop '{upper.name}' from the arguments of the "
            f"objective of '{edge.lower}'."
        )
    else:
        consequence = (
            f"So the solution of '{edge.lower}' does not depend on '{upper.name}', and the hypergradient "
            f"of '{upper.name}' through '{edge.lower}' is always zero. To fix, read a variable of "
            f"'{upper.name}' in an objective below it, or drop 'per {upper.name}' from '{edge.lower}'."
        )
    message = (
        f"edge {edge.upper} -> {edge.lower}: {subject} a trainable variable of level '{upper.name}' "
        f"{where}. {consequence}"
    )
    warnings.warn(message, DependencyWarning, stacklevel=_caller_stacklevel())


def _warn_unused_own(level: LevelPlan, result: Optional[TraceResult]) -> None:
    """Warn when the traced objective of a bottom level reads none of the level's trainable variables.

    An upper level's variables usually reach its objective only through the
    levels below it, which the edge checks cover, so only bottom levels count.
    """
    own = _trainable(level)
    if result is None or not result.traced or not own or result.own_reads & set(own):
        return
    message = (
        f"the objective \"{level.loss.ref}\" of level '{level.name}' does not depend on the level's own "
        f"trainable variables ({', '.join(own)}), so its optimizer cannot move them. To fix, use "
        "them in the objective."
    )
    warnings.warn(message, DependencyWarning, stacklevel=_caller_stacklevel())


def _warn_upper_side(edge: EdgePlan, upper: LevelPlan, readers: list[LevelPlan]) -> None:
    variables = ", ".join(name for reader in readers for name in _trainable(reader)) or "they have none"
    below = "" if len(readers) == 1 else " or of the levels below it"
    message = (
        f"edge {edge.upper} -> {edge.lower}: the objective \"{upper.loss.ref}\" of level '{upper.name}' "
        f"never reads a trainable variable of level '{edge.lower}'{below} ({variables}), so no "
        f"hypergradient reaches '{upper.name}' through '{edge.lower}'. To fix, use those variables in "
        f"the objective, or drop 'per {upper.name}' from '{edge.lower}'."
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


def _note(edge: EdgePlan, upper: LevelPlan, readers: list[LevelPlan], results: Mapping[str, TraceResult]) -> str:
    """Describe who reads what along one edge, in one line."""
    parts = []
    for reader in readers:
        result = results.get(reader.name)
        read = [name for name in sorted(result.reads) if name.startswith(f"{upper.name}.")] if result else []
        if reader.name == edge.lower or read:
            parts.append(_describe(result, reader.name, read, f"no variable of '{upper.name}'"))
        refs = _optimizer_refs(reader, upper)
        if refs:
            parts.append(f"optimizer of '{reader.name}' reads {', '.join(refs)}")
    if edge.kind == "per":
        result = results.get(upper.name)
        read = _objective_reads(result, readers, trainable=False) if result else []
        below = "" if len(readers) == 1 else " or below"
        parts.append(_describe(result, upper.name, read, f"no variable of '{edge.lower}'{below}"))
    kind = " (reads)" if edge.kind == "reads" else ""
    return f"{edge.upper} -> {edge.lower}{kind}: " + "; ".join(parts)


def _describe(result: Optional[TraceResult], reader: str, read: list[str], nothing: str) -> str:
    if result is None:
        return f"objective of '{reader}' was not traced"
    listed = ", ".join(read) if read else nothing
    if result.traced:
        return f"objective of '{reader}' reads {listed}"
    return f"objective of '{reader}' is assumed to read {listed}, because {result.reason}"
