"""The imperative layer: inner solves, outer steps and functional modules."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from chronos.core import InnerProblem, OuterOptimizer
from chronos.errors import ChronosError, HypergradientError
from chronos.functional import call_module, split_module
from chronos.optim import sgd

DTYPE = torch.float64


def _quadratic(params, outer_params, batch):
    return ((params["w"] - outer_params["target"]) ** 2).sum() * batch


def _problem() -> tuple[InnerProblem, dict, dict]:
    outer_params = {"target": torch.tensor([1.0, -1.0], dtype=DTYPE, requires_grad=True)}
    init = {"w": torch.zeros(2, dtype=DTYPE)}
    return InnerProblem(_quadratic, sgd(lr=0.1)), outer_params, init


def test_solve_converges() -> None:
    inner, outer_params, init = _problem()
    # Each step contracts the error by 0.8, so 100 steps leave 0.8^100 ~ 2e-10.
    params, trajectory = inner.solve(outer_params, init, 100, itertools.repeat(1.0))
    torch.testing.assert_close(params["w"], outer_params["target"].detach())
    assert len(trajectory.losses) == 100
    assert trajectory.losses[-1] < trajectory.losses[0]


def test_solve_untracked_has_no_graph() -> None:
    inner, outer_params, init = _problem()
    params, _ = inner.solve(outer_params, init, 5, itertools.repeat(1.0), track_last=0)
    assert not params["w"].requires_grad
    assert params["w"].grad_fn is None


def test_solve_tracked_reaches_outer() -> None:
    inner, outer_params, init = _problem()
    params, _ = inner.solve(outer_params, init, 5, itertools.repeat(1.0), track_last=2)
    (grad,) = torch.autograd.grad(params["w"].sum(), outer_params["target"])
    # Two tracked steps of w <- 0.8 w + 0.2 target give d w / d target = 1 - 0.8^2.
    torch.testing.assert_close(grad, torch.full((2,), 1 - 0.8**2, dtype=DTYPE))


def test_solve_full_track_reaches_init() -> None:
    inner, outer_params, _ = _problem()
    init = {"w": torch.zeros(2, dtype=DTYPE, requires_grad=True)}
    params, _ = inner.solve(outer_params, init, 3, itertools.repeat(1.0), track_last=None)
    (grad,) = torch.autograd.grad(params["w"].sum(), init["w"])
    torch.testing.assert_close(grad, torch.full((2,), 0.8**3, dtype=DTYPE))


def test_solve_truncated_does_not_reach_init() -> None:
    inner, outer_params, _ = _problem()
    init = {"w": torch.zeros(2, dtype=DTYPE, requires_grad=True)}
    params, _ = inner.solve(outer_params, init, 3, itertools.repeat(1.0), track_last=2)
    (grad,) = torch.autograd.grad(params["w"].sum(), init["w"], allow_unused=True)
    assert grad is None


def test_solve_records_last_batch() -> None:
    inner, outer_params, init = _problem()
    _, trajectory = inner.solve(outer_params, init, 5, [1.0, 2.0])
    assert trajectory.last_batch == 1.0


def test_solve_calls_callable_loader() -> None:
    inner, outer_params, init = _problem()
    seen = []
    inner.solve(outer_params, init, 3, lambda step: seen.append(step) or 1.0)
    assert seen == [0, 1, 2]


def test_solve_rejects_exhausted_iterator() -> None:
    inner, outer_params, init = _problem()
    with pytest.raises(ChronosError, match="yielded no batch"):
        inner.solve(outer_params, init, 3, iter([]))


def test_solve_rejects_non_scalar_objective() -> None:
    inner = InnerProblem(lambda p, o, d: p["w"] ** 2, sgd(lr=0.1), name="student")
    with pytest.raises(ChronosError, match=r"level 'student'.*0-d tensor, got shape \(2,\)"):
        inner.solve({}, {"w": torch.zeros(2)}, 1, itertools.repeat(None))


def test_solve_rejects_non_finite_loss() -> None:
    inner = InnerProblem(lambda p, o, d: (p["w"] ** 2).sum() * float("inf"), sgd(lr=0.1))
    with pytest.raises(ChronosError, match="inner objective is inf at inner step 0"):
        inner.solve({}, {"w": torch.ones(2)}, 1, itertools.repeat(None))


def test_solve_rejects_negative_track_last() -> None:
    inner, outer_params, init = _problem()
    with pytest.raises(ChronosError, match="track_last must be None"):
        inner.solve(outer_params, init, 3, itertools.repeat(1.0), track_last=-1)


def test_solve_rejects_integer_variable() -> None:
    inner, outer_params, _ = _problem()
    with pytest.raises(ChronosError, match="inner variable 'w' must be a floating-point"):
        inner.solve(outer_params, {"w": torch.zeros(2, dtype=torch.int64)}, 1, itertools.repeat(1.0))


def test_gradient_zero_for_unused_variable() -> None:
    inner, outer_params, _ = _problem()
    params = {"w": torch.ones(2, dtype=DTYPE), "unused": torch.ones(3, dtype=DTYPE)}
    grads = inner.gradient(params, outer_params, 1.0)
    assert torch.equal(grads["unused"], torch.zeros(3, dtype=DTYPE))


def _outer() -> OuterOptimizer:
    params = {"lam": torch.ones(2, 3, dtype=DTYPE)}
    return OuterOptimizer(params, sgd(lr=0.5), lambda o, i, d: o["lam"].sum(), None, name="teacher")


def test_outer_step_updates_and_versions() -> None:
    outer = _outer()
    outer.step({"lam": torch.ones(2, 3, dtype=DTYPE)})
    torch.testing.assert_close(outer.params["lam"], torch.full((2, 3), 0.5, dtype=DTYPE))
    assert outer.version == 1


def test_outer_step_returns_new_leaves() -> None:
    outer = _outer()
    outer.step({"lam": torch.ones(2, 3, dtype=DTYPE)})
    assert outer.params["lam"].is_leaf
    assert outer.params["lam"].requires_grad


def test_outer_step_shape_mismatch() -> None:
    outer = _outer()
    with pytest.raises(ChronosError, match=r"level 'teacher'.*'lam' has shape \(3, 2\).*shape \(2, 3\)"):
        outer.step({"lam": torch.ones(3, 2, dtype=DTYPE)})


def test_outer_step_missing_variable() -> None:
    outer = _outer()
    with pytest.raises(ChronosError, match=r"missing variable 'lam' \(shape \(2, 3\)\)"):
        outer.step({})


def test_outer_step_unknown_variable() -> None:
    outer = _outer()
    with pytest.raises(ChronosError, match="unknown variables lr"):
        outer.step({"lam": torch.ones(2, 3, dtype=DTYPE), "lr": torch.ones(())})


def test_outer_step_rejects_nan() -> None:
    outer = _outer()
    with pytest.raises(HypergradientError, match="'lam' contains inf or NaN"):
        outer.step({"lam": torch.full((2, 3), float("nan"), dtype=DTYPE)})


def test_outer_step_rejects_dtype_mismatch() -> None:
    outer = _outer()
    with pytest.raises(ChronosError, match="dtype torch.float32"):
        outer.step({"lam": torch.ones(2, 3, dtype=torch.float32)})


def test_outer_evaluate_rejects_non_scalar() -> None:
    outer = OuterOptimizer({"lam": torch.ones(2)}, sgd(lr=0.5), lambda o, i, d: o["lam"], None, name="teacher")
    with pytest.raises(ChronosError, match=r"level 'teacher'.*outer objective must return a 0-d tensor"):
        outer.evaluate(outer.params, {})


class _Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1, dtype=DTYPE)
        self.scale = nn.Parameter(torch.tensor(2.0, dtype=DTYPE), requires_grad=False)
        self.register_buffer("offset", torch.tensor(5.0, dtype=DTYPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.linear(x) + self.offset


def test_split_module_separates_constants() -> None:
    params, constants = split_module(_Scaled())
    assert sorted(params) == ["linear.bias", "linear.weight"]
    assert sorted(constants) == ["offset", "scale"]


def test_call_module_matches_module() -> None:
    module = _Scaled()
    params, constants = split_module(module)
    x = torch.randn(4, 3, dtype=DTYPE)
    torch.testing.assert_close(call_module(module, params, constants, x), module(x))


def test_frozen_parameter_stays_constant() -> None:
    module = _Scaled()
    params, constants = split_module(module)
    x = torch.randn(8, 3, dtype=DTYPE)

    def objective(p, outer_params, batch):
        return (call_module(module, p, constants, batch) ** 2).mean()

    inner = InnerProblem(objective, sgd(lr=0.01))
    final, _ = inner.solve({}, params, 20, itertools.repeat(x))
    assert sorted(final) == ["linear.bias", "linear.weight"]
    assert float(constants["scale"]) == 2.0
    assert float(constants["offset"]) == 5.0
    assert constants["scale"].grad is None
    assert not constants["scale"].requires_grad
    assert not torch.equal(final["linear.bias"], params["linear.bias"])


def test_call_module_rejects_overlap() -> None:
    module = _Scaled()
    params, constants = split_module(module)
    with pytest.raises(ChronosError, match="linear.bias are given both"):
        call_module(module, params, {**constants, "linear.bias": params["linear.bias"]}, torch.ones(1, 3))


def test_solve_detaches_init_state() -> None:
    inner = InnerProblem(_quadratic, sgd(lr=0.1, momentum=0.9))
    outer_params = {"target": torch.tensor([1.0, -1.0], dtype=DTYPE, requires_grad=True)}
    init = {"w": torch.zeros(2, dtype=DTYPE)}
    _, first = inner.solve(outer_params, init, 3, itertools.repeat(1.0), track_last=None)
    assert first.final_state["momentum"]["w"].requires_grad
    _, second = inner.solve(outer_params, init, 0, itertools.repeat(1.0), init_state=first.final_state)
    assert not second.final_state["momentum"]["w"].requires_grad


def test_tuple_data_loader_rejected():
    from chronos.errors import ChronosError
    from chronos.optim import sgd

    inner = InnerProblem(lambda params, outer_params, data: params["w"].sum(), sgd(lr=0.1))
    batch = (torch.zeros(3), torch.ones(3))
    with pytest.raises(ChronosError, match="tuple of tensors, which would be iterated"):
        inner.solve({}, {"w": torch.zeros(2)}, 1, batch)
