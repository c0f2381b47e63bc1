"""Hypergradient engines against central finite differences, plus their contracts and errors."""

from __future__ import annotations

import itertools

import pytest
import torch

from chronos.core import InnerProblem, OuterOptimizer
from chronos.errors import HypergradientError, SpecError
from chronos.optim import sgd
from chronos.solver import ImplicitDifferentiation, UnrolledDifferentiation

DTYPE = torch.float64
FULL_BATCH = itertools.repeat(None)
# Central differences in float64 have error ~ h^2 f''' + eps / h, about 1e-10
# here, so 1e-6 relative leaves room for the inner-solve error as well.
STEP = 1e-5
RTOL = 1e-6


class SmallProblem:
    r"""A random bilevel problem with a non-quadratic, strongly convex inner objective.

    Inner :math:`f = \tfrac12\|A\theta - b\|^2 + \tfrac12\sum_i e^{\lambda_i}\theta_i^2 + 0.05\sum_i \theta_i^4`,
    outer :math:`g = \tfrac12\|C\theta - d\|^2 + 0.1\|\lambda\|^2` (a direct term).
    """

    def __init__(self, dtype: torch.dtype = DTYPE) -> None:
        generator = torch.Generator().manual_seed(3)
        self.a = torch.randn(6, 3, generator=generator, dtype=DTYPE).to(dtype)
        self.b = torch.randn(6, generator=generator, dtype=DTYPE).to(dtype)
        self.c = torch.randn(4, 3, generator=generator, dtype=DTYPE).to(dtype)
        self.d = torch.randn(4, generator=generator, dtype=DTYPE).to(dtype)
        self.lam = 0.3 * torch.randn(3, generator=generator, dtype=DTYPE).to(dtype)
        self.init = {"theta": torch.zeros(3, dtype=dtype)}

    def inner_loss(self, params, outer_params, batch):
        theta = params["theta"]
        residual = self.a @ theta - self.b
        penalty = torch.exp(outer_params["lam"]) @ (theta * theta)
        return 0.5 * (residual @ residual) + 0.5 * penalty + 0.05 * (theta**4).sum()

    def outer_loss(self, outer_params, inner_params, data):
        residual = self.c @ inner_params["theta"] - self.d
        return 0.5 * (residual @ residual) + 0.1 * (outer_params["lam"] @ outer_params["lam"])

    def inner(self) -> InnerProblem:
        return InnerProblem(self.inner_loss, sgd(lr=0.05, momentum=0.5))

    def outer(self) -> OuterOptimizer:
        return OuterOptimizer({"lam": self.lam}, sgd(lr=0.1), self.outer_loss, None)

    def finite_difference(self, value_at) -> torch.Tensor:
        """Return central differences of ``value_at(lam)`` in each coordinate of lam."""
        grad = torch.zeros(3, dtype=DTYPE)
        for i in range(3):
            shift = torch.zeros(3, dtype=DTYPE)
            shift[i] = STEP
            grad[i] = (value_at(self.lam + shift) - value_at(self.lam - shift)) / (2 * STEP)
        return grad

    def unrolled_value(self, lam, init, steps, init_state=None) -> float:
        params, _ = self.inner().solve({"lam": lam}, init, steps, FULL_BATCH, init_state=init_state)
        return float(self.outer_loss({"lam": lam}, params, None))

    def converged_value(self, lam) -> float:
        theta = self.init["theta"].clone()
        for _ in range(30):  # Newton's method; f is strongly convex
            hessian = torch.autograd.functional.hessian(lambda t: self.inner_loss({"theta": t}, {"lam": lam}, None), theta)
            gradient = torch.autograd.functional.jacobian(lambda t: self.inner_loss({"theta": t}, {"lam": lam}, None), theta)
            theta = theta - torch.linalg.solve(hessian, gradient)
        return float(self.outer_loss({"lam": lam}, {"theta": theta}, None))

    def method_value(self, method_factory, steps: int) -> torch.Tensor:
        outer_opt = self.outer()
        method = method_factory(outer_opt)
        inner = self.inner()
        _, trajectory = inner.solve(outer_opt.params, self.init, steps, FULL_BATCH, track_last=method.track_last)
        return method.compute_hypergradient(trajectory, inner)["lam"]


def test_full_unroll_matches_finite_differences() -> None:
    problem = SmallProblem()
    expected = problem.finite_difference(lambda lam: problem.unrolled_value(lam, problem.init, 30))
    actual = problem.method_value(lambda o: UnrolledDifferentiation(o), 30)
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=1e-9)


def test_truncated_unroll_matches_finite_differences() -> None:
    # Truncation to the last K steps treats the params and optimizer state after
    # step N - K as constants, so the reference differentiates exactly that:
    # K steps from the fixed midpoint, with lam varied.
    problem = SmallProblem()
    total, last = 30, 5
    _, head = problem.inner().solve({"lam": problem.lam}, problem.init, total - last, FULL_BATCH)
    midpoint, state = head.final_params, head.final_state
    expected = problem.finite_difference(lambda lam: problem.unrolled_value(lam, midpoint, last, state))
    actual = problem.method_value(lambda o: UnrolledDifferentiation(o, last=last), total)
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=1e-9)


def test_truncated_unroll_differs_from_full() -> None:
    problem = SmallProblem()
    full = problem.method_value(lambda o: UnrolledDifferentiation(o), 30)
    truncated = problem.method_value(lambda o: UnrolledDifferentiation(o, last=2), 30)
    assert not torch.allclose(full, truncated, rtol=1e-3)


# 400 inner steps: momentum SGD at lr 0.05 contracts the error by about 0.9 per step
# or faster on this problem, so the inner solution is exact to rounding.
@pytest.mark.parametrize(
    "method_factory",
    [
        lambda o: ImplicitDifferentiation(o, solver="cg", iters=20),
        lambda o: ImplicitDifferentiation(o, solver="neumann", iters=400),
    ],
    ids=["cg", "neumann"],
)
def test_implicit_matches_finite_differences(method_factory) -> None:
    problem = SmallProblem()
    expected = problem.finite_difference(problem.converged_value)
    actual = problem.method_value(method_factory, 400)
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=1e-9)


def test_methods_average_tasks() -> None:
    problem = SmallProblem()
    outer_opt = problem.outer()
    method = ImplicitDifferentiation(outer_opt)
    inner = problem.inner()
    trajectories = []
    for scale in (1.0, 2.0):
        init = {"theta": torch.full((3,), scale, dtype=DTYPE)}
        trajectories.append(inner.solve(outer_opt.params, init, 5, FULL_BATCH, track_last=0)[1])
    separate = [method.compute_hypergradient(t, inner)["lam"] for t in trajectories]
    together = method.compute_hypergradient(trajectories, inner)["lam"]
    torch.testing.assert_close(together, (separate[0] + separate[1]) / 2)


@pytest.mark.parametrize(
    "method_factory",
    [lambda o: UnrolledDifferentiation(o), lambda o: ImplicitDifferentiation(o)],
    ids=["unrolled", "implicit"],
)
def test_unused_variable_gets_zeros(method_factory) -> None:
    problem = SmallProblem()
    outer_opt = OuterOptimizer(
        {"lam": problem.lam, "unused": torch.ones(2, 2, dtype=DTYPE)}, sgd(lr=0.1), problem.outer_loss, None
    )
    method = method_factory(outer_opt)
    inner = problem.inner()
    _, trajectory = inner.solve(outer_opt.params, problem.init, 10, FULL_BATCH, track_last=method.track_last)
    result = method.compute_hypergradient(trajectory, inner)
    assert torch.equal(result["unused"], torch.zeros(2, 2, dtype=DTYPE))


def test_implicit_trajectory_holds_no_graph() -> None:
    problem = SmallProblem()
    outer_opt = problem.outer()
    method = ImplicitDifferentiation(outer_opt)
    params, trajectory = problem.inner().solve(
        outer_opt.params, problem.init, 50, FULL_BATCH, track_last=method.track_last
    )
    assert method.track_last == 0
    assert params["theta"].grad_fn is None
    assert not trajectory.final_params["theta"].requires_grad


def test_step_applies_hypergradient() -> None:
    problem = SmallProblem()
    outer_opt = problem.outer()
    method = ImplicitDifferentiation(outer_opt)
    inner = problem.inner()
    _, trajectory = inner.solve(outer_opt.params, problem.init, 50, FULL_BATCH)
    hypergradient = method.compute_hypergradient(trajectory, inner)
    method.step(hypergradient)
    torch.testing.assert_close(outer_opt.params["lam"].detach(), problem.lam - 0.1 * hypergradient["lam"])
    assert outer_opt.version == 1


def test_implicit_includes_weight_decay() -> None:
    # Inner 1/2 ||X w - s y||^2 with optimizer weight decay mu has the fixed point
    # w* = (X^T X + mu I)^{-1} X^T y s, so d outer / d s = g_v^T (X^T X + mu I)^{-1} X^T y.
    generator = torch.Generator().manual_seed(5)
    x, y = torch.randn(10, 3, generator=generator, dtype=DTYPE), torch.randn(10, generator=generator, dtype=DTYPE)
    x_val, y_val = torch.randn(6, 3, generator=generator, dtype=DTYPE), torch.randn(6, generator=generator, dtype=DTYPE)
    mu = 2.0
    matrix = x.T @ x + mu * torch.eye(3, dtype=DTYPE)
    w_star = torch.linalg.solve(matrix, x.T @ y)
    expected = float((x_val.T @ (x_val @ w_star - y_val)) @ torch.linalg.solve(matrix, x.T @ y))

    outer_opt = OuterOptimizer(
        {"s": torch.tensor(1.0, dtype=DTYPE)},
        sgd(lr=0.1),
        lambda o, p, data: 0.5 * ((x_val @ p["w"] - y_val) ** 2).sum(),
        None,
    )
    inner = InnerProblem(
        lambda p, o, data: 0.5 * ((x @ p["w"] - o["s"] * y) ** 2).sum(),
        sgd(lr=1.0 / float(torch.linalg.eigvalsh(matrix)[-1]), weight_decay=mu),
    )
    method = ImplicitDifferentiation(outer_opt)
    _, trajectory = inner.solve(outer_opt.params, {"w": torch.zeros(3, dtype=DTYPE)}, 500, FULL_BATCH)
    assert float(method.compute_hypergradient(trajectory, inner)["s"]) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "method_factory",
    [lambda o: UnrolledDifferentiation(o, last=200), lambda o: ImplicitDifferentiation(o)],
    ids=["unrolled", "implicit"],
)
def test_methods_support_float32(dtype: torch.dtype, method_factory) -> None:
    reference = SmallProblem().method_value(lambda o: ImplicitDifferentiation(o), 400)
    result = SmallProblem(dtype).method_value(method_factory, 400)
    assert result.dtype == dtype
    # float32 rounding over 400 steps and in the Hessian solve stays well below 1e-4 relative.
    torch.testing.assert_close(result.double(), reference, rtol=1e-4, atol=1e-5)


def test_unrolled_rejects_short_graph() -> None:
    problem = SmallProblem()
    outer_opt = problem.outer()
    method = UnrolledDifferentiation(outer_opt, last=5)
    inner = problem.inner()
    _, trajectory = inner.solve(outer_opt.params, problem.init, 10, FULL_BATCH, track_last=2)
    with pytest.raises(HypergradientError, match=r"last 5 of 10.*kept 2(?s:.*)track_last=method.track_last"):
        method.compute_hypergradient(trajectory, inner)


def test_unrolled_rejects_detached_outer() -> None:
    problem = SmallProblem()
    outer_opt = problem.outer()
    method = UnrolledDifferentiation(outer_opt)
    inner = problem.inner()
    detached = {"lam": outer_opt.params["lam"].detach()}
    _, trajectory = inner.solve(detached, problem.init, 3, FULL_BATCH, track_last=None)
    with pytest.raises(HypergradientError, match="'lam' given to the inner solve does not require grad"):
        method.compute_hypergradient(trajectory, inner)


def test_implicit_rejects_saddle() -> None:
    outer_opt = OuterOptimizer(
        {"s": torch.tensor(1.0, dtype=DTYPE)}, sgd(lr=0.1), lambda o, p, data: p["w"].sum(), None
    )
    inner = InnerProblem(lambda p, o, data: o["s"] * (p["w"][0] ** 2 - p["w"][1] ** 2), sgd(lr=0.1))
    method = ImplicitDifferentiation(outer_opt)
    _, trajectory = inner.solve(outer_opt.params, {"w": torch.zeros(2, dtype=DTYPE)}, 3, FULL_BATCH)
    with pytest.raises(HypergradientError, match=r"level 'inner'.*not positive definite"):
        method.compute_hypergradient(trajectory, inner)


def test_implicit_rejects_zero_steps() -> None:
    problem = SmallProblem()
    outer_opt = problem.outer()
    method = ImplicitDifferentiation(outer_opt)
    inner = problem.inner()
    _, trajectory = inner.solve(outer_opt.params, problem.init, 0, FULL_BATCH)
    with pytest.raises(HypergradientError, match="at least one inner step"):
        method.compute_hypergradient(trajectory, inner)


def test_compute_rejects_empty_sequence() -> None:
    problem = SmallProblem()
    with pytest.raises(HypergradientError, match="no trajectories"):
        ImplicitDifferentiation(problem.outer()).compute_hypergradient([], problem.inner())


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda o: ImplicitDifferentiation(o, solver="lu"), "unknown implicit solver 'lu'"),
        (lambda o: ImplicitDifferentiation(o, iters=0), "iters"),
        (lambda o: ImplicitDifferentiation(o, alpha=-1.0), "alpha"),
        (lambda o: UnrolledDifferentiation(o, last=0), "last"),
    ],
)
def test_method_rejects_bad_options(factory, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        factory(SmallProblem().outer())


def test_damping_solves_shifted_system():
    """With damping d, implicit differentiation equals the closed form with H + d I (ridge: lambda + d)."""
    import itertools

    from chronos.core import InnerProblem, OuterOptimizer
    from chronos.optim import adam, sgd
    from chronos.solver import ImplicitDifferentiation

    generator = torch.Generator().manual_seed(3)
    x = torch.randn(12, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(12, generator=generator, dtype=torch.float64)
    xv = torch.randn(6, 3, generator=generator, dtype=torch.float64)
    yv = torch.randn(6, generator=generator, dtype=torch.float64)
    lam, damping = 0.5, 0.25

    def inner_objective(params, outer_params, data):
        return 0.5 * (x @ params["w"] - y).pow(2).sum() + 0.5 * outer_params["lam"] * params["w"].pow(2).sum()

    def outer_objective(outer_params, inner_params, data):
        return 0.5 * (xv @ inner_params["w"] - yv).pow(2).sum()

    hessian = x.T @ x + lam * torch.eye(3, dtype=torch.float64)
    w_star = torch.linalg.solve(hessian, x.T @ y)
    g_v = xv.T @ (xv @ w_star - yv)
    shifted = hessian + damping * torch.eye(3, dtype=torch.float64)
    expected = -g_v @ torch.linalg.solve(shifted, w_star)

    inner = InnerProblem(inner_objective, sgd(lr=0.02))
    outer = OuterOptimizer({"lam": torch.tensor(lam, dtype=torch.float64)}, adam(lr=0.1), outer_objective, data=None)
    method = ImplicitDifferentiation(outer, solver="cg", iters=50, damping=damping)
    _, trajectory = inner.solve(outer.params, {"w": w_star.clone()}, 1, itertools.repeat(None), track_last=0)
    # The solve starts at w* and takes one step: the gradient there is ~1e-16,
    # so the point stays w* to round-off and the damped closed form applies.
    result = method.compute_hypergradient(trajectory, inner)["lam"]
    torch.testing.assert_close(result, expected, rtol=1e-8, atol=1e-12)


def test_damping_rejects_negative():
    from chronos.core import OuterOptimizer
    from chronos.errors import SpecError
    from chronos.optim import adam
    from chronos.solver import ImplicitDifferentiation

    outer = OuterOptimizer({"lam": torch.tensor(0.5)}, adam(lr=0.1), lambda o, i, d: o["lam"], data=None)
    with pytest.raises(SpecError, match="damping"):
        ImplicitDifferentiation(outer, damping=-1.0)
