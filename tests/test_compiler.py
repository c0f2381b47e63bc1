"""Compiler passes: level graph, timescales, method choice, optimizer reads, explain."""

from pathlib import Path

import pytest

from chronos.compiler.compile import compile_file, compile_spec
from chronos.compiler.explain import explain, render_graph, to_dot
from chronos.compiler.methods import estimate_unrolled_bytes
from chronos.dsl import parse
from chronos.errors import ChronosError, CompileError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    # References such as "tests.toy:quadratic" resolve from the repository root.
    monkeypatch.chdir(REPO)


def two_levels(lower_extra: str = "", upper_extra: str = "", lower_steps: str = "5 per top") -> str:
    return f"""
problem toy
data points = "tests.toy:points"

level top {{
    param x = zeros(3)
    loss = "tests.toy:reads_lower"(bottom)
    optimizer = sgd(lr = 0.1)
    steps = 4
    {upper_extra}
}}

level bottom {{
    param x = zeros(3)
    loss = "tests.toy:reads_upper"(top)
    optimizer = sgd(lr = 0.5)
    steps = {lower_steps}
    {lower_extra}
}}
"""


def compile_text(text: str, **kwargs):
    return compile_spec(parse(text, file="toy.chronos"), **kwargs)


def test_periods_two_levels():
    plan = compile_text(two_levels())
    assert plan.level("top").period == 5
    assert plan.level("bottom").period == 1
    assert plan.ticks_per_macro_step == 5
    assert plan.macro_steps == 4


def test_periods_three_level_chain():
    text = two_levels() + """
level leaf {
    param x = zeros(3)
    loss = "tests.toy:reads_upper"(bottom)
    optimizer = sgd(lr = 0.5)
    steps = 3 per bottom
}
"""
    text = text.replace('"tests.toy:reads_upper"(top)', '"tests.toy:two_args"(top, leaf)')
    plan = compile_text(text)
    periods = {level.name: level.period for level in plan.levels}
    assert periods == {"top": 15, "bottom": 3, "leaf": 1}
    counts = {entry.level: entry.count for entry in plan.schedule}
    assert counts == {"top": 1, "bottom": 5, "leaf": 15}


def test_edges_and_links():
    plan = compile_text(two_levels())
    assert [(edge.upper, edge.lower) for edge in plan.edges] == [("top", "bottom")]
    assert plan.level("bottom").uppers == ["top"]
    assert plan.level("top").lowers == ["bottom"]


def test_auto_short_run_unrolled():
    plan = compile_text(two_levels())
    edge = plan.edge("top", "bottom")
    assert edge.method.name == "unrolled"
    assert edge.method.last is None
    assert "fits the memory budget" in edge.reason


def test_auto_over_budget_implicit():
    # 5 steps x (3 float32 x (params + grads + one momentum slot) + 32 B) = 340 B > 100 B.
    plan = compile_text(two_levels(), memory_budget=100)
    edge = plan.edge("top", "bottom")
    assert edge.method.name == "implicit"
    assert edge.method.solver == "cg"
    assert "over the memory budget" in edge.reason


def test_unrolled_estimate_formula():
    plan = compile_text(two_levels())
    lower = plan.level("bottom")
    # The objective 0.5 * ||x - top.x||^2 creates a difference and its square
    # (3 float32 each), a sum and a product (one float32 each): 32 bytes.
    assert lower.objective_bytes == 32
    # Per step: 3 float32 x (variables + gradients + one momentum slot) + 32 B.
    assert estimate_unrolled_bytes(lower) == 5 * (3 * 4 * 3 + 32)


def test_optimizer_read_forces_unrolled():
    text = two_levels(upper_extra="param lr = full(0.1)").replace("optimizer = sgd(lr = 0.5)", "optimizer = sgd(lr = top.lr)")
    plan = compile_text(text, memory_budget=100)
    edge = plan.edge("top", "bottom")
    assert edge.optimizer_reads == ["top.lr"]
    assert edge.method.name == "unrolled"
    assert edge.method.last == 1  # 100 B budget // 68 B per step


def test_optimizer_read_rejects_implicit():
    text = two_levels(lower_extra="hypergradient = implicit", upper_extra="param lr = full(0.1)").replace(
        "optimizer = sgd(lr = 0.5)", "optimizer = sgd(lr = top.lr)"
    )
    with pytest.raises(CompileError, match="exactly zero gradient to top.lr"):
        compile_text(text)


def test_optimizer_read_needs_scalar():
    text = two_levels().replace("optimizer = sgd(lr = 0.5)", "optimizer = sgd(lr = top.x)")
    with pytest.raises(CompileError, match="reads 'top.x' for lr, which has shape \\(3,\\); a hyperparameter must be one number"):
        compile_text(text)


def test_optimizer_read_unknown_variable():
    text = two_levels().replace("optimizer = sgd(lr = 0.5)", "optimizer = sgd(lr = top.lr)")
    with pytest.raises(ChronosError, match="has no param 'lr'"):
        compile_text(text)


def test_explicit_truncation_recorded():
    plan = compile_text(two_levels(lower_extra="hypergradient = unrolled(last = 2)"))
    edge = plan.edge("top", "bottom")
    assert edge.method.last == 2
    assert edge.requested == "unrolled"
    assert edge.reason == "requested in the spec"


def test_truncation_past_steps_is_full():
    plan = compile_text(two_levels(lower_extra="hypergradient = unrolled(last = 50)"))
    assert plan.edge("top", "bottom").method.last is None


def test_staleness_default_and_explicit():
    assert compile_text(two_levels()).edge("top", "bottom").staleness == 0
    plan = compile_text(two_levels(lower_extra="staleness = 2"))
    assert plan.edge("top", "bottom").staleness == 2


def test_cycle_names_path():
    text = two_levels(lower_steps="5 per top").replace("steps = 4", "steps = 4 per bottom")
    with pytest.raises(CompileError, match="cycle: (top -> bottom -> top|bottom -> top -> bottom)") as info:
        compile_text(text)
    assert info.value.location is not None


def test_upper_must_read_lower():
    text = two_levels().replace('"tests.toy:reads_lower"(bottom)', '"tests.toy:quadratic"()')
    with pytest.raises(CompileError, match="reads neither its lower level 'bottom'") as info:
        compile_text(text)
    assert info.value.edge == ("top", "bottom")


def test_unlinked_level_rejected():
    text = two_levels() + """
level lonely {
    param x = zeros(1)
    loss = "tests.toy:quadratic"()
    optimizer = sgd(lr = 0.1)
    steps = 4
}
"""
    with pytest.raises(CompileError, match="level 'lonely' is not linked"):
        compile_text(text)


def test_unimportable_module_located():
    text = two_levels().replace("tests.toy:reads_upper", "tests.nowhere:reads_upper")
    with pytest.raises(CompileError, match="no module named 'tests.nowhere'") as info:
        compile_text(text)
    assert info.value.location.line == 15


def test_missing_function_did_you_mean():
    text = two_levels().replace("tests.toy:reads_upper", "tests.toy:read_upper")
    with pytest.raises(CompileError, match="did you mean 'reads_upper'"):
        compile_text(text)


def test_objective_arity_checked():
    text = two_levels().replace('"tests.toy:reads_upper"(top)', '"tests.toy:reads_upper"(top, points)')
    with pytest.raises(CompileError, match="called with 3 argument"):
        compile_text(text)


def test_module_factory_must_return_module():
    text = two_levels().replace("param x = zeros(3)\n    loss = \"tests.toy:reads_upper\"", 'module = "tests.toy:not_a_module"\n    loss = "tests.toy:reads_upper"')
    with pytest.raises(CompileError, match="returned a int, expected a torch.nn.Module"):
        compile_text(text)


def test_module_variables_and_constants():
    text = """
problem frozen
data points = "tests.toy:points"

level strength {
    param log_l2 = full(-3.0, dtype = float64)
    loss = "tests.toy:holdout_loss"(net, points)
    optimizer = adam(lr = 0.1)
    steps = 2
}

level net {
    module = "tests.toy:make_frozen_net"
    loss = "tests.toy:fit_loss"(strength, points)
    optimizer = sgd(lr = 0.1)
    steps = 3 per strength
}
"""
    plan = compile_text(text)
    variables = {variable.name: variable for variable in plan.level("net").variables}
    assert variables["0.weight"].trainable is False
    assert variables["0.bias"].trainable is True
    assert variables["offset"].trainable is False
    assert variables["2.weight"].shape == [1, 4]
    assert plan.level("strength").variables[0].shape == []


def test_data_size_dimension():
    text = two_levels().replace("param x = zeros(3)\n    loss = \"tests.toy:reads_lower\"", "param x = zeros(points.size)\n    loss = \"tests.toy:reads_lower\"")
    text = text.replace("param x = zeros(3)", "param x = zeros(4)")
    plan = compile_text(text)
    assert plan.level("top").variables[0].shape == [4]
    assert plan.data[0].size == 4


def test_explain_lists_decisions():
    plan = compile_text(two_levels(lower_extra="hypergradient = implicit(cg, iters = 7)"))
    text = explain(plan)
    assert "top -> bottom: implicit(cg, iters = 7)" in text
    assert "reason: requested in the spec" in text
    assert "bottom: every 1 tick(s), 5 time(s)" in text
    assert "staleness bound 0" in text


def test_graph_dot_and_png(tmp_path):
    plan = compile_text(two_levels())
    assert '"top" -> "bottom"' in to_dot(plan)
    png = render_graph(plan, tmp_path / "graph.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dot = render_graph(plan, tmp_path / "graph.dot")
    assert dot.read_text().startswith("digraph")


def test_compile_file_records_path(tmp_path):
    path = tmp_path / "toy.chronos"
    path.write_text(two_levels())
    plan = compile_file(path)
    assert plan.source == str(path)


def test_staleness_sum_over_path():
    text = two_levels(lower_extra="staleness = 2") + """
level leaf {
    param x = zeros(3)
    loss = "tests.toy:reads_upper"(bottom)
    optimizer = sgd(lr = 0.5)
    steps = 2 per bottom
    staleness = 2
}
backend local(max_staleness = 3)
"""
    text = text.replace('"tests.toy:reads_upper"(top)', '"tests.toy:two_args"(top, leaf)')
    with pytest.raises(CompileError, match="top -> bottom -> leaf add up to 4, over the backend's max_staleness = 3"):
        compile_text(text)
    plan = compile_text(text.replace("max_staleness = 3", "max_staleness = 4"))
    assert [edge.staleness for edge in plan.edges] == [2, 2]


def test_unknown_backend_option():
    with pytest.raises(ChronosError, match="unknown backend option 'max_stalenes' \\(did you mean 'max_staleness'\\?\\)"):
        compile_text(two_levels() + "backend local(max_stalenes = 3)\n")


def test_trace_reads_on_edges():
    plan = compile_text(two_levels())
    edge = plan.edge("top", "bottom")
    assert edge.objective_reads == ["top.x"]
    assert "objective of 'bottom' reads top.x" in edge.dependencies
    assert "traced: " in explain(plan)


def test_ignored_upper_warns_at_compile():
    from chronos.compiler.trace import DependencyWarning

    text = two_levels().replace('"tests.toy:reads_upper"(top)', '"tests.toy:quadratic"(top)')
    with pytest.warns(DependencyWarning, match="bottom"):
        plan = compile_text(text)
    assert plan.edge("top", "bottom").objective_reads == []


def test_trace_can_be_skipped():
    plan = compile_text(two_levels(), trace=False)
    assert plan.edge("top", "bottom").dependencies is None


def test_implicit_damping_recorded():
    plan = compile_text(two_levels(lower_extra="hypergradient = implicit(cg, iters = 7, damping = 0.1)"))
    method = plan.edge("top", "bottom").method
    assert method.damping == 0.1
    assert "implicit(cg, iters = 7, damping = 0.1)" in explain(plan)


def test_unavailable_backend_at_compile():
    with pytest.raises(CompileError, match="backend 'torch' is not available") as info:
        compile_text(two_levels() + "backend torch(world_size = 2)\n")
    assert info.value.location is not None


def test_local_backend_rejects_device():
    with pytest.raises(CompileError, match="does not take device"):
        compile_text(two_levels() + "backend local(device = cuda)\n")


def test_source_recorded_absolute(tmp_path, monkeypatch):
    (tmp_path / "toy.chronos").write_text(two_levels())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    plan = compile_file("toy.chronos")
    assert plan.source == str(tmp_path / "toy.chronos")
