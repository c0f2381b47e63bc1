"""The local backend against the imperative layer, closed forms and bad objectives."""

import itertools
from pathlib import Path

import pytest
import torch

import chronos
from chronos.backends.local import LocalExecutor
from chronos.compiler.compile import compile_file, compile_spec
from chronos.core import InnerProblem, OuterOptimizer
from chronos.dsl import parse
from chronos.errors import BackendError
from chronos.solver import ImplicitDifferentiation, UnrolledDifferentiation

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


def ridge_plan(method: str):
    text = (REPO / "examples" / "ridge.chronos").read_text()
    text = text.replace("hypergradient = implicit(cg, iters = 20)", f"hypergradient = {method}")
    return compile_spec(parse(text, file="ridge.chronos"))


def imperative_hypergradient(method: str) -> torch.Tensor:
    """The same ridge problem written by hand with chronos.core and chronos.solver."""
    from examples import ridge

    inner = InnerProblem(
        lambda params, outer_params, data: ridge.inner_objective(params["w"], outer_params["log_lambda"], data),
        chronos.sgd(lr=0.5),
    )
    outer = OuterOptimizer(
        {"log_lambda": torch.zeros((), dtype=torch.float64)},
        chronos.adam(lr=0.05),
        lambda outer_params, inner_params, data: ridge.outer_objective(inner_params["w"], data),
        data=ridge.val_data(),
    )
    engine = (
        UnrolledDifferentiation(outer) if method == "unrolled" else ImplicitDifferentiation(outer, solver="cg", iters=20)
    )
    init = {"w": torch.zeros(5, dtype=torch.float64)}
    _, trajectory = inner.solve(
        outer.params, init, 200, itertools.repeat(ridge.train_data()), track_last=engine.track_last
    )
    return engine.compute_hypergradient(trajectory, inner)["log_lambda"]


@pytest.mark.parametrize("method", ["unrolled", "implicit(cg, iters = 20)"])
def test_compiled_equals_imperative(method):
    executor = LocalExecutor(ridge_plan(method))
    compiled = executor.macro_step()["log_lambda"]
    by_hand = imperative_hypergradient(method.split("(")[0])
    # Same operations in the same order: agreement to float64 round-off.
    torch.testing.assert_close(compiled, by_hand, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["unrolled", "implicit(cg, iters = 20)"])
def test_compiled_matches_closed_form(method):
    from examples import ridge

    executor = LocalExecutor(ridge_plan(method))
    compiled = executor.macro_step()["log_lambda"]
    # 200 steps of gradient descent with step 0.5 on a Hessian with eigenvalues
    # in [1.3, 2.7] contract the error by at least 0.35 per step: w is exact to
    # round-off, so both methods meet the closed form to 1e-6 relative.
    torch.testing.assert_close(compiled, ridge.closed_form_hypergradient(0.0), rtol=1e-6, atol=0.0)


def test_run_lowers_validation_loss():
    result = chronos.run(ridge_plan("auto"), progress=False)
    history = result.history["regularizer"]
    assert len(history) == 40
    assert history[-1] < 0.5 * history[0]
    assert result.versions["regularizer"] == 40


def test_run_result_variables():
    result = chronos.run(ridge_plan("auto"), progress=False)
    assert set(result.variables) == {"regularizer", "weights"}
    assert result.variables["weights"]["w"].shape == (5,)
    assert not result.variables["weights"]["w"].requires_grad


FROZEN = """
problem frozen
data points = "tests.toy:points"

level strength {
    param log_l2 = full(-3.0, dtype = float64)
    loss = "tests.toy:holdout_loss"(net, points)
    optimizer = adam(lr = 0.1)
    steps = 3
}

level net {
    module = "tests.toy:make_frozen_net"
    loss = "tests.toy:fit_loss"(strength, points)
    optimizer = sgd(lr = 0.05)
    steps = 5 per strength
    warm_start = true
}
"""


def test_frozen_parameters_constant():
    from toy import make_frozen_net

    result = chronos.run(compile_spec(parse(FROZEN)), progress=False)
    start = make_frozen_net()
    final = result.variables["net"]
    torch.testing.assert_close(final["0.weight"], start[0].weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(final["offset"], torch.tensor([0.25], dtype=torch.float64))
    assert not torch.equal(final["0.bias"], start[0].bias.detach())


def test_module_level_hypergradient_finite_difference():
    plan = compile_spec(parse(FROZEN.replace("warm_start = true", "warm_start = false")))
    executor = LocalExecutor(plan)
    hypergradient = executor.macro_step()["log_l2"]

    def outer_value(log_l2: float) -> float:
        probe = LocalExecutor(plan)
        probe.outer.params["log_l2"].data.fill_(log_l2)
        probe.macro_step()
        return probe.history["strength"][0]

    step = 1e-5
    estimate = (outer_value(-3.0 + step) - outer_value(-3.0 - step)) / (2 * step)
    # Central differences in float64 with step 1e-5: truncation error about
    # step^2 times the third derivative, far below 1e-6 relative.
    torch.testing.assert_close(hypergradient, torch.tensor(estimate, dtype=torch.float64), rtol=1e-6, atol=1e-10)


SINGLE = """
problem single
level only {
    param x = zeros(3)
    loss = "tests.toy:quadratic"()
    optimizer = sgd(lr = 0.5)
    steps = 10
}
"""


def test_single_level_optimizes():
    result = chronos.run(compile_spec(parse(SINGLE)), progress=False)
    # Gradient descent with step 0.5 on 0.5 ||x - 1||^2 halves the error each step.
    torch.testing.assert_close(result.variables["only"]["x"], torch.full((3,), 1 - 0.5**10))


def test_failing_objective_names_level():
    plan = compile_spec(parse(SINGLE.replace("tests.toy:quadratic", "tests.toy:raises")))
    with pytest.raises(BackendError, match="objective \"tests.toy:raises\" of level 'only'.*ValueError") as info:
        chronos.run(plan, progress=False)
    assert isinstance(info.value.__cause__, ValueError)


def test_non_scalar_objective_named():
    plan = compile_spec(parse(SINGLE.replace("tests.toy:quadratic", "tests.toy:vector_loss")))
    with pytest.raises(BackendError, match="returned \\(3,\\); expected a scalar tensor"):
        chronos.run(plan, progress=False)


def test_unknown_backend_named():
    plan = compile_file(REPO / "examples" / "ridge.chronos")
    plan = plan.model_copy(update={"backend": plan.backend.model_copy(update={"name": "horovod"})})
    with pytest.raises(BackendError, match="needs the horovod package"):
        chronos.run(plan, progress=False)
