"""Betty (leopard-ai): the inner and outer levels as Betty problems run by a Betty ``Engine``.

Unrolled cases: the inner level is an ``IterativeProblem`` (functional
parameters updated by Betty's patched SGD, so its ``unroll_steps`` steps stay
in the graph) and the outer level uses ``first_order=False``, so its gradient
flows back through the unrolled steps. Implicit cases: the inner level is an
``ImplicitProblem`` with ``type="cg"``, ``cg_iterations`` set to the case's CG
iterations and ``cg_alpha=1``.

One outer step is ``inner_steps`` calls of ``Engine.train_step()``: each runs
one inner step, and the last one also runs the outer step. Betty keeps the
inner variables from one outer step to the next (a warm start), so the inner
level resets them to the initial values in ``on_inner_loop_start``. Every
system thus starts each inner solve from the same point. The hypergradient
is read from the outer variables' ``.grad`` in ``grad_callback``, after
Betty's backward and before its optimizer step.
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Any

import torch
from torch import nn

import betty  # noqa: F401  (the import itself tells whether Betty is installed)
from betty.configs import Config, EngineConfig
from betty.engine import Engine
from betty.problems import ImplicitProblem, IterativeProblem

from benchmarks.cases import Problem
from benchmarks.systems.base import MethodUnsupported, Params, System

__all__ = ["BettySystem"]

logger = logging.getLogger(__name__)

# Engine.run() is not used: train_step() is called directly, so the iteration
# count only has to exceed what a benchmark runs.
_ENGINE_ITERATIONS = 10**9


class _OuterVariables(nn.Module):
    def __init__(self, init: Params) -> None:
        super().__init__()
        self.values = nn.ParameterDict({k: nn.Parameter(v.detach().clone()) for k, v in init.items()})


def _inner_params(problem: Any) -> Params:
    if isinstance(problem, IterativeProblem):
        return dict(zip(problem.names, problem.params))
    return dict(problem.module.named_parameters())


def _make_inner_class(base: type) -> type:
    class Inner(base):
        def training_step(self, batch: Any) -> torch.Tensor:
            outer = dict(self.outer.module.values.items())
            return self.case_problem.inner_loss(_inner_params(self), outer, batch)

        def on_inner_loop_start(self) -> None:
            init = self.case_problem.inner_init
            if isinstance(self, IterativeProblem):
                self.params = tuple(init[name].detach().clone().requires_grad_(True) for name in self.names)
                return
            with torch.no_grad():
                for name, param in self.module.named_parameters():
                    param.copy_(init[name])

    return Inner


class _Outer(ImplicitProblem):
    def training_step(self, batch: Any) -> torch.Tensor:
        outer = dict(self.module.values.items())
        return self.case_problem.outer_loss(outer, _inner_params(self.inner), batch)

    def grad_callback(self) -> None:
        self.last_hypergradient = {
            key: torch.zeros_like(value) if value.grad is None else value.grad.detach().clone()
            for key, value in self.module.values.items()
        }


class BettySystem(System):
    name = "betty"

    @staticmethod
    def version() -> str:
        return importlib.metadata.version("betty-ml")

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        unrolled = self.case.method == "unrolled"
        self.inner = self._make_inner(unrolled)
        self.outer = self._make_outer(unrolled)
        self.engine = self._make_engine(unrolled)
        self.engine.train()

    def _make_inner(self, unrolled: bool) -> Any:
        problem = self.problem
        model = problem.model
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(problem.inner_init[name])
        # Betty reads ``type`` only on its first-order (implicit) path, so an
        # unrolled case never uses "darts".
        config = Config(
            type="darts" if unrolled else "cg",
            unroll_steps=self.case.inner_steps,
            cg_iterations=self.case.cg_iters,
            cg_alpha=1.0,
        )
        inner_class = _make_inner_class(IterativeProblem if unrolled else ImplicitProblem)
        inner = inner_class(
            name="inner",
            config=config,
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=problem.inner_lr),
            train_data_loader=[problem.train],
        )
        inner.case_problem = problem
        inner.names = [name for name, _ in model.named_parameters()]
        return inner

    def _make_outer(self, unrolled: bool) -> Any:
        problem = self.problem
        module = _OuterVariables(problem.outer_init)
        outer = _Outer(
            name="outer",
            config=Config(first_order=not unrolled, retain_graph=False),
            module=module,
            optimizer=torch.optim.Adam(module.parameters(), lr=problem.outer_lr, eps=problem.outer_eps),
            train_data_loader=[problem.val],
        )
        outer.case_problem = problem
        return outer

    def _make_engine(self, unrolled: bool) -> Engine:
        dependencies = {"u2l": {self.outer: [self.inner]}, "l2u": {self.inner: [self.outer]}}
        config = EngineConfig(train_iters=_ENGINE_ITERATIONS, valid_step=_ENGINE_ITERATIONS, logger_type="none")
        try:
            return Engine(config=config, problems=[self.outer, self.inner], dependencies=dependencies)
        except KeyError as error:
            # In betty-ml 0.2.1, Problem.initialize replaces the optimizer by
            # one without "params" in its param groups before
            # IterativeProblem.initialize reads them.
            if not unrolled:
                raise
            raise MethodUnsupported(
                f"Betty's IterativeProblem (its unrolled path) fails to initialize: KeyError {error}"
            ) from error

    def step(self) -> Params:
        for _ in range(self.case.inner_steps):
            self.engine.global_step += 1
            self.engine.train_step()
        return self.outer.last_hypergradient

    def inner_params(self) -> Params:
        return {k: v.detach().clone() for k, v in _inner_params(self.inner).items()}
