"""Hypergradients against closed forms: ridge regression, one-weight SGD, one Adam step, a cubic root."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from chronos.core import InnerProblem, OuterOptimizer
from chronos.errors import HypergradientError
from chronos.optim import adam, outer, sgd
from chronos.solver import ImplicitDifferentiation, UnrolledDifferentiation

DTYPE = torch.float64
FULL_BATCH = itertools.repeat(None)


class Ridge:
    r"""Inner :math:`\tfrac12\|Xw - y\|^2 + \tfrac12\lambda\|w\|^2`, outer :math:`\tfrac12\|X_v w^* - y_v\|^2`."""

    def __init__(self, lam: float = 0.5) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(20, 4, generator=generator, dtype=DTYPE)
        self.y = torch.randn(20, generator=generator, dtype=DTYPE)
        self.x_val = torch.randn(15, 4, generator=generator, dtype=DTYPE)
        self.y_val = torch.randn(15, generator=generator, dtype=DTYPE)
        self.lam = lam
        self.hessian = self.x.T @ self.x + lam * torch.eye(4, dtype=DTYPE)

    def inner_loss(self, params, outer_params, batch):
        residual = self.x @ params["w"] - self.y
        return 0.5 * (residual @ residual) + 0.5 * outer_params["lam"] * (params["w"] @ params["w"])

    def outer_loss(self, outer_params, inner_params, data):
        residual = self.x_val @ inner_params["w"] - self.y_val
        return 0.5 * (residual @ residual)

    def closed_form(self) -> float:
        w_star = torch.linalg.solve(self.hessian, self.x.T @ self.y)
        g_val = self.x_val.T @ (self.x_val @ w_star - self.y_val)
        return float(-g_val @ torch.linalg.solve(self.hessian, w_star))

    def eigenvalues(self) -> torch.Tensor:
        return torch.linalg.eigvalsh(self.hessian)

    def hypergradient(self, method_factory, steps: int) -> float:
        lr = 1.0 / float(self.eigenvalues()[-1])
        outer_opt = OuterOptimizer({"lam": torch.tensor(self.lam, dtype=DTYPE)}, sgd(lr=0.1), self.outer_loss, None)
        method = method_factory(outer_opt)
        inner = InnerProblem(self.inner_loss, sgd(lr=lr))
        init = {"w": torch.zeros(4, dtype=DTYPE)}
        _, trajectory = inner.solve(outer_opt.params, init, steps, FULL_BATCH, track_last=method.track_last)
        return float(method.compute_hypergradient(trajectory, inner)["lam"])


# Gradient descent with lr = 1 / lambda_max contracts the error by
# 1 - lambda_min / lambda_max per step (about 0.8 for this X); 400 steps leave
# below 1e-30 in the iterate and 400 * 0.8^400 in its derivative, so the
# remaining error is rounding, far below the 1e-6 relative tolerance.
STEPS = 400


def test_ridge_implicit_cg_matches_closed_form() -> None:
    ridge = Ridge()
    value = ridge.hypergradient(lambda o: ImplicitDifferentiation(o, solver="cg", iters=20), STEPS)
    assert value == pytest.approx(ridge.closed_form(), rel=1e-6)


def test_ridge_full_unroll_matches_closed_form() -> None:
    ridge = Ridge()
    value = ridge.hypergradient(lambda o: UnrolledDifferentiation(o), STEPS)
    assert value == pytest.approx(ridge.closed_form(), rel=1e-6)


def test_ridge_neumann_converges_below_bound() -> None:
    ridge = Ridge()
    alpha = 1.0 / float(ridge.eigenvalues()[-1])
    # The series error after K terms is (1 - alpha * lambda_min)^K, about 0.8^K here.
    value = ridge.hypergradient(lambda o: ImplicitDifferentiation(o, solver="neumann", iters=200, alpha=alpha), STEPS)
    assert value == pytest.approx(ridge.closed_form(), rel=1e-6)


def test_ridge_neumann_default_alpha_converges() -> None:
    ridge = Ridge()
    value = ridge.hypergradient(lambda o: ImplicitDifferentiation(o, solver="neumann", iters=300), STEPS)
    assert value == pytest.approx(ridge.closed_form(), rel=1e-6)


def test_ridge_neumann_raises_above_bound() -> None:
    ridge = Ridge()
    alpha = 2.5 / float(ridge.eigenvalues()[-1])

    def neumann(outer_opt: OuterOptimizer) -> ImplicitDifferentiation:
        return ImplicitDifferentiation(outer_opt, solver="neumann", iters=200, alpha=alpha)

    with pytest.raises(HypergradientError, match=r"(?s)diverges.*below 2 / lambda_max.*smaller alpha, or solver='cg'"):
        ridge.hypergradient(neumann, STEPS)


def _one_weight():
    """Inner (w - 1)^2 from w0 with one SGD step at lr, outer (w - 1)^2."""
    outer_opt = OuterOptimizer(
        {"w0": torch.tensor(0.5, dtype=DTYPE), "lr": torch.tensor(0.1, dtype=DTYPE)},
        sgd(lr=0.01),
        lambda o, inner_params, data: (inner_params["w"] - 1) ** 2,
        None,
    )
    inner = InnerProblem(lambda params, o, data: (params["w"] - 1) ** 2, sgd(lr=outer("lr")))
    method = UnrolledDifferentiation(outer_opt)
    init = {"w": outer_opt.params["w0"]}
    _, trajectory = inner.solve(outer_opt.params, init, 1, FULL_BATCH, track_last=method.track_last)
    return method.compute_hypergradient(trajectory, inner)


def test_one_weight_init_hypergradient() -> None:
    # w1 = w0 - 2 lr (w0 - 1) = 0.6; d outer / d w1 = 2 (w1 - 1) = -0.8; d w1 / d w0 = 1 - 2 lr = 0.8.
    assert float(_one_weight()["w0"]) == pytest.approx(-0.64, abs=1e-12)


def test_one_weight_lr_hypergradient() -> None:
    # d w1 / d lr = -2 (w0 - 1) = 1, so d outer / d lr = -0.8.
    assert float(_one_weight()["lr"]) == pytest.approx(-0.8, abs=1e-12)


def test_one_weight_implicit_gives_lr_zero() -> None:
    outer_opt = OuterOptimizer(
        {"lr": torch.tensor(0.1, dtype=DTYPE)},
        sgd(lr=0.01),
        lambda o, inner_params, data: (inner_params["w"] - 1) ** 2,
        None,
    )
    inner = InnerProblem(lambda params, o, data: (params["w"] - 2) ** 2, sgd(lr=outer("lr")))
    method = ImplicitDifferentiation(outer_opt)
    init = {"w": torch.tensor(0.5, dtype=DTYPE)}
    _, trajectory = inner.solve(outer_opt.params, init, 5, FULL_BATCH, track_last=method.track_last)
    assert float(method.compute_hypergradient(trajectory, inner)["lr"]) == 0.0


def _adam_meta_gradient() -> torch.Tensor:
    outer_opt = OuterOptimizer(
        {"w": torch.tensor([0.7, 0.2], dtype=DTYPE)},
        sgd(lr=0.01),
        lambda o, p, data: 0.5 * (p["w"][0] - 0.3) ** 2 + 0.5 * (p["w"][1] + 0.4) ** 2,
        None,
    )
    inner = InnerProblem(lambda p, o, data: 0.5 * (2 * p["w"][0] + 0 * p["w"][1] - 1) ** 2, adam(lr=0.1))
    method = UnrolledDifferentiation(outer_opt)
    init = {"w": outer_opt.params["w"]}
    _, trajectory = inner.solve(outer_opt.params, init, 1, FULL_BATCH, track_last=method.track_last)
    return method.compute_hypergradient(trajectory, inner)["w"]


def test_adam_zero_gradient_meta_gradient_finite() -> None:
    assert bool(torch.isfinite(_adam_meta_gradient()).all())


def test_adam_zero_gradient_meta_gradient_value() -> None:
    # One Adam step moves w1 by lr * phi(g) with phi(g) = g / (sqrt(g^2 + eps_root) + eps),
    # g = 2 (2 w1 - 1) = 0.8, so w1' = 0.6 and d outer / d w1 = 0.3 * (1 - lr * 4 * phi'(g)).
    # phi'(g) = (eps_root + eps s) / (s (s + eps)^2) with s = sqrt(g^2 + eps_root), about
    # eps / g^2 = 1.6e-8, so the deviation from 0.3 is about 0.3 * 0.4 * 1.6e-8 = 2e-9.
    # w2 has zero gradient: it does not move, and d outer / d w2 = w2 + 0.4 = 0.6 exactly
    # (phi'(0) = 1 / (2 sqrt(eps_root)) = 5e7 is finite and multiplies d g2 / d w2 = 0).
    expected = torch.tensor([0.3, 0.6], dtype=DTYPE)
    torch.testing.assert_close(_adam_meta_gradient(), expected, rtol=0, atol=1e-8)


def _cubic_hypergradient(shape: tuple[int, ...], method_factory) -> torch.Tensor:
    """Inner theta x^4 / 4 - x^2 / 2 - 2 x (stationary where theta x^3 - x - 2 = 0), outer x."""
    outer_opt = OuterOptimizer(
        {"theta": torch.ones(shape, dtype=DTYPE)}, sgd(lr=0.01), lambda o, p, data: p["x"], None
    )
    inner = InnerProblem(
        lambda p, o, data: (o["theta"] * p["x"] ** 4 / 4 - p["x"] ** 2 / 2 - 2 * p["x"]).sum(),
        sgd(lr=0.1),
    )
    method = method_factory(outer_opt)
    init = {"x": torch.tensor(1.5, dtype=DTYPE)}
    # The Hessian at the root is 3 x^2 - 1 = 5.94, so GD with lr 0.1 contracts by 0.41 per step.
    _, trajectory = inner.solve(outer_opt.params, init, 100, FULL_BATCH, track_last=method.track_last)
    return method.compute_hypergradient(trajectory, inner)["theta"]


def _cubic_expected() -> float:
    # Implicit function theorem: d x / d theta = -x^3 / (3 theta x^2 - 1) at the real root
    # of x^3 - x - 2, found here by Newton's method (quadratic convergence from 1.5).
    root = 1.5
    for _ in range(20):
        root -= (root**3 - root - 2) / (3 * root**2 - 1)
    return -(root**3) / (3 * root**2 - 1)


METHODS = {
    "cg": lambda o: ImplicitDifferentiation(o),
    "neumann": lambda o: ImplicitDifferentiation(o, solver="neumann", iters=100),
    "unrolled": lambda o: UnrolledDifferentiation(o),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_cubic_zero_dim_matches_vector(method: str) -> None:
    scalar = _cubic_hypergradient((), METHODS[method])
    vector = _cubic_hypergradient((1,), METHODS[method])
    assert scalar.shape == ()
    assert vector.shape == (1,)
    assert float(scalar) == pytest.approx(float(vector[0]), rel=1e-12)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_cubic_matches_implicit_function_theorem(method: str) -> None:
    value = float(_cubic_hypergradient((), METHODS[method]))
    assert value == pytest.approx(-0.592447, abs=1e-6)
    assert value == pytest.approx(_cubic_expected(), rel=1e-9)
    assert not math.isclose(value, 0.0)
