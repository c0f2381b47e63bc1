"""Choose the hypergradient method of every edge and record why.

Rules, in order, for ``hypergradient = auto``:

1. The lower level's optimizer reads upper variables (a learning rate, a
   momentum): ``unrolled``. Implicit differentiation depends only on the
   stationary point, which the optimizer does not move, so it gives those
   variables exactly zero.
2. Full unrolling fits the memory budget: ``unrolled``.
3. Otherwise: ``implicit`` with conjugate gradient, whose memory does not grow
   with the number of inner steps.

An edge inside a plan deeper than two levels (its upper level has an upper,
or its lower level has lowers) is always ``unrolled``. The nested executor
differentiates through every level's trajectory, and implicit differentiation
of a level whose own gradient is a hypergradient is not supported.

The unrolled memory is an estimate: steps x the bytes that one step keeps
alive for the backward pass. Those are the variables, their gradients, the
optimizer slots and the tensors one evaluation of the objective creates. The
last part is measured on the torch.fx trace (``LevelPlan.objective_bytes``)
and is not counted when tracing is off or failed. The intermediate tensors of the gradient
computation itself are not counted. On the hyper-cleaning problem with 50 to
400 inner steps, ``benchmarks/memory_estimate.py`` measured the true peak at
1.14 to 1.28 times the estimate.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping, Optional

from chronos.compiler.plan import EdgePlan, LevelPlan, MethodPlan
from chronos.errors import CompileError
from chronos.spec import HypergradientSpec, SourceSpan

__all__ = ["choose_method", "default_memory_budget", "estimate_unrolled_bytes"]

logger = logging.getLogger(__name__)

OPTIMIZER_SLOTS = {"sgd": 1, "adam": 2}  # state tensors per variable (momentum; first and second moments)
DEFAULT_CG_ITERS = 20
DEFAULT_TOL = 1e-10


def default_memory_budget() -> int:
    """Return a quarter of the machine's physical memory in bytes, or 1 GiB where it cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 1 << 30


def estimate_unrolled_bytes(
    lower: LevelPlan,
    steps: Optional[int] = None,
    levels: Optional[Mapping[str, LevelPlan]] = None,
    cache: Optional[dict[str, int]] = None,
) -> int:
    """Estimate the bytes that unrolling ``steps`` (default all) steps of ``lower`` keeps alive.

    With ``levels`` given, each step of ``lower`` also keeps the unrolled
    solves of the levels timed under it, so the estimate multiplies down the
    tree. ``cache`` (level name -> full-unroll estimate) makes one compile
    linear in the number of levels, chains included.
    """
    if cache is not None and steps is None and lower.name in cache:
        return cache[lower.name]
    slots = OPTIMIZER_SLOTS.get(lower.optimizer.name, 2)
    per_step = lower.state_bytes() * (2 + slots) + (lower.objective_bytes or 0)
    if levels is not None:
        timed_under = [child for child in lower.lowers if levels[child].per == lower.name]
        per_step += sum(estimate_unrolled_bytes(levels[child], levels=levels, cache=cache) for child in timed_under)
    total = (lower.steps if steps is None else steps) * per_step
    if cache is not None and steps is None:
        cache[lower.name] = total
    return total


def choose_method(
    upper: str,
    lower: LevelPlan,
    requested: Optional[HypergradientSpec],
    optimizer_reads: list[str],
    memory_budget: int,
    staleness: int,
    source: Optional[SourceSpan],
    levels: Optional[Mapping[str, LevelPlan]] = None,
    estimates: Optional[dict[str, int]] = None,
    init_reads: Optional[list[str]] = None,
) -> EdgePlan:
    """Resolve the method of edge ``upper -> lower`` and return the edge with its reason.

    ``levels`` (all levels by name) lets the estimate include nested solves. It
    also marks an edge as nested when ``upper`` has an upper level or ``lower``
    has lower levels, and nested edges are always unrolled.
    """
    requested = requested or HypergradientSpec()
    unrolled_bytes = estimate_unrolled_bytes(lower, levels=levels, cache=estimates)
    nested = levels is not None and (bool(levels[upper].uppers) or bool(lower.lowers))
    init_reads = init_reads or []
    if init_reads:
        method, reason = _init_read(upper, lower, requested, init_reads, unrolled_bytes, memory_budget, source)
    elif nested:
        method, reason = _nested(upper, lower, requested, unrolled_bytes, memory_budget, source)
    elif requested.method == "auto":
        method, reason = _auto(lower, optimizer_reads, unrolled_bytes, memory_budget)
    else:
        method, reason = _explicit(upper, lower, requested, optimizer_reads, source)
    logger.info("edge %s -> %s: %s (%s)", upper, lower.name, method.describe(), reason)
    return EdgePlan(
        upper=upper,
        lower=lower.name,
        method=method,
        requested=requested.method,
        reason=reason,
        staleness=staleness,
        optimizer_reads=optimizer_reads,
        init_reads=init_reads,
        unrolled_bytes=unrolled_bytes,
        source=source,
    )


def _auto(lower: LevelPlan, optimizer_reads: list[str], unrolled_bytes: int, budget: int):
    size = f"{lower.steps} steps x {unrolled_bytes // max(lower.steps, 1):,} B = {unrolled_bytes:,} B"
    if optimizer_reads:
        if unrolled_bytes <= budget:
            return MethodPlan(name="unrolled"), (
                f"the optimizer of '{lower.name}' reads {', '.join(optimizer_reads)}, which implicit "
                f"differentiation gives zero gradient; full unrolling fits ({size} <= budget {budget:,} B)"
            )
        per_step = max(unrolled_bytes // max(lower.steps, 1), 1)
        last = max(1, budget // per_step)
        return MethodPlan(name="unrolled", last=last), (
            f"the optimizer of '{lower.name}' reads {', '.join(optimizer_reads)}, which implicit "
            f"differentiation gives zero gradient; full unrolling needs {size} over budget "
            f"{budget:,} B, so it is truncated to the last {last} steps"
        )
    if unrolled_bytes <= budget:
        return MethodPlan(name="unrolled"), f"full unrolling fits the memory budget ({size} <= {budget:,} B)"
    return MethodPlan(name="implicit", solver="cg", iters=DEFAULT_CG_ITERS, tol=DEFAULT_TOL), (
        f"full unrolling needs {size}, over the memory budget {budget:,} B; implicit "
        "differentiation (cg) does not grow with inner steps"
    )


def _init_read(upper, lower: LevelPlan, requested: HypergradientSpec, init_reads, unrolled_bytes: int, budget: int, source):
    """Edges whose lower level starts from upper variables need a full unroll.

    The solution of the lower level depends on its starting point only
    through the trajectory. Implicit differentiation uses only the end point,
    so it gives the initialization exactly zero, and so does an unroll
    truncated before the first step.
    """
    names = ", ".join(init_reads)
    location = source.location() if source else None
    if requested.method not in ("auto", "unrolled"):
        raise CompileError(
            f"'{lower.name}' starts from {names}, whose hypergradient is exactly zero under "
            f"{requested.method} differentiation",
            location=location,
            edge=(upper, lower.name),
            hint="use 'hypergradient = unrolled' (or auto) for this edge",
        )
    last = requested.options.get("last") if requested.method == "unrolled" else None
    if last is not None and last < lower.steps:
        raise CompileError(
            f"unrolled(last = {last}) keeps {last} of {lower.steps} steps, so the hypergradient of the "
            f"initialization {names} is exactly zero",
            location=location,
            edge=(upper, lower.name),
            hint="unroll every step: 'hypergradient = unrolled'",
        )
    reason = (
        f"'{lower.name}' starts from {names}, which only a full unroll differentiates "
        f"({unrolled_bytes:,} B, budget {budget:,} B)"
    )
    if unrolled_bytes > budget:
        logger.warning("edge %s -> %s: %s; the full unroll exceeds the memory budget", upper, lower.name, reason)
    return MethodPlan(name="unrolled"), reason


def _nested(upper, lower: LevelPlan, requested: HypergradientSpec, unrolled_bytes: int, budget: int, source):
    if requested.method not in ("auto", "unrolled"):
        raise CompileError(
            f"edge {upper} -> {lower.name} is part of a plan deeper than two levels, where "
            f"hypergradients pass through nested levels only by unrolling; '{requested.method}' "
            "cannot apply",
            location=source.location() if source else None,
            edge=(upper, lower.name),
            hint="use 'hypergradient = unrolled' or auto on this edge",
        )
    last = requested.options.get("last") if requested.method == "unrolled" else None
    if last is not None and last >= lower.steps:
        last = None
    fits = "fits" if unrolled_bytes <= budget else "exceeds"
    if requested.method == "unrolled":
        reason = "requested in the spec"
    else:
        reason = "derivatives pass through nested levels only by unrolling"
    reason += f"; the nested unroll {fits} the memory budget ({unrolled_bytes:,} B vs {budget:,} B)"
    if unrolled_bytes > budget:
        logger.warning("edge %s -> %s: %s", upper, lower.name, reason)
    return MethodPlan(name="unrolled", last=last), reason


def _explicit(upper, lower: LevelPlan, requested: HypergradientSpec, optimizer_reads, source):
    options = requested.options
    if requested.method == "unrolled":
        last = options.get("last")
        if last is not None and (not isinstance(last, int) or last < 1):
            raise CompileError(
                f"unrolled(last = {last}) must keep a positive integer number of steps",
                location=source.location() if source else None,
                edge=(upper, lower.name),
            )
        if last is not None and last >= lower.steps:
            last = None  # keeping every step is a full unroll
        return MethodPlan(name="unrolled", last=last), "requested in the spec"
    if requested.method == "implicit":
        if optimizer_reads:
            raise CompileError(
                f"implicit differentiation gives exactly zero gradient to {', '.join(optimizer_reads)}, "
                f"which only the optimizer of '{lower.name}' reads",
                location=source.location() if source else None,
                edge=(upper, lower.name),
                hint="use 'hypergradient = unrolled' (or auto) for this edge",
            )
        solver = str(options.get("solver", "cg"))
        alpha = options.get("alpha")
        if solver == "neumann" and alpha is None:
            alpha = _neumann_default_alpha(lower)
        return MethodPlan(
            name="implicit",
            solver=solver,
            iters=int(options.get("iters", DEFAULT_CG_ITERS)),
            tol=float(options.get("tol", DEFAULT_TOL)),
            alpha=None if alpha is None else float(alpha),
            damping=float(options["damping"]) if "damping" in options else None,
        ), "requested in the spec"
    raise CompileError(
        f"hypergradient method '{requested.method}' is not supported yet by the compiler",
        location=source.location() if source else None,
        edge=(upper, lower.name),
        hint="use auto, unrolled or implicit",
    )


def _neumann_default_alpha(lower: LevelPlan) -> float:
    # The Neumann step must stay below 2 / lambda_max of the inner Hessian. The
    # inner learning rate is the step the user already found stable for plain
    # gradient descent on the same objective, so it is a safe default.
    lr = lower.optimizer.hyperparameters.get("lr")
    if lr is not None and lr.value is not None:
        return float(lr.value)
    return 0.01
