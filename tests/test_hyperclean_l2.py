"""The three-level hyper-cleaning example: front ends agree and the top gradient matches finite differences."""

from pathlib import Path

import pytest
import torch

from chronos.backends.nested import NestedExecutor
from chronos.compiler.compile import compile_file, compile_spec
from chronos.dsl import parse

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "examples" / "hyperclean_l2.chronos"


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


def small_float64_plan():
    """The example on 120 real training samples in float64, with 1 x 2 x 3 steps."""
    text = SPEC.read_text()
    text = text.replace("examples.hyperclean:noisy_train", "tests.toy_hyperclean:noisy_train64")
    text = text.replace("examples.hyperclean:clean_val", "tests.toy_hyperclean:clean_val64")
    text = text.replace("examples.hyperclean:make_classifier", "tests.toy_hyperclean:make_classifier64")
    text = text.replace("full(-6.0)", "full(-2.0, dtype = float64)")
    text = text.replace("zeros(noisy_train.size)", "zeros(noisy_train.size, dtype = float64)")
    text = text.replace("steps = 3\n", "steps = 1\n").replace("steps = 6 per l2", "steps = 2 per l2")
    text = text.replace("steps = 40 per weights", "steps = 3 per weights")
    return compile_spec(parse(text, file="small.chronos"), trace=False)


def top_objective(plan, log_l2: float) -> float:
    executor = NestedExecutor(plan)
    executor.root_params["log_l2"] = torch.tensor(log_l2, dtype=torch.float64)
    executor.macro_step()
    return executor.history["l2"][0]


def test_spec_and_decorators_equal():
    from examples import hyperclean_l2

    assert compile_file(SPEC).without_sources() == hyperclean_l2.compile_decorated().without_sources()


def test_every_edge_explained():
    plan = compile_file(SPEC)
    kinds = {(edge.upper, edge.lower): edge.kind for edge in plan.edges}
    assert kinds == {("l2", "weights"): "per", ("weights", "classifier"): "per", ("l2", "classifier"): "reads"}
    for edge in plan.edges:
        assert edge.method.name == "unrolled"
        assert edge.reason


def test_top_gradient_matches_finite_differences():
    plan = small_float64_plan()
    gradient = NestedExecutor(plan).macro_step()["log_l2"]
    step = 1e-5
    estimate = (top_objective(plan, -2.0 + step) - top_objective(plan, -2.0 - step)) / (2 * step)
    assert abs(estimate) > 1e-6  # the L2 strength matters, through both paths
    # float64 and a smooth objective: central differences with step 1e-5 have
    # truncation error near step^2 = 1e-10 relative to the curvature scale.
    torch.testing.assert_close(gradient, torch.tensor(estimate, dtype=torch.float64), rtol=1e-5, atol=1e-10)
