"""Matrix-free solvers: conjugate gradient, Neumann series and the power-iteration estimate."""

from __future__ import annotations

import pytest
import torch

from chronos.errors import HypergradientError
from chronos.linalg import conjugate_gradient, estimate_lambda_max, neumann_series

DTYPE = torch.float64


def _system(eigenvalues: list[float]):
    """Return (hvp, matrix, b) for a symmetric matrix split across a 0-d and a (2, 2) block."""
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(5, 5, generator=generator, dtype=DTYPE))
    matrix = basis @ torch.diag(torch.tensor(eigenvalues, dtype=DTYPE)) @ basis.T
    b = [torch.randn((), generator=generator, dtype=DTYPE), torch.randn(2, 2, generator=generator, dtype=DTYPE)]

    def hvp(vs: list[torch.Tensor]) -> list[torch.Tensor]:
        flat = matrix @ torch.cat([vs[0].reshape(1), vs[1].reshape(4)])
        return [flat[0].reshape(()), flat[1:].reshape(2, 2)]

    return hvp, matrix, b


def _flat(vs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in vs])


SPD = [0.5, 1.0, 2.0, 3.0, 4.0]


def test_cg_solves_spd_system() -> None:
    hvp, matrix, b = _system(SPD)
    x = conjugate_gradient(hvp, b, iters=20, tol=1e-12)
    torch.testing.assert_close(_flat(x), torch.linalg.solve(matrix, _flat(b)))


def test_cg_keeps_shapes() -> None:
    hvp, _, b = _system(SPD)
    x = conjugate_gradient(hvp, b, iters=20, tol=1e-12)
    assert [t.shape for t in x] == [torch.Size([]), torch.Size([2, 2])]


def test_cg_zero_rhs_returns_zeros() -> None:
    hvp, _, b = _system(SPD)
    zeros = [torch.zeros_like(t) for t in b]
    assert all(torch.equal(t, z) for t, z in zip(conjugate_gradient(hvp, zeros, iters=5, tol=0.0), zeros))


def test_cg_rejects_indefinite() -> None:
    hvp, _, b = _system([-1.0, -2.0, -0.5, -3.0, -1.5])
    with pytest.raises(HypergradientError, match=r"not positive definite.*p\^T H p"):
        conjugate_gradient(hvp, b, iters=20, tol=1e-12)


def test_cg_rejects_nan_hvp() -> None:
    _, _, b = _system(SPD)
    with pytest.raises(HypergradientError, match="non-finite curvature"):
        conjugate_gradient(lambda vs: [torch.full_like(v, float("nan")) for v in vs], b, iters=5, tol=1e-12)


def test_neumann_converges_below_bound() -> None:
    hvp, matrix, b = _system(SPD)
    # alpha = 1 / lambda_max gives a contraction 1 - 0.5 / 4 = 0.875; 300 terms leave 0.875^300 ~ 4e-18.
    v = neumann_series(hvp, b, iters=300, alpha=0.25)
    torch.testing.assert_close(_flat(v), torch.linalg.solve(matrix, _flat(b)))


def test_neumann_raises_above_bound() -> None:
    hvp, _, b = _system(SPD)
    with pytest.raises(HypergradientError, match=r"(?s)diverges.*2 / lambda_max.*smaller alpha, or solver='cg'"):
        neumann_series(hvp, b, iters=300, alpha=0.6)  # 2 / lambda_max = 0.5


def test_neumann_raises_on_negative_eigenvalue() -> None:
    hvp, _, b = _system([-0.5, 1.0, 2.0, 3.0, 4.0])
    with pytest.raises(HypergradientError, match="not positive definite.*negative curvature"):
        neumann_series(hvp, b, iters=300, alpha=0.25)


def test_neumann_never_returns_nan() -> None:
    _, _, b = _system(SPD)
    with pytest.raises(HypergradientError, match="diverges"):
        neumann_series(lambda vs: [torch.full_like(v, float("inf")) for v in vs], b, iters=5, alpha=0.1)


def test_neumann_rejects_non_positive_alpha() -> None:
    hvp, _, b = _system(SPD)
    with pytest.raises(HypergradientError, match="alpha must be positive"):
        neumann_series(hvp, b, iters=5, alpha=0.0)


def test_estimate_lambda_max() -> None:
    hvp, _, b = _system(SPD)
    # Power iteration converges as (3 / 4)^(2k) in the Rayleigh quotient; 60 steps give ~1e-15.
    assert estimate_lambda_max(hvp, b, iters=60) == pytest.approx(4.0, rel=1e-8)


@pytest.mark.parametrize("solver", ["cg", "neumann"])
def test_solvers_support_float32(solver: str) -> None:
    hvp64, matrix, b64 = _system(SPD)
    b = [t.float() for t in b64]

    def hvp(vs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [t.float() for t in hvp64([v.double() for v in vs])]

    if solver == "cg":
        x = conjugate_gradient(hvp, b, iters=20, tol=1e-6)
    else:
        x = neumann_series(hvp, b, iters=300, alpha=0.25)
    assert x[1].dtype == torch.float32
    # float32 keeps about 7 digits; a condition number of 8 costs about one.
    torch.testing.assert_close(_flat(x).double(), torch.linalg.solve(matrix, _flat(b64)), rtol=1e-5, atol=1e-5)


def test_neumann_negative_curvature_named():
    from chronos.errors import HypergradientError
    from chronos.linalg import neumann_series

    # H = diag(1, -1): the component along the second axis grows as (1 + alpha)^k.
    hessian = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    with pytest.raises(HypergradientError, match="not positive definite.*negative curvature") as info:
        neumann_series(lambda v: [hessian @ v[0]], [torch.tensor([1.0, 1.0], dtype=torch.float64)], iters=20, alpha=0.1)
    assert "smaller alpha does not help" in info.value.hint


def test_neumann_overshoot_says_smaller_alpha() -> None:
    hvp, _, b = _system(SPD)
    with pytest.raises(HypergradientError, match="diverges.*lambda_max") as info:
        neumann_series(hvp, b, iters=50, alpha=1.0)
    assert "smaller alpha" in info.value.hint
