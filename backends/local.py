"""The local backend: one process, the reference semantics every other backend must reproduce.

One macro step of a bilevel plan (upper U, lower L):

1. L starts from its initial variables (or, with ``warm_start``, from where
   the previous macro step left it) and takes ``steps`` optimizer steps on
   its objective, reading U's current variables.
2. The hypergradient of U's objective reaches U through the edge's method
   (unrolled through L's trajectory, or implicit at L's final point).
3. U's optimizer applies it; U's version increases by one.

A plan with a single level is plain optimization: each macro step is one
optimizer step on that level's objective.
"""

from __future__ import annotations

import itertools
import logging
from typing import Optional

import torch

from chronos.backends.executor import Executor, gradient_norm, single_root
from chronos.backends.materialize import LiveProblem, materialize
from chronos.compiler.plan import EdgePlan, Plan
from chronos.core import InnerProblem, LevelState, MetaState, OuterOptimizer, VersionTracker
from chronos.errors import BackendError, ChronosError
from chronos.result import RunResult
from chronos.solver import HypergradientMethod, ImplicitDifferentiation, UnrolledDifferentiation

__all__ = ["LocalExecutor", "is_two_level", "make_method", "run_local"]

logger = logging.getLogger(__name__)


def make_method(edge: EdgePlan, outer: OuterOptimizer) -> HypergradientMethod:
    """Build the hypergradient engine that the plan chose for ``edge``."""
    method = edge.method
    if method.name == "unrolled":
        return UnrolledDifferentiation(outer, last=method.last)
    kwargs = {"solver": method.solver or "cg", "iters": method.iters or 20}
    if method.tol is not None:
        kwargs["tol"] = method.tol
    if method.alpha is not None:
        kwargs["alpha"] = method.alpha
    if method.damping is not None:
        kwargs["damping"] = method.damping
    return ImplicitDifferentiation(outer, **kwargs)


class LocalExecutor(Executor):
    """Execute a plan in this process, one macro step at a time."""

    def __init__(self, plan: Plan, *, problem: Optional[LiveProblem] = None) -> None:
        self.plan = plan
        self.problem = problem or materialize(plan)
        self.versions = VersionTracker()
        self.history: dict[str, list[float]] = {level.name: [] for level in plan.levels}
        self.hypergradient_norms: dict[str, list[float]] = {f"{e.upper}->{e.lower}": [] for e in plan.edges}
        self.macro_step_index = 0
        self._check_topology()
        self._build()

    def _check_topology(self) -> None:
        root = single_root(self.plan)
        if len(root.lowers) > 1:
            raise BackendError(
                f"level '{root.name}' has several lower levels {root.lowers}; the local backend "
                "runs one lower level per upper level so far",
                level=root.name,
            )
        for lower in root.lowers:
            if self.plan.level(lower).lowers:
                raise BackendError(
                    f"level '{lower}' has lower levels of its own; the local backend runs two "
                    "levels so far",
                    level=lower,
                )
        self.root = root.name
        self.lower = root.lowers[0] if root.lowers else None

    def _build(self) -> None:
        problem = self.problem
        root = problem.levels[self.root]
        if self.lower is None:
            self.outer = OuterOptimizer(
                root.params,
                root.optimizer,
                lambda params, _unused, batch: problem.objective(self.root, self.root)(params, params, batch),
                data=problem.batch(self.root),
                name=self.root,
            )
            self.method = None
            return
        lower = problem.levels[self.lower]
        self.edge = self.plan.edge(self.root, self.lower)
        self.inner = InnerProblem(problem.objective(self.lower, self.root), lower.optimizer, name=self.lower)
        self.outer = OuterOptimizer(
            root.params,
            root.optimizer,
            problem.objective(self.root, self.lower),
            data=problem.batch(self.root),
            name=self.root,
        )
        self.method = make_method(self.edge, self.outer)
        self.lower_params = {key: value.detach().clone() for key, value in lower.start({self.root: root.params}).items()}
        self.lower_state = None

    def macro_step(self) -> dict[str, torch.Tensor]:
        """Run one macro step and return the hypergradient applied to the top level."""
        if self.lower is None:
            return self._single_level_step()
        lower = self.problem.levels[self.lower]
        init = self.lower_params if lower.plan.warm_start else lower.start({self.root: self.outer.params})
        init_state = self.lower_state if lower.plan.warm_start else None
        self.versions.record_read(self.lower, self.root, self.outer.version)
        batch = self.problem.batch(self.lower)

        with _step_context(self.lower, self.macro_step_index):
            final, trajectory = self.inner.solve(
                self.outer.params,
                init,
                lower.plan.steps,
                itertools.repeat(batch),
                track_last=self.method.track_last,
                init_state=init_state,
                outer_version=self.outer.version,
            )
        with _step_context(self.root, self.macro_step_index):
            hypergradient = self.method.compute_hypergradient(trajectory, self.inner)
            outer_value = self._outer_value(final)
            self.method.step(hypergradient)

        self.lower_params = {key: value.detach() for key, value in final.items()}
        self.lower_state = trajectory.final_state
        for _ in range(lower.plan.steps):  # one version per update, as the nested executor counts
            self.versions.bump(self.lower)
        self.versions.bump(self.root)
        self.history[self.lower].append(trajectory.losses[-1] if trajectory.losses else float("nan"))
        self.history[self.root].append(outer_value)
        self.hypergradient_norms[f"{self.root}->{self.lower}"].append(gradient_norm(hypergradient))
        self.macro_step_index += 1
        return hypergradient

    def _single_level_step(self) -> dict[str, torch.Tensor]:
        params = {key: value.detach().requires_grad_(True) for key, value in self.outer.params.items()}
        with _step_context(self.root, self.macro_step_index):
            value = self.outer.objective(params, params, self.outer.data)
            grads = torch.autograd.grad(value, list(params.values()), allow_unused=True)
        gradient = {
            key: torch.zeros_like(params[key]) if grad is None else grad for key, grad in zip(params, grads)
        }
        self.outer.step(gradient)
        self.versions.bump(self.root)
        self.history[self.root].append(float(value.detach()))
        self.macro_step_index += 1
        return gradient

    def _outer_value(self, final: dict[str, torch.Tensor]) -> float:
        with torch.no_grad():
            detached = {key: value.detach() for key, value in final.items()}
            return float(self.outer.objective(self.outer.params, detached, self.outer.data))

    def checkpoint_state(self) -> MetaState:
        levels = {
            self.root: LevelState(params=dict(self.outer.params), optimizer_state=dict(self.outer.state or {}), version=self.outer.version)
        }
        if self.lower is not None:
            levels[self.lower] = LevelState(
                params=dict(self.lower_params),
                optimizer_state=dict(self.lower_state or {}),
                version=self.versions.version(self.lower),
            )
        return MetaState(levels=levels, versions=self.versions)

    def restore(self, meta: MetaState) -> None:
        root = meta.levels[self.root]
        self.outer.params = {key: value.detach().clone().requires_grad_(True) for key, value in root.params.items()}
        self.outer.state = root.optimizer_state
        self.outer.version = root.version
        if self.lower is not None:
            lower = meta.levels[self.lower]
            self.lower_params = {key: value.detach().clone() for key, value in lower.params.items()}
            self.lower_state = lower.optimizer_state or None
        self.versions = meta.versions

    def result(self, seconds: float = 0.0) -> RunResult:
        variables = {self.root: _detached({**self.outer.params, **self.problem.levels[self.root].constants})}
        if self.lower is not None:
            variables[self.lower] = _detached({**self.lower_params, **self.problem.levels[self.lower].constants})
        return self._result(variables, seconds)


class _step_context:
    """Name the level and macro step in errors raised inside the block."""

    def __init__(self, level: str, step: int) -> None:
        self.level = level
        self.step = step

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        if error is None:
            return False
        if isinstance(error, ChronosError):
            if error.level is None:
                error.level = self.level
            error.message = f"macro step {self.step}: {error.message}"
            error.args = (error.render(),)
            return False
        if isinstance(error, (RuntimeError, ValueError, TypeError)):
            raise BackendError(
                f"macro step {self.step} failed in level '{self.level}': {type(error).__name__}: {error}",
                level=self.level,
            ) from error
        return False


def _detached(variables: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in variables.items()}


def is_two_level(plan: Plan) -> bool:
    """Return whether ``plan`` is a single level, or one top level over one lower level and nothing deeper."""
    roots = plan.roots()
    if len(roots) != 1 or len(roots[0].lowers) > 1:
        return False
    return all(not plan.level(lower).lowers for lower in roots[0].lowers)


def run_local(plan: Plan, *, progress: bool = True, **options) -> RunResult:
    """Execute ``plan`` on the local backend and return its RunResult.

    Two-level plans run on the imperative layer (``chronos.core``), which
    supports every hypergradient method; deeper or wider trees run nested,
    unrolled through every level (see ``chronos.backends.nested``).
    ``options`` are passed to :meth:`Executor.run` (checkpoint, checkpoint_every, resume).
    """
    if is_two_level(plan):
        return LocalExecutor(plan).run(progress=progress, **options)
    from chronos.backends.nested import NestedExecutor

    return NestedExecutor(plan).run(progress=progress, **options)
