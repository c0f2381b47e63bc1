"""Matrix-free linear solvers on lists of tensors, for implicit hypergradients.

The matrix is a symmetric Hessian :math:`H` seen only through a
Hessian-vector product ``hvp(v) -> H v``. Vectors are lists of tensors of any
shapes (one per variable), treated as one flat vector. The solvers never
return inf or NaN: they raise :class:`chronos.errors.HypergradientError`
instead.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from chronos.errors import HypergradientError

__all__ = ["conjugate_gradient", "estimate_lambda_max", "neumann_series"]

logger = logging.getLogger(__name__)

HVP = Callable[[list[Tensor]], list[Tensor]]


def _dot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> float:
    return sum(float(torch.sum(x * y)) for x, y in zip(xs, ys))


def _norm(xs: Sequence[Tensor]) -> float:
    return math.sqrt(sum(float(torch.sum(x * x)) for x in xs))


def _axpy(alpha: float, xs: Sequence[Tensor], ys: Sequence[Tensor]) -> list[Tensor]:
    """Return ``alpha * x + y`` elementwise over the lists."""
    return [alpha * x + y for x, y in zip(xs, ys)]


def _all_finite(xs: Sequence[Tensor]) -> bool:
    return all(bool(torch.isfinite(x).all()) for x in xs)


def conjugate_gradient(hvp: HVP, b: list[Tensor], *, iters: int, tol: float) -> list[Tensor]:
    r"""Solve :math:`H x = b` by conjugate gradient, starting from :math:`x_0 = 0`.

    Each iteration, with residual :math:`r_k = b - H x_k` and direction :math:`p_k`:

    .. math::

        \alpha_k = \frac{r_k^\top r_k}{p_k^\top H p_k}, \quad
        x_{k+1} = x_k + \alpha_k p_k, \quad
        r_{k+1} = r_k - \alpha_k H p_k, \quad
        p_{k+1} = r_{k+1} + \frac{r_{k+1}^\top r_{k+1}}{r_k^\top r_k} p_k

    Stops after ``iters`` iterations or once :math:`\|r_k\| \le tol \cdot \|b\|`
    (a relative tolerance). Stopping at ``iters`` before that tolerance is
    logged at info level and the current iterate is returned.

    Raises:
        HypergradientError: :math:`p^\top H p \le 0` (the Hessian is not
            positive definite along a search direction), or a residual or
            curvature is not finite.
    """
    b_norm = _norm(b)
    x = [torch.zeros_like(t) for t in b]
    if b_norm == 0.0:
        return x
    if not math.isfinite(b_norm):
        raise HypergradientError("conjugate gradient got a right-hand side with inf or NaN entries")
    r = [t.clone() for t in b]
    p = [t.clone() for t in b]
    rs = _norm(r) ** 2
    for k in range(iters):
        hp = hvp(p)
        curvature = _dot(p, hp)
        _check_curvature(curvature, k)
        step = rs / curvature
        x = _axpy(step, p, x)
        r = _axpy(-step, hp, r)
        rs_next = _norm(r) ** 2
        if not math.isfinite(rs_next):
            raise HypergradientError(f"conjugate gradient residual became non-finite at iteration {k + 1}")
        if math.sqrt(rs_next) <= tol * b_norm:
            logger.debug("cg converged after %s iterations, residual %.3e", k + 1, math.sqrt(rs_next))
            return x
        p = _axpy(rs_next / rs, p, r)
        rs = rs_next
    logger.info(
        "cg stopped after %s iterations with relative residual %.3e above tol %.1e",
        iters,
        math.sqrt(rs) / b_norm,
        tol,
    )
    return x


def _check_curvature(curvature: float, iteration: int) -> None:
    if not math.isfinite(curvature):
        raise HypergradientError(
            f"conjugate gradient got a non-finite curvature p^T H p = {curvature} at iteration "
            f"{iteration + 1}",
            hint="check the inner objective for inf or NaN values at the inner solution",
        )
    if curvature <= 0.0:
        raise HypergradientError(
            f"the inner Hessian is not positive definite: conjugate gradient found negative "
            f"curvature p^T H p = {curvature:.3e} <= 0 at iteration {iteration + 1}",
            hint=(
                "the inner solution is not a strict local minimum; train the inner level longer, "
                "add damping (implicit(cg, damping = 0.1) solves (H + 0.1 I) v = g), "
                "or use unrolled differentiation"
            ),
        )


def neumann_series(hvp: HVP, b: list[Tensor], *, iters: int, alpha: float) -> list[Tensor]:
    r"""Approximate :math:`H^{-1} b` by a truncated Neumann series.

    .. math::

        v = \alpha \sum_{k=0}^{K} (I - \alpha H)^k b, \qquad K = \text{iters}

    The series converges when every eigenvalue of :math:`I - \alpha H` lies in
    (-1, 1), that is :math:`0 < \alpha < 2 / \lambda_{max}` for a positive
    definite :math:`H`. For a symmetric :math:`H` the norm of the terms then
    never grows, so a term larger than the one before it (beyond a rounding
    allowance of :math:`\sqrt{\epsilon}` of the dtype) means divergence.

    NOTE: an eigenvalue of exactly 0 keeps its component of the terms constant
    instead of growing. A singular Hessian with ``b`` outside its range therefore
    makes the sum grow linearly with ``iters`` without an error (cg raises there).

    Raises:
        HypergradientError: the terms grow or become non-finite. When they
            grow along a direction of negative curvature, the message states
            that the Hessian is not positive definite and suggests damping.
            Otherwise it states that alpha must be below 2 / lambda_max and
            suggests a smaller alpha or cg.
    """
    if not alpha > 0.0:
        raise HypergradientError(f"the Neumann step alpha must be positive, got {alpha}")
    term = [t.clone() for t in b]
    total = [t.clone() for t in b]
    previous = _norm(term)
    if previous == 0.0:
        return total
    allowance = 1.0 + math.sqrt(torch.finfo(b[0].dtype).eps)
    for k in range(1, iters + 1):
        hterm = hvp(term)
        last = term
        term = _axpy(-alpha, hterm, term)
        size = _norm(term)
        if not math.isfinite(size) or size > allowance * previous:
            curvature = _growth_curvature(hvp, last, alpha)
            if math.isfinite(curvature) and curvature < 0.0:
                raise HypergradientError(
                    f"the inner Hessian is not positive definite: the Neumann series grew along a "
                    f"direction of negative curvature (v^T H v / v^T v = {curvature:.3e}) at term {k}",
                    hint=(
                        "a smaller alpha does not help; add damping (implicit(neumann, damping = 0.1)), "
                        "train the inner level longer, or use unrolled differentiation"
                    ),
                )
            _raise_divergence(k, size / previous if previous > 0 else math.inf, alpha)
        total = [s + t for s, t in zip(total, term)]
        previous = size
    result = [alpha * t for t in total]
    if not _all_finite(result):
        _raise_divergence(iters, math.inf, alpha)
    return result


def _growth_curvature(hvp: HVP, start: list[Tensor], alpha: float, iters: int = 10) -> float:
    """Return v^T H v for the direction v that the Neumann terms grow along.

    Repeating v <- (I - alpha H) v with normalization converges to the
    eigenvector whose factor |1 - alpha lambda| is largest. Negative curvature
    there means the terms grow because H has a negative eigenvalue, which no
    alpha can fix; positive curvature means alpha overshoots.
    """
    size = _norm(start)
    if not math.isfinite(size) or size == 0.0:
        return math.nan
    v = [t / size for t in start]
    for _ in range(iters):
        v = _axpy(-alpha, hvp(v), v)
        size = _norm(v)
        if not math.isfinite(size) or size == 0.0:
            return math.nan
        v = [t / size for t in v]
    return _dot(v, hvp(v))


def _raise_divergence(iteration: int, growth: float, alpha: float) -> None:
    # A growth factor r = |1 - alpha * lambda| > 1 from overshooting means
    # lambda = (1 + r) / alpha, a lower bound on lambda_max.
    estimate = ""
    if math.isfinite(growth):
        lam = (1.0 + growth) / alpha
        estimate = f"; the growth suggests lambda_max >= {lam:.3g}, so alpha < {2.0 / lam:.3g}"
    raise HypergradientError(
        f"the Neumann series diverges: its term {iteration} grew by a factor {growth:.4g} "
        f"with alpha = {alpha:g}. The series converges only when alpha is below "
        f"2 / lambda_max of the inner Hessian (its largest eigenvalue) and the Hessian is "
        f"positive definite{estimate}",
        hint="use a smaller alpha, or solver='cg'",
    )


def estimate_lambda_max(hvp: HVP, like: list[Tensor], *, iters: int = 20, seed: int = 0) -> float:
    r"""Estimate the largest eigenvalue of :math:`H` by power iteration.

    Returns the Rayleigh quotient :math:`v^\top H v` of the last unit iterate,
    which is at most :math:`\lambda_{max}` for a symmetric :math:`H`, so it can
    underestimate when the top eigenvalues are close. ``like`` gives the shapes,
    dtypes and devices; the start vector is random with a fixed ``seed``.

    Raises:
        HypergradientError: the Hessian-vector product is not finite.
    """
    generator = torch.Generator().manual_seed(seed)
    v = [torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device) for t in like]
    estimate = 0.0
    for _ in range(iters):
        size = _norm(v)
        if size == 0.0:
            return 0.0
        v = [t / size for t in v]
        hv = hvp(v)
        estimate = _dot(v, hv)
        if not math.isfinite(estimate):
            raise HypergradientError("the inner Hessian-vector product is not finite")
        v = hv
    return estimate
