"""Nested execution: total derivatives through three levels and through several lower levels."""

from pathlib import Path

import pytest
import torch

import chronos
from chronos.backends.local import LocalExecutor
from chronos.backends.nested import NestedExecutor
from chronos.compiler.compile import compile_spec
from chronos.dsl import parse
from chronos.errors import CompileError

REPO = Path(__file__).resolve().parents[1]

CHAIN = """
problem chain

level top {
    param a = full(0.3, dtype = float64)
    loss = "tests.toy:chain_top"(bottom)
    optimizer = sgd(lr = 0.1)
    steps = 2
}

level mid {
    param m = zeros(2, dtype = float64)
    loss = "tests.toy:chain_mid"(bottom, top)
    optimizer = sgd(lr = 0.3)
    steps = 3 per top
}

level bottom {
    param x = zeros(2, dtype = float64)
    loss = "tests.toy:chain_bottom"(mid)
    optimizer = sgd(lr = 0.4)
    steps = 4 per mid
}
"""


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


def top_value(plan, variable: str, value: float) -> float:
    probe = NestedExecutor(plan)
    probe.root_params[variable] = torch.full_like(probe.root_params[variable], value)
    probe.macro_step()
    return probe.history[plan.roots()[0].name][0]


def central_difference(plan, variable: str, at: float, step: float = 1e-6) -> float:
    return (top_value(plan, variable, at + step) - top_value(plan, variable, at - step)) / (2 * step)


def test_chain_edges_unrolled():
    plan = compile_spec(parse(CHAIN))
    for edge in plan.edges:
        assert edge.method.name == "unrolled"
        assert "nested" in edge.reason


def test_chain_top_total_derivative():
    plan = compile_spec(parse(CHAIN))
    gradient = NestedExecutor(plan).macro_step()["a"]
    estimate = central_difference(plan, "a", 0.3)
    # Every map here is a polynomial of low degree in float64: central
    # differences with step 1e-6 are exact to about 1e-9 relative.
    torch.testing.assert_close(gradient, torch.tensor(estimate, dtype=torch.float64), rtol=1e-6, atol=1e-12)


def test_chain_top_not_zero():
    # The top variable reaches the top objective only through the middle
    # level; a one-edge hypergradient would return exactly zero here.
    plan = compile_spec(parse(CHAIN))
    gradient = NestedExecutor(plan).macro_step()["a"]
    assert abs(float(gradient)) > 1e-3


def test_chain_learned_learning_rate():
    text = CHAIN.replace('"tests.toy:chain_mid"(bottom, top)', '"tests.toy:chain_mid_plain"(bottom)')
    text = text.replace("optimizer = sgd(lr = 0.3)", "optimizer = sgd(lr = top.a)")
    plan = compile_spec(parse(text))
    assert plan.edge("top", "mid").optimizer_reads == ["top.a"]
    gradient = NestedExecutor(plan).macro_step()["a"]
    estimate = central_difference(plan, "a", 0.3)
    assert abs(estimate) > 1e-3
    torch.testing.assert_close(gradient, torch.tensor(estimate, dtype=torch.float64), rtol=1e-6, atol=1e-12)


def test_chain_implicit_rejected():
    text = CHAIN.replace("steps = 4 per mid", "steps = 4 per mid\n    hypergradient = implicit")
    with pytest.raises(CompileError, match="only by unrolling"):
        compile_spec(parse(text))


def test_chain_runs_and_records():
    result = chronos.run(compile_spec(parse(CHAIN)), progress=False)
    assert result.versions["top"] == 2
    assert result.versions["mid"] == 2 * 3
    # Each solve of mid solves bottom once per mid step and once more after mid's last update.
    assert result.versions["bottom"] == 2 * (3 + 1) * 4
    assert len(result.history["mid"]) == 2
    assert set(result.variables) == {"top", "mid", "bottom"}


def test_nested_matches_two_level_executor():
    text = (REPO / "examples" / "ridge.chronos").read_text()
    text = text.replace("hypergradient = implicit(cg, iters = 20)", "hypergradient = unrolled")
    plan = compile_spec(parse(text, file="ridge.chronos"))
    nested = NestedExecutor(plan).macro_step()["log_lambda"]
    local = LocalExecutor(plan).macro_step()["log_lambda"]
    torch.testing.assert_close(nested, local, rtol=1e-10, atol=1e-12)


def test_nested_truncation_differs():
    text = (REPO / "examples" / "ridge.chronos").read_text()
    full = compile_spec(parse(text.replace("implicit(cg, iters = 20)", "unrolled"), file="r.chronos"))
    short = compile_spec(parse(text.replace("implicit(cg, iters = 20)", "unrolled(last = 3)"), file="r.chronos"))
    truncated = NestedExecutor(short).macro_step()["log_lambda"]
    local = LocalExecutor(short).macro_step()["log_lambda"]
    torch.testing.assert_close(truncated, local, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(truncated, NestedExecutor(full).macro_step()["log_lambda"])


TWO_LOWERS = """
problem wide

level top {
    param a = full(0.3, dtype = float64)
    loss = "tests.toy:wide_top"(left, right)
    optimizer = sgd(lr = 0.1)
    steps = 1
}

level left {
    param x = zeros(2, dtype = float64)
    loss = "tests.toy:reads_upper_scaled"(top)
    optimizer = sgd(lr = 0.3)
    steps = 5 per top
}

level right {
    param x = zeros(2, dtype = float64)
    loss = "tests.toy:reads_upper_scaled"(top)
    optimizer = sgd(lr = 0.2)
    steps = 5 per top
}
"""


def test_two_lowers_total_derivative():
    plan = compile_spec(parse(TWO_LOWERS))
    gradient = NestedExecutor(plan).macro_step()["a"]
    estimate = central_difference(plan, "a", 0.3)
    torch.testing.assert_close(gradient, torch.tensor(estimate, dtype=torch.float64), rtol=1e-6, atol=1e-12)


def test_read_edge_gives_second_upper():
    text = CHAIN.replace('"tests.toy:chain_bottom"(mid)', '"tests.toy:chain_bottom_reads_top"(mid, top)')
    plan = compile_spec(parse(text))
    assert plan.level("bottom").uppers == ["mid", "top"]
    edge = plan.edge("top", "bottom")
    assert edge.kind == "reads"
    assert plan.level("bottom").period == 1  # timed per mid only


def test_read_edge_total_derivative():
    text = CHAIN.replace('"tests.toy:chain_bottom"(mid)', '"tests.toy:chain_bottom_reads_top"(mid, top)')
    plan = compile_spec(parse(text))
    gradient = NestedExecutor(plan).macro_step()["a"]
    estimate = central_difference(plan, "a", 0.3)
    torch.testing.assert_close(gradient, torch.tensor(estimate, dtype=torch.float64), rtol=1e-6, atol=1e-12)


def test_optimizer_reads_grandparent():
    text = CHAIN.replace("optimizer = sgd(lr = 0.4)", "optimizer = sgd(lr = top.a)")
    plan = compile_spec(parse(text))
    edge = plan.edge("top", "bottom")
    assert edge.kind == "reads"
    assert edge.optimizer_reads == ["top.a"]
    gradient = NestedExecutor(plan).macro_step()["a"]
    estimate = central_difference(plan, "a", 0.3)
    torch.testing.assert_close(gradient, torch.tensor(estimate, dtype=torch.float64), rtol=1e-6, atol=1e-12)


def test_explain_marks_read_edges():
    from chronos.compiler.explain import explain, to_dot

    text = CHAIN.replace('"tests.toy:chain_bottom"(mid)', '"tests.toy:chain_bottom_reads_top"(mid, top)')
    plan = compile_spec(parse(text))
    assert "top -> bottom (reads): unrolled" in explain(plan)
    assert 'style=dashed' in to_dot(plan)


def test_top_reads_bottom_solved_for_final_middle():
    plan = compile_spec(parse(CHAIN))
    executor = NestedExecutor(plan)
    executor.macro_step()
    m = executor.latest["mid"]["m"]
    # chain_bottom: 0.5 ||x - m||^2 + 0.1 ||x||^2 with SGD step 0.4 from x = 0 gives
    # x <- 0.52 x + 0.4 m; four steps give x = 0.4 m (1 + 0.52 + 0.52^2 + 0.52^3).
    expected = 0.4 * m * (1 + 0.52 + 0.52**2 + 0.52**3)
    torch.testing.assert_close(executor.latest["bottom"]["x"], expected, rtol=1e-12, atol=1e-14)
