"""A lower level that starts every solve from an upper variable (meta-learned initialization)."""

from pathlib import Path

import pytest
import torch

from chronos.backends.local import LocalExecutor
from chronos.backends.nested import NestedExecutor
from chronos.compiler.compile import compile_spec
from chronos.dsl import parse
from chronos.errors import ChronosError, CompileError

REPO = Path(__file__).resolve().parents[1]

MAML = """
problem maml

level meta {
    param w0 = full(0.5, 2, dtype = float64)
    loss = "tests.toy:maml_outer"(task)
    optimizer = sgd(lr = 0.1)
    steps = 3
}

level task {
    param w = meta.w0
    loss = "tests.toy:maml_inner"(meta)
    optimizer = sgd(lr = 0.2)
    steps = 4 per meta
}
"""


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


def closed_form(w0: torch.Tensor) -> torch.Tensor:
    # Gradient descent with step 0.2 on 0.5 ||w - a||^2 gives w_K = a + 0.8^K (w0 - a),
    # so d outer / d w0 = 0.8^K (w_K - b) for the outer 0.5 ||w_K - b||^2.
    a = torch.tensor([1.0, -1.0], dtype=torch.float64)
    b = torch.tensor([0.0, 2.0], dtype=torch.float64)
    w_k = a + 0.8**4 * (w0 - a)
    return 0.8**4 * (w_k - b)


def test_plan_records_init_read():
    plan = compile_spec(parse(MAML))
    edge = plan.edge("meta", "task")
    assert edge.init_reads == ["meta.w0"]
    assert edge.method.name == "unrolled"
    assert edge.method.last is None
    variable = plan.level("task").variables[0]
    assert variable.init_from == "meta.w0"
    assert variable.shape == [2]
    assert variable.dtype == "float64"


@pytest.mark.parametrize("executor_class", [LocalExecutor, NestedExecutor])
def test_hypergradient_matches_closed_form(executor_class):
    plan = compile_spec(parse(MAML))
    gradient = executor_class(plan).macro_step()["w0"]
    torch.testing.assert_close(gradient, closed_form(torch.full((2,), 0.5, dtype=torch.float64)), rtol=1e-12, atol=1e-14)


def test_implicit_rejected():
    text = MAML.replace("steps = 4 per meta", "steps = 4 per meta\n    hypergradient = implicit")
    with pytest.raises(CompileError, match="exactly zero under implicit differentiation"):
        compile_spec(parse(text))


def test_truncation_rejected():
    text = MAML.replace("steps = 4 per meta", "steps = 4 per meta\n    hypergradient = unrolled(last = 2)")
    with pytest.raises(CompileError, match="keeps 2 of 4 steps"):
        compile_spec(parse(text))


def test_warm_start_contradiction():
    text = MAML.replace("steps = 4 per meta", "steps = 4 per meta\n    warm_start = true")
    with pytest.raises(ChronosError, match="contradicts warm_start"):
        compile_spec(parse(text))


def test_unknown_upper_variable():
    with pytest.raises(ChronosError, match="has no param 'w1'"):
        compile_spec(parse(MAML.replace("param w = meta.w0", "param w = meta.w1")))


def test_explain_shows_start():
    from chronos.compiler.explain import explain

    text = explain(compile_spec(parse(MAML)))
    assert "w: 2 float64, starts from meta.w0" in text
    assert "starts from meta.w0" in text.split("edges:")[1]


def test_checkpoint_resume_with_init_from(tmp_path):
    plan = compile_spec(parse(MAML))
    whole = LocalExecutor(plan).run(progress=False)
    path = tmp_path / "maml.ckpt"

    def stop(index, executor):
        if index == 1:  # after the checkpoint of macro step 0 was written
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        LocalExecutor(plan).run(progress=False, checkpoint=path, callback=stop)
    assert path.exists()
    resumed = LocalExecutor(plan).run(progress=False, checkpoint=path, resume=True)
    torch.testing.assert_close(resumed.variables["meta"]["w0"], whole.variables["meta"]["w0"], rtol=0, atol=0)
