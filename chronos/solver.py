r"""Hypergradient engines: unrolled and implicit differentiation behind one interface.

For outer variables :math:`\lambda`, inner variables :math:`\theta`, inner
objective :math:`f(\theta, \lambda)` and outer objective :math:`g(\lambda, \theta)`,
every method approximates the total derivative

.. math::

    \frac{d}{d\lambda} g\big(\lambda, \theta^*(\lambda)\big)
    = \frac{\partial g}{\partial \lambda}
      + \Big(\frac{d\theta^*}{d\lambda}\Big)^{\!\top} \frac{\partial g}{\partial \theta}

where :math:`\theta^*(\lambda)` is the result of the inner solve. The first
term (the outer objective reading its own variables) is always included. With
several trajectories (one per task) the hypergradients are averaged. An outer
variable with no path to the outer objective gets zeros, never None.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from chronos.core import InnerProblem, OuterOptimizer, Params, Trajectory, as_list
from chronos.errors import HypergradientError, SpecError
from chronos.linalg import conjugate_gradient, estimate_lambda_max, neumann_series

__all__ = ["HypergradientMethod", "ImplicitDifferentiation", "UnrolledDifferentiation"]

logger = logging.getLogger(__name__)

HVP = Callable[[list[Tensor]], list[Tensor]]


class HypergradientMethod:
    """Base class: computes the hypergradient for ``outer`` and applies it.

    ``track_last`` is the value that :meth:`InnerProblem.solve` must be given
    for this method (None: every step).
    """

    name = ""
    track_last: Optional[int] = 0

    def __init__(self, outer: OuterOptimizer) -> None:
        self.outer = outer

    def compute_hypergradient(
        self, trajectories: Union[Trajectory, Sequence[Trajectory]], inner_problem: InnerProblem
    ) -> Params:
        """Return the hypergradient keyed like ``outer.params``, averaged over the trajectories.

        Raises:
            HypergradientError: no trajectory, a trajectory the method cannot
                use, or a result with inf or NaN entries.
        """
        items = as_list(trajectories)
        total = {k: torch.zeros_like(p) for k, p in self.outer.params.items()}
        for trajectory in items:
            single = self._compute_one(trajectory, inner_problem)
            total = {k: total[k] + single[k] for k in total}
        result = {k: v.detach() / len(items) for k, v in total.items()}
        self._check_finite(result)
        return result

    def step(self, hypergradient: Params) -> None:
        """Apply ``hypergradient`` with the outer optimizer (:meth:`OuterOptimizer.step`)."""
        self.outer.step(hypergradient)

    def _compute_one(self, trajectory: Trajectory, inner_problem: InnerProblem) -> Params:
        raise NotImplementedError

    def _check_finite(self, hypergradient: Params) -> None:
        for key, value in hypergradient.items():
            if not bool(torch.isfinite(value).all()):
                raise HypergradientError(
                    f"the {self.name} hypergradient of outer variable '{key}' contains inf or NaN",
                    level=self.outer.name,
                    hint="lower the inner learning rate, or try another hypergradient method",
                )


def _outer_variables(outer: OuterOptimizer, trajectory: Trajectory) -> Params:
    """Return the outer tensors to differentiate: those the solve read, else ``outer.params``."""
    variables: Params = {}
    for key, param in outer.params.items():
        tensor = trajectory.outer_params.get(key, param)
        if not tensor.requires_grad:
            raise HypergradientError(
                f"outer variable '{key}' given to the inner solve does not require grad, so no "
                f"hypergradient can reach it",
                level=outer.name,
                hint="pass outer.params (not detached copies) to InnerProblem.solve",
            )
        variables[key] = tensor
    return variables


def _grads_or_zeros(loss: Tensor, inputs: list[Tensor], *, retain_graph: bool = False) -> list[Tensor]:
    """Differentiate ``loss`` with respect to ``inputs``; inputs with no path get zeros."""
    if not loss.requires_grad or not inputs:
        return [torch.zeros_like(t) for t in inputs]
    found = torch.autograd.grad(loss, inputs, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, found)]


class UnrolledDifferentiation(HypergradientMethod):
    r"""Reverse-mode differentiation through the inner optimizer steps.

    With :math:`\theta_{t+1} = \Phi(\theta_t, \lambda)` the optimizer update and
    :math:`T` inner steps, backpropagation computes

    .. math::

        \frac{dg}{d\lambda} = \frac{\partial g}{\partial \lambda}
        + \sum_{t=T-K}^{T-1} \Big(\frac{\partial \Phi(\theta_t, \lambda)}{\partial \lambda}\Big)^{\!\top}
          \Big(\prod_{s=t+1}^{T-1} \frac{\partial \Phi(\theta_s, \lambda)}{\partial \theta_s}\Big)^{\!\top}
          \frac{\partial g}{\partial \theta_T}

    with :math:`K = T` for the full unroll (``last=None``) or the truncated
    window ``last = K``, which treats :math:`\theta_{T-K}` as a constant. The
    sum reaches outer variables read by the objective and those read only by the
    optimizer (``outer("lr")``). With ``K = T`` and initial inner params that
    are outer variables, it also reaches them. Memory grows with K. The graph
    of a trajectory is freed by this call, so it can be used once.
    """

    name = "unrolled"

    def __init__(self, outer: OuterOptimizer, *, last: Optional[int] = None) -> None:
        super().__init__(outer)
        if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
            raise SpecError(f"unrolled(last=...) must be None (full unroll) or an int >= 1, got {last!r}")
        self.last = last
        self.track_last = last

    def _compute_one(self, trajectory: Trajectory, inner_problem: InnerProblem) -> Params:
        self._check_tracking(trajectory, inner_problem)
        variables = _outer_variables(self.outer, trajectory)
        with torch.enable_grad():
            loss = self.outer.evaluate(variables, trajectory.final_params)
            grads = _grads_or_zeros(loss, list(variables.values()))
        return dict(zip(variables, grads))

    def _check_tracking(self, trajectory: Trajectory, inner_problem: InnerProblem) -> None:
        needed = trajectory.num_steps if self.last is None else min(self.last, trajectory.num_steps)
        tracked = trajectory.tracked_steps()
        if tracked != needed:
            raise HypergradientError(
                f"unrolled differentiation over the last {needed} of {trajectory.num_steps} inner "
                f"steps needs the graph of exactly those steps, but the trajectory kept {tracked}",
                level=inner_problem.name,
                hint="pass track_last=method.track_last to InnerProblem.solve",
            )


class ImplicitDifferentiation(HypergradientMethod):
    r"""Implicit differentiation at the final inner params (implicit function theorem).

    At a stationary point :math:`\nabla_\theta f(\theta^*, \lambda) = 0` with a
    positive definite Hessian :math:`H = \nabla^2_{\theta\theta} f`,

    .. math::

        H v = \frac{\partial g}{\partial \theta}\Big|_{\theta^*}, \qquad
        \frac{dg}{d\lambda} = \frac{\partial g}{\partial \lambda}
          - \Big(\frac{\partial^2 f}{\partial \lambda\, \partial \theta}\Big)^{\!\top} v

    :math:`v` is found with Hessian-vector products, by conjugate gradient
    (``solver="cg"``, ``iters``, relative ``tol``) or the Neumann series
    :math:`v = \alpha \sum_{k=0}^{iters} (I - \alpha H)^k \partial g / \partial \theta`
    (``solver="neumann"``). ``alpha=None`` takes :math:`1 / \lambda_{max}`
    estimated by 20 steps of power iteration.

    :math:`f` is evaluated once, on the batch of the last inner step, at the
    detached final params. Memory therefore does not grow with the number of
    inner steps. Solve with ``track_last=0``, this method's ``track_last``.

    ``damping`` :math:`\delta \ge 0` replaces :math:`H` by :math:`H + \delta I`.
    It makes an indefinite or ill-conditioned Hessian (a nonconvex inner
    problem, an inner solve that stopped early) solvable by conjugate gradient,
    at the cost of a hypergradient biased towards :math:`\partial g / \partial \theta`
    scaled by :math:`1 / \delta` as :math:`\delta` grows.

    The inner optimizer's weight decay :math:`\mu` moves its fixed point to
    :math:`\nabla_\theta f + \mu \theta = 0`, so :math:`H` includes
    :math:`\mu I`. Outer variables read only by the inner optimizer
    (``outer("lr")``, ``outer("weight_decay")``) get exactly zero from this
    method: the learning rate and momentum do not move the fixed point.
    NOTE: weight decay does move it, so ``outer("weight_decay")`` gets zero
    although its true hypergradient is not zero; use unrolled differentiation
    for it.
    """

    name = "implicit"
    track_last = 0
    _SOLVERS = ("cg", "neumann")

    def __init__(
        self,
        outer: OuterOptimizer,
        *,
        solver: str = "cg",
        iters: int = 20,
        tol: float = 1e-10,
        alpha: Optional[float] = None,
        damping: float = 0.0,
    ) -> None:
        super().__init__(outer)
        if solver not in self._SOLVERS:
            raise SpecError(f"unknown implicit solver '{solver}'; valid ones: {', '.join(self._SOLVERS)}")
        if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
            raise SpecError(f"implicit(iters=...) must be an int >= 1, got {iters!r}")
        if not (isinstance(tol, (int, float)) and tol >= 0):
            raise SpecError(f"implicit(tol=...) must be a number >= 0, got {tol!r}")
        if alpha is not None and not (isinstance(alpha, (int, float)) and alpha > 0):
            raise SpecError(f"implicit(alpha=...) must be a number > 0, got {alpha!r}")
        self.solver = solver
        self.iters = iters
        self.tol = float(tol)
        self.alpha = None if alpha is None else float(alpha)
        if isinstance(damping, bool) or not (isinstance(damping, (int, float)) and damping >= 0):
            raise SpecError(f"implicit(damping=...) must be a number >= 0, got {damping!r}")
        self.damping = float(damping)

    def _compute_one(self, trajectory: Trajectory, inner_problem: InnerProblem) -> Params:
        if trajectory.num_steps == 0:
            raise HypergradientError(
                "implicit differentiation needs at least one inner step: the Hessian is evaluated "
                "on the batch of the last step",
                level=inner_problem.name,
            )
        variables = _outer_variables(self.outer, trajectory)
        inner_outer = {**trajectory.outer_params, **variables}
        theta = {k: p.detach().requires_grad_(True) for k, p in trajectory.final_params.items()}
        with torch.enable_grad():
            dg_theta, dg_lambda = self._outer_partials(variables, theta)
            df_theta = inner_problem.gradient(theta, inner_outer, trajectory.last_batch, create_graph=True)
            if logger.isEnabledFor(logging.DEBUG):
                gradient_norm = math.sqrt(sum(float((d.detach() ** 2).sum()) for d in df_theta.values()))
                logger.debug("level %s: inner gradient norm %.3e at the implicit point", inner_problem.name, gradient_norm)
            decay = _weight_decay(inner_problem, trajectory)
            hvp = _make_hvp(df_theta, theta, decay + self.damping)
            v = self._solve(hvp, dg_theta, inner_problem.name)
            mixed = _mixed_product(df_theta, variables, v)
        return {k: dg_lambda[i] - mixed[i] for i, k in enumerate(variables)}

    def _outer_partials(self, variables: Params, theta: Params) -> tuple[list[Tensor], list[Tensor]]:
        loss = self.outer.evaluate(variables, theta)
        inputs = list(theta.values()) + list(variables.values())
        grads = [g.detach() for g in _grads_or_zeros(loss, inputs)]
        return grads[: len(theta)], grads[len(theta) :]

    def _solve(self, hvp: HVP, rhs: list[Tensor], level: str) -> list[Tensor]:
        try:
            if self.solver == "cg":
                return conjugate_gradient(hvp, rhs, iters=self.iters, tol=self.tol)
            alpha = self.alpha if self.alpha is not None else _default_alpha(hvp, rhs)
            return neumann_series(hvp, rhs, iters=self.iters, alpha=alpha)
        except HypergradientError as error:
            if error.level is not None:
                raise
            hint = error.hint
            if self.damping and hint and "add damping" in hint:
                hint = (
                    f"the damping is {self.damping:g} already; raise it (solving (H + d I) v = g with a "
                    "larger d), train the inner level longer, or use unrolled differentiation"
                )
            raise HypergradientError(error.message, level=level, hint=hint) from error


def _default_alpha(hvp: HVP, rhs: list[Tensor]) -> float:
    top = estimate_lambda_max(hvp, rhs)
    if not top > 0.0 or not math.isfinite(top):
        raise HypergradientError(
            f"the inner Hessian is not positive definite (power iteration estimate of its "
            f"largest eigenvalue: {top:.3e})",
            hint="use solver='cg' to diagnose, or check that the inner solve converged",
        )
    logger.debug("neumann alpha = 1 / %.3e from power iteration", top)
    return 1.0 / top


def _weight_decay(inner_problem: InnerProblem, trajectory: Trajectory) -> float:
    """Return the inner optimizer's weight decay as a number (detached), 0 if it has none."""
    hyper = inner_problem.optimizer.resolve(trajectory.outer_params, level=inner_problem.name)
    value = hyper.get("weight_decay", 0.0)
    return float(value.detach()) if isinstance(value, Tensor) else float(value)


def _make_hvp(df_theta: Params, theta: Params, decay: float) -> HVP:
    r"""Return :math:`v \mapsto (\nabla^2_{\theta\theta} f + \mu I) v` on lists ordered like ``theta``."""
    keys = list(theta)
    inputs = [theta[k] for k in keys]
    live = [i for i, k in enumerate(keys) if df_theta[k].requires_grad]

    def hvp(vs: list[Tensor]) -> list[Tensor]:
        out = [decay * v for v in vs]
        if not live:
            return out
        found = torch.autograd.grad(
            [df_theta[keys[i]] for i in live],
            inputs,
            grad_outputs=[vs[i] for i in live],
            retain_graph=True,
            allow_unused=True,
        )
        return [o if f is None else o + f.detach() for o, f in zip(out, found)]

    return hvp


def _mixed_product(df_theta: Params, variables: Params, v: list[Tensor]) -> list[Tensor]:
    r"""Return :math:`(\partial^2 f / \partial\lambda\,\partial\theta)^\top v`, zeros where no path exists."""
    outputs = list(df_theta.values())
    live = [i for i, d in enumerate(outputs) if d.requires_grad]
    inputs = list(variables.values())
    if not live or not inputs:
        return [torch.zeros_like(t) for t in inputs]
    found = torch.autograd.grad(
        [outputs[i] for i in live],
        inputs,
        grad_outputs=[v[i] for i in live],
        allow_unused=True,
    )
    return [torch.zeros_like(t) if f is None else f.detach() for t, f in zip(inputs, found)]
