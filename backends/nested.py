"""Nested execution for level trees of any depth, with total derivatives through every path.

Design note, how nested levels compose: the ``per`` clauses form a tree. One
step of a level first solves each of its lower levels (recursively, each for
its ``steps``), then takes the gradient of its own objective with respect to
its variables and applies its optimizer. After its last step the lower
levels are solved once more against its final variables, so a level above
reads each level's final variables together with the lower solution that
belongs to them (one extra lower solve per solve). Every step below the top keeps its
autograd graph (``create_graph``), so the final variables of a level are a
differentiable function of every variable above it. The top level's gradient
is therefore the total derivative of its objective through every path. So a
top variable that reaches the bottom objective only through the middle level,
such as a learned learning rate of the middle level, gets its non-zero
contribution. Memory grows with the product of the steps along the tree. The
compiler estimates it and picks ``unrolled`` for every edge of a deep tree,
because implicit differentiation of a level whose own gradient is a
hypergradient is not supported.

Truncation ``unrolled(last = K)`` on edge ``U -> L``: L's first ``steps - K``
steps run on detached copies of the variables above L, and L's variables are
detached before its last K steps, so derivatives reach the upper levels
through the last K steps only.
"""

from __future__ import annotations

import logging
from typing import Mapping, Optional

import torch

from chronos.backends.executor import Executor, gradient_norm, single_root
from chronos.backends.materialize import LiveProblem, materialize
from chronos.compiler.plan import Plan
from chronos.core import LevelState, MetaState, VersionTracker
from chronos.errors import BackendError, ChronosError
from chronos.result import RunResult

__all__ = ["NestedExecutor"]

logger = logging.getLogger(__name__)

Variables = dict[str, torch.Tensor]
Context = dict[str, Variables]


class NestedExecutor(Executor):
    """Execute a plan whose ``per`` clauses form a tree, with every edge unrolled."""

    def __init__(self, plan: Plan, *, problem: Optional[LiveProblem] = None) -> None:
        self.plan = plan
        self.problem = problem or materialize(plan)
        self.children: dict[str, list[str]] = {level.name: [] for level in plan.levels}
        for level in plan.levels:
            if level.per is not None:
                self.children[level.per].append(level.name)
        self._check_plan()
        self.root = plan.roots()[0].name
        self.versions = VersionTracker()
        self.history: dict[str, list[float]] = {level.name: [] for level in plan.levels}
        # The total derivative is taken once per macro step, at the top level.
        self.hypergradient_norms: dict[str, list[float]] = {
            f"{e.upper}->{e.lower}": [] for e in plan.edges if e.upper == plan.roots()[0].name and e.kind == "per"
        }
        root = self.problem.levels[self.root]
        self.root_params: Variables = {key: value.detach().clone() for key, value in root.params.items()}
        self.root_state = root.optimizer.init(self.root_params)
        self.warm: dict[str, tuple[Variables, dict]] = {}
        self.latest: Context = {}
        self.macro_step_index = 0

    def _check_plan(self) -> None:
        single_root(self.plan)
        for edge in self.plan.edges:
            if edge.method.name != "unrolled":
                raise BackendError(
                    f"nested execution needs unrolled hypergradients, but the plan chose "
                    f"{edge.method.describe()}",
                    edge=(edge.upper, edge.lower),
                    hint="use 'hypergradient = unrolled' (or auto) on every edge of a plan deeper than two levels",
                )

    # -- objectives ---------------------------------------------------------

    def _objective(self, level: str, context: Context) -> torch.Tensor:
        live = self.problem.levels[level]
        args = []
        for kind, name in live.plan.loss.args:
            if kind == "data":
                args.append(self.problem.data[name])
            elif name in context:
                args.append(self.problem.levels[name].view(context[name]))
            else:
                raise BackendError(
                    f"objective of '{level}' reads level '{name}', which has no value at this point "
                    "of the schedule",
                    level=level,
                    hint="an objective may read the levels above it and the levels below it",
                )
        try:
            value = live.loss(live.view(context[level]), *args)
        except ChronosError:
            raise
        except Exception as error:
            raise BackendError(
                f"objective \"{live.plan.loss.ref}\" of level '{level}' raised {type(error).__name__}: {error}",
                level=level,
            ) from error
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise BackendError(
                f"objective \"{live.plan.loss.ref}\" of level '{level}' returned a non-scalar",
                level=level,
                hint="reduce the loss with .mean() or .sum()",
            )
        return value.reshape(())

    def _gradient(self, level: str, params: Variables, context: Context, create_graph: bool) -> Variables:
        value = self._objective(level, context)
        if not value.requires_grad:
            return {key: torch.zeros_like(tensor) for key, tensor in params.items()}
        grads = torch.autograd.grad(value, list(params.values()), create_graph=create_graph, allow_unused=True)
        return {key: torch.zeros_like(params[key]) if grad is None else grad for key, grad in zip(params, grads)}

    # -- nested solves ------------------------------------------------------

    def _solve(self, level: str, context: Context) -> Context:
        """Run ``level`` for its steps under ``context`` (the levels above); return its subtree's final variables."""
        live = self.problem.levels[level]
        edge = self.plan.edge(live.plan.per, level)
        steps = live.plan.steps
        keep = steps if edge.method.last is None else min(edge.method.last, steps)
        if live.plan.warm_start and level in self.warm:
            start, state = self.warm[level]
            params = {key: value.detach().requires_grad_(True) for key, value in start.items()}
            state = _detach_state(state)
        else:
            params = {key: value.detach().clone().requires_grad_(True) for key, value in live.initial_params.items()}
            params.update({key: value for key, value in live.start(context).items() if key not in live.initial_params})
            state = live.optimizer.init(params)
        subtree: Context = {}

        for step in range(steps):
            early = step < steps - keep
            upper_context = _detached(context) if early else context
            if step == steps - keep and keep < steps:
                params = {key: value.detach().requires_grad_(True) for key, value in params.items()}
                state = _detach_state(state)
            local = {**upper_context, level: params}
            for child in self.children[level]:
                subtree.update(self._solve(child, local))
                local.update(subtree)
            grads = self._gradient(level, params, local, create_graph=True)
            hyper = live.optimizer.resolve(_outer_variables(upper_context, live.plan.per), level=level)
            params, state = live.optimizer.update(params, grads, state, hyper)
            self.versions.bump(level)

        # The loop solved the levels below against this level's variables
        # before its last update. Solve them once more against the final
        # variables, so that every level above reads a consistent pair.
        local = {**context, level: params}
        for child in self.children[level]:
            subtree.update(self._solve(child, local))
            local.update(subtree)
        final_context = {**subtree, level: params}
        with torch.no_grad():
            self.history[level].append(float(self._objective(level, {**context, **final_context})))
        self.warm[level] = ({key: value.detach() for key, value in params.items()}, _detach_state(state))
        return final_context

    def macro_step(self) -> Variables:
        """Run one step of the top level and return the total derivative applied to it."""
        root = self.problem.levels[self.root]
        params = {key: value.detach().requires_grad_(True) for key, value in self.root_params.items()}
        context: Context = {self.root: params}
        started = self.macro_step_index
        try:
            for child in self.children[self.root]:
                context.update(self._solve(child, context))
            gradient = self._gradient(self.root, params, context, create_graph=False)
        except ChronosError as error:
            error.message = f"macro step {started}: {error.message}"
            error.args = (error.render(),)
            raise
        with torch.no_grad():
            value = float(self._objective(self.root, context))
            hyper = root.optimizer.resolve(None, level=self.root)
            new_params, self.root_state = root.optimizer.update(params, gradient, self.root_state, hyper)
        self.root_params = {key: value.detach() for key, value in new_params.items()}
        self.root_state = _detach_state(self.root_state)
        self.latest = {name: {k: v.detach() for k, v in variables.items()} for name, variables in context.items()}
        self.versions.bump(self.root)
        self.history[self.root].append(value)
        norm = gradient_norm(gradient)
        for child in self.children[self.root]:
            self.hypergradient_norms[f"{self.root}->{child}"].append(norm)
        self.macro_step_index += 1
        return gradient

    def checkpoint_state(self) -> MetaState:
        levels = {self.root: LevelState(params=dict(self.root_params), optimizer_state=dict(self.root_state))}
        for name, (params, state) in self.warm.items():
            levels[name] = LevelState(params=dict(params), optimizer_state=dict(state))
        for name in self.children:
            if name not in levels:
                levels[name] = LevelState(params=dict(self.problem.levels[name].initial_params))
        return MetaState(levels=levels, versions=self.versions)

    def restore(self, meta: MetaState) -> None:
        root = meta.levels[self.root]
        self.root_params = {key: value.detach().clone() for key, value in root.params.items()}
        self.root_state = root.optimizer_state
        self.warm = {
            name: (dict(level.params), dict(level.optimizer_state))
            for name, level in meta.levels.items()
            if name != self.root and level.optimizer_state
        }
        self.latest = {name: dict(params) for name, (params, _) in self.warm.items()}
        self.versions = meta.versions

    def result(self, seconds: float = 0.0) -> RunResult:
        variables = {}
        for level in self.plan.levels:
            live = self.problem.levels[level.name]
            if level.name == self.root:
                current = self.root_params
            else:
                current = self.latest.get(level.name, live.initial_params)
            variables[level.name] = {k: v.detach().clone() for k, v in {**current, **live.constants}.items()}
        return self._result(variables, seconds)


def _outer_variables(context: Context, per: Optional[str]) -> Variables:
    """Variables an optimizer may read: the 'per' level's by name, every level's as 'level.name'."""
    flat = {f"{level}.{key}": value for level, variables in context.items() for key, value in variables.items()}
    if per is not None:
        flat.update(context.get(per, {}))
    return flat


def _detached(context: Mapping[str, Variables]) -> Context:
    return {name: {key: value.detach() for key, value in variables.items()} for name, variables in context.items()}


def _detach_state(state: dict) -> dict:
    return {
        key: ({k: v.detach() for k, v in value.items()} if isinstance(value, dict) else
              value.detach() if isinstance(value, torch.Tensor) else value)
        for key, value in state.items()
    }



