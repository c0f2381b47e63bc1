r"""The hand-written reference: plain torch (``torch.autograd``; the problems call ``torch.func.functional_call``), no framework.

Unrolled: the inner SGD steps run with ``create_graph=True`` so the final
inner variables are a differentiable function of the outer variables, and one
``torch.autograd.grad`` of the outer loss returns the hypergradient.

Implicit: the inner steps run detached. At the final point :math:`\theta`,
conjugate gradient solves :math:`H v = \partial g / \partial \theta` with
reverse-over-reverse Hessian-vector products (``torch.autograd.grad`` of the
inner gradient taken with ``create_graph=True``), and the hypergradient is
:math:`\partial g / \partial \lambda - (\partial^2 f / \partial \lambda \partial \theta)^\top v`,
the mixed term from one more ``torch.autograd.grad`` of the same inner gradient. The conjugate gradient stops after
``cg_iters`` iterations or at a relative residual of 1e-10, as Chronos' does.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from benchmarks.cases import Problem
from benchmarks.systems.base import Params, System, apply_hypergradient

__all__ = ["ReferenceSystem", "conjugate_gradient"]

logger = logging.getLogger(__name__)

CG_TOLERANCE = 1e-10


def _dot(xs: Params, ys: Params) -> Tensor:
    return sum((xs[k] * ys[k]).sum() for k in xs)


def conjugate_gradient(hvp, rhs: Params, iters: int, tol: float = CG_TOLERANCE) -> Params:
    """Solve ``H x = rhs`` from ``x = 0`` for dicts of tensors; stop at a relative residual of ``tol``."""
    x = {k: torch.zeros_like(v) for k, v in rhs.items()}
    r = dict(rhs)
    p = dict(rhs)
    rs = _dot(r, r)
    threshold = tol**2 * rs
    for _ in range(iters):
        if rs <= threshold:
            break
        hp = hvp(p)
        step = rs / _dot(p, hp)
        x = {k: x[k] + step * p[k] for k in x}
        r = {k: r[k] - step * hp[k] for k in r}
        new_rs = _dot(r, r)
        p = {k: r[k] + (new_rs / rs) * p[k] for k in p}
        rs = new_rs
    return x


class ReferenceSystem(System):
    name = "reference"

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self.outer = {k: v.detach().clone().requires_grad_(True) for k, v in problem.outer_init.items()}
        self.optimizer = torch.optim.Adam(list(self.outer.values()), lr=problem.outer_lr, eps=problem.outer_eps)
        self._inner: Params = {}

    def step(self) -> Params:
        if self.case.method == "unrolled":
            hypergradient = self._unrolled()
        else:
            hypergradient = self._implicit()
        apply_hypergradient(self.outer, self.optimizer, hypergradient)
        return hypergradient

    def inner_params(self) -> Params:
        return self._inner

    def _unrolled(self) -> Params:
        problem = self.problem
        params = {k: v.detach().clone().requires_grad_(True) for k, v in problem.inner_init.items()}
        keys = list(params)
        for _ in range(self.case.inner_steps):
            loss = problem.inner_loss(params, self.outer, problem.train)
            grads = torch.autograd.grad(loss, [params[k] for k in keys], create_graph=True)
            params = {k: params[k] - problem.inner_lr * g for k, g in zip(keys, grads)}
        loss = problem.outer_loss(self.outer, params, problem.val)
        found = torch.autograd.grad(loss, list(self.outer.values()), allow_unused=True)
        self._inner = {k: v.detach() for k, v in params.items()}
        return {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(self.outer.items(), found)}

    def _implicit(self) -> Params:
        problem = self.problem
        params = {k: v.detach().clone() for k, v in problem.inner_init.items()}
        outer = {k: v.detach().requires_grad_(True) for k, v in self.outer.items()}
        constant_outer = {k: v.detach() for k, v in self.outer.items()}
        for _ in range(self.case.inner_steps):
            leaves = {k: v.requires_grad_(True) for k, v in params.items()}
            loss = problem.inner_loss(leaves, constant_outer, problem.train)
            grads = torch.autograd.grad(loss, list(leaves.values()))
            params = {k: (leaves[k] - problem.inner_lr * g).detach() for k, g in zip(leaves, grads)}
        self._inner = params
        theta = {k: v.requires_grad_(True) for k, v in params.items()}
        dg_inner, dg_outer = _gradients(problem.outer_loss(outer, theta, problem.val), theta, outer)
        df_theta = torch.autograd.grad(
            problem.inner_loss(theta, outer, problem.train), list(theta.values()), create_graph=True
        )

        def hvp(vector: Params) -> Params:
            found = torch.autograd.grad(df_theta, list(theta.values()), grad_outputs=list(vector.values()), retain_graph=True)
            return dict(zip(theta, found))

        v = conjugate_gradient(hvp, dg_inner, self.case.cg_iters)
        mixed = torch.autograd.grad(df_theta, list(outer.values()), grad_outputs=list(v.values()), allow_unused=True)
        return {k: dg_outer[k] - (0.0 if m is None else m) for k, m in zip(outer, mixed)}


def _gradients(loss: Tensor, theta: Params, outer: Params) -> tuple[Params, Params]:
    """Return the gradients of ``loss`` with respect to ``theta`` and ``outer``, zeros where unused."""
    inputs = [*theta.values(), *outer.values()]
    found = torch.autograd.grad(loss, inputs, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, found)]
    return dict(zip(theta, grads[: len(theta)])), dict(zip(outer, grads[len(theta) :]))
