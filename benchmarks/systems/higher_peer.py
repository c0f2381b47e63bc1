"""higher (facebookresearch): unrolled differentiation through its differentiable SGD.

higher has no implicit method, so implicit cases are reported as not supported.
"""

from __future__ import annotations

import importlib.metadata
import logging

import higher
import torch

from benchmarks.cases import Problem
from benchmarks.systems.base import MethodUnsupported, Params, System, apply_hypergradient, outer_hypergradient

__all__ = ["HigherSystem"]

logger = logging.getLogger(__name__)


class HigherSystem(System):
    name = "higher"

    @staticmethod
    def version() -> str:
        return importlib.metadata.version("higher")

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        if self.case.method != "unrolled":
            raise MethodUnsupported("higher only differentiates through unrolled inner loops")
        self.outer = {k: v.detach().clone().requires_grad_(True) for k, v in problem.outer_init.items()}
        self.optimizer = torch.optim.Adam(list(self.outer.values()), lr=problem.outer_lr, eps=problem.outer_eps)
        self.names = list(problem.inner_init)
        self._inner: Params = {}

    def step(self) -> Params:
        problem = self.problem
        model = problem.model
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(problem.inner_init[name])
        inner_optimizer = torch.optim.SGD(model.parameters(), lr=problem.inner_lr)
        with higher.innerloop_ctx(model, inner_optimizer, copy_initial_weights=True) as (fmodel, diffopt):
            for _ in range(self.case.inner_steps):
                params = dict(zip(self.names, fmodel.fast_params))
                diffopt.step(problem.inner_loss(params, self.outer, problem.train))
            params = dict(zip(self.names, fmodel.fast_params))
            hypergradient = outer_hypergradient(problem, self.outer, params)
        apply_hypergradient(self.outer, self.optimizer, hypergradient)
        self._inner = {k: v.detach() for k, v in params.items()}
        return hypergradient

    def inner_params(self) -> Params:
        return self._inner
