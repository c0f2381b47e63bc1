"""TorchOpt (metaopt): functional differentiable SGD for unrolled cases, ``custom_root`` for implicit ones.

Unrolled: ``torchopt.sgd`` updates with ``inplace=False`` keep every inner step
in the graph. Implicit: the inner solve is decorated with
``torchopt.diff.implicit.custom_root`` whose optimality condition is the inner
gradient, and ``torchopt.linear_solve.solve_cg`` with ``maxiter`` set to the
case's CG iterations and a relative tolerance of 1e-10, as in the reference.

NOTE: TorchOpt 0.7.3's compiled extension (``torchopt._C``) is built against an
older torch and fails to load against torch 2.13; TorchOpt then runs its
pure-Python operators. :func:`TorchOptSystem.version` reports which ran.
"""

from __future__ import annotations

import importlib.metadata
import logging

import torch
import torchopt
from torch.func import grad

from benchmarks.cases import Problem
from benchmarks.systems.base import Params, System, apply_hypergradient, outer_hypergradient

__all__ = ["TorchOptSystem"]

logger = logging.getLogger(__name__)

Tensors = tuple[torch.Tensor, ...]


def _extension_loads() -> bool:
    try:
        import torchopt._C  # noqa: F401
    except ImportError:
        return False
    return True


class TorchOptSystem(System):
    name = "torchopt"

    @staticmethod
    def version() -> str:
        kind = "C++ extension" if _extension_loads() else "pure Python, C++ extension does not load"
        return f"{importlib.metadata.version('torchopt')} ({kind})"

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self.outer = {k: v.detach().clone().requires_grad_(True) for k, v in problem.outer_init.items()}
        self.optimizer = torch.optim.Adam(list(self.outer.values()), lr=problem.outer_lr, eps=problem.outer_eps)
        self._inner: Params = {}
        self._solve = self._implicit_solver() if self.case.method == "implicit" else None

    def step(self) -> Params:
        problem = self.problem
        init = {k: v.detach().clone() for k, v in problem.inner_init.items()}
        if self._solve is None:
            params = self._unrolled(init)
        else:
            params = self._solve(init)
        hypergradient = outer_hypergradient(problem, self.outer, params)
        apply_hypergradient(self.outer, self.optimizer, hypergradient)
        self._inner = {k: v.detach() for k, v in params.items()}
        return hypergradient

    def inner_params(self) -> Params:
        return self._inner

    def _unrolled(self, init: Params) -> Params:
        problem = self.problem
        inner_optimizer = torchopt.sgd(lr=problem.inner_lr)
        params = {k: v.requires_grad_(True) for k, v in init.items()}
        state = inner_optimizer.init(params)
        keys = list(params)
        for _ in range(self.case.inner_steps):
            loss = problem.inner_loss(params, self.outer, problem.train)
            grads = dict(zip(keys, torch.autograd.grad(loss, [params[k] for k in keys], create_graph=True)))
            updates, state = inner_optimizer.update(grads, state, inplace=False)
            params = torchopt.apply_updates(params, updates, inplace=False)
        return params

    def _implicit_solver(self):
        problem = self.problem
        steps = self.case.inner_steps
        outer_keys = list(self.outer)
        inner_keys = list(problem.inner_init)
        inner_grad = grad(problem.inner_loss)

        # custom_root takes and returns tensors or tuples of tensors, not dicts.
        def optimality(params: Tensors, outer: Tensors, batch) -> Tensors:
            grads = inner_grad(dict(zip(inner_keys, params)), dict(zip(outer_keys, outer)), batch)
            return tuple(grads[k] for k in inner_keys)

        @torchopt.diff.implicit.custom_root(
            optimality,
            argnums=1,
            solve=torchopt.linear_solve.solve_cg(maxiter=self.case.cg_iters, rtol=1e-10),
        )
        def solve(params: Tensors, outer: Tensors, batch) -> Tensors:
            detached = {k: v.detach() for k, v in zip(outer_keys, outer)}
            current = dict(zip(inner_keys, params))
            with torch.no_grad():
                for _ in range(steps):
                    grads = inner_grad(current, detached, batch)
                    current = {k: current[k] - problem.inner_lr * grads[k] for k in inner_keys}
            return tuple(current[k] for k in inner_keys)

        def solve_dict(init: Params) -> Params:
            found = solve(tuple(init[k] for k in inner_keys), tuple(self.outer.values()), problem.train)
            return dict(zip(inner_keys, found))

        return solve_dict
