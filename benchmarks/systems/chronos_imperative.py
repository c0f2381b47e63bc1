"""Chronos through its imperative layer: ``chronos.core`` and ``chronos.solver`` used by hand."""

from __future__ import annotations

import itertools
import logging

import chronos
from chronos.core import InnerProblem, OuterOptimizer
from chronos.optim import adam, sgd
from chronos.solver import HypergradientMethod, ImplicitDifferentiation, UnrolledDifferentiation

from benchmarks.cases import Problem
from benchmarks.systems.base import Params, System

__all__ = ["ChronosImperativeSystem"]

logger = logging.getLogger(__name__)


def make_method(outer: OuterOptimizer, method: str, cg_iters: int) -> HypergradientMethod:
    """Return the Chronos engine for ``method`` ("unrolled": full unroll, "implicit": CG)."""
    if method == "unrolled":
        return UnrolledDifferentiation(outer, last=None)
    return ImplicitDifferentiation(outer, solver="cg", iters=cg_iters)


class ChronosImperativeSystem(System):
    name = "chronos-imperative"

    @staticmethod
    def version() -> str:
        return chronos.__version__

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self.inner = InnerProblem(problem.inner_loss, sgd(lr=problem.inner_lr), name="inner")
        self.outer = OuterOptimizer(
            problem.outer_init,
            adam(lr=problem.outer_lr, eps=problem.outer_eps),
            lambda outer, params, data: problem.outer_loss(outer, params, data),
            data=problem.val,
            name="outer",
        )
        self.method = make_method(self.outer, self.case.method, self.case.cg_iters)
        self._inner: Params = {}

    def step(self) -> Params:
        problem = self.problem
        final, trajectory = self.inner.solve(
            self.outer.params,
            problem.inner_init,
            self.case.inner_steps,
            itertools.repeat(problem.train),
            track_last=self.method.track_last,
        )
        hypergradient = self.method.compute_hypergradient(trajectory, self.inner)
        self.method.step(hypergradient)
        self._inner = {k: v.detach() for k, v in final.items()}
        return hypergradient

    def inner_params(self) -> Params:
        return self._inner
