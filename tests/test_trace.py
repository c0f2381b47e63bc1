"""Dependency tracing of objectives with make_fx, and the checks on its result."""

import inspect
import warnings
from pathlib import Path

import pytest

from chronos.compiler.compile import compile_file, compile_spec
from chronos.compiler.resolve import import_ref
from chronos.compiler.trace import DependencyWarning, check_reads, trace_objective, trace_plan
from chronos.dsl import parse
from chronos.errors import CompileError
from tests import toy_trace

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    # References such as "tests.toy_trace:branches" resolve from the repository root.
    monkeypatch.chdir(REPO)


def two_levels(
    lower_loss: str = '"tests.toy:reads_upper"(top)',
    upper_loss: str = '"tests.toy:reads_lower"(bottom)',
    lower_optimizer: str = "sgd(lr = 0.5)",
    shape: str = "3",
) -> str:
    return f"""
problem toy
data points = "tests.toy:points"

level top {{
    param x = zeros({shape})
    param lr = full(0.1)
    loss = {upper_loss}
    optimizer = sgd(lr = 0.1)
    steps = 4
}}

level bottom {{
    param x = zeros({shape})
    loss = {lower_loss}
    optimizer = {lower_optimizer}
    steps = 5 per top
}}
"""


def load_data(plan):
    return {entry.name: import_ref(entry.ref, role="data")() for entry in plan.data}


def compile_traced(text: str):
    """Compile, trace and check, as the compiler does after lowering the levels."""
    plan = compile_spec(parse(text, file="toy.chronos"))
    results = trace_plan(plan, load_data(plan))
    notes = check_reads(plan, results)
    return plan, results, notes


def line_of(function, text: str) -> int:
    """Return the file line number of the first line of ``function`` that contains ``text``."""
    lines, first = inspect.getsourcelines(function)
    return first + next(index for index, line in enumerate(lines) if text in line)


def test_ridge_reads():
    plan = compile_file(REPO / "examples" / "ridge.chronos")
    results = trace_plan(plan, load_data(plan))
    assert results["weights"].reads == {"regularizer.log_lambda"}
    assert results["weights"].own_reads == {"weights.w"}
    assert results["regularizer"].reads == {"weights.w"}
    assert results["regularizer"].own_reads == frozenset()
    assert results["weights"].traced
    assert results["weights"].reason is None


def test_ridge_notes_without_warning():
    plan = compile_file(REPO / "examples" / "ridge.chronos")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DependencyWarning)
        notes = check_reads(plan, trace_plan(plan, load_data(plan)))
    assert notes == [
        "regularizer -> weights: objective of 'weights' reads regularizer.log_lambda; "
        "objective of 'regularizer' reads weights.w"
    ]


def test_trace_objective_single_level():
    plan = compile_file(REPO / "examples" / "ridge.chronos")
    levels = {level.name: level for level in plan.levels}
    result = trace_objective(levels["weights"], levels, load_data(plan))
    assert result.level == "weights"
    assert result.reads == {"regularizer.log_lambda"}


def test_ignored_upper_warns():
    text = two_levels(lower_loss='"tests.toy_trace:ignores_upper"(top)')
    with pytest.warns(DependencyWarning, match=r"edge top -> bottom: .*'bottom' never reads .*top\.x") as record:
        _, results, _ = compile_traced(text)
    assert results["bottom"].reads == frozenset()
    assert results["bottom"].traced
    assert len({str(warning.message) for warning in record}) == 1
    # The warning points at the caller of the compiler, not at Chronos code.
    assert record[0].filename == __file__


def test_upper_not_argument_warns():
    text = two_levels(lower_loss='"tests.toy:quadratic"()')
    with pytest.warns(DependencyWarning, match="does not take 'top' as an argument"):
        compile_traced(text)


def test_ignored_lower_warns():
    text = two_levels(upper_loss='"tests.toy_trace:ignores_lower"(bottom)')
    with pytest.warns(DependencyWarning, match="no hypergradient reaches 'top' through 'bottom'"):
        _, results, _ = compile_traced(text)
    assert results["top"].reads == frozenset()


def test_optimizer_read_no_warning():
    text = two_levels(lower_loss='"tests.toy_trace:ignores_upper"(top)', lower_optimizer="sgd(lr = top.lr)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DependencyWarning)
        _, results, notes = compile_traced(text)
    assert results["bottom"].reads == frozenset()
    assert "optimizer of 'bottom' reads top.lr" in notes[0]


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
    loss = "tests.toy:chain_mid_plain"(bottom)
    optimizer = sgd(lr = 0.3)
    steps = 3 per top
}

level bottom {
    param x = zeros(2, dtype = float64)
    loss = "tests.toy:chain_bottom_reads_top"(mid, top)
    optimizer = sgd(lr = 0.4)
    steps = 4 per mid
}
"""


def test_chain_read_below_no_warning():
    # 'mid' ignores 'top', but 'bottom', timed under 'mid', reads top.a; 'top' reads only 'bottom'.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DependencyWarning)
        _, results, notes = compile_traced(CHAIN)
    assert results["bottom"].reads == {"mid.m", "top.a"}
    assert "top -> mid: objective of 'mid' reads no variable of 'top'; objective of 'bottom' reads top.a" in notes[0]
    assert "objective of 'top' reads bottom.x" in notes[0]


def test_chain_unused_reads_edge_warns():
    text = CHAIN.replace('"tests.toy:chain_bottom_reads_top"(mid, top)', '"tests.toy_trace:ignores_top"(mid, top)')
    with pytest.warns(DependencyWarning) as record:
        _, _, notes = compile_traced(text)
    messages = {str(warning.message) for warning in record}
    assert any("edge top -> bottom: " in message and "the reads edge carries nothing" in message for message in messages)
    assert any("edge top -> mid: no objective or optimizer of the levels 'mid', 'bottom'" in message for message in messages)
    assert any(note.startswith("top -> bottom (reads): ") for note in notes)


def test_module_level_reads():
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
    _, results, _ = compile_traced(text)
    net = results["net"]
    assert net.traced
    assert net.reads == {"strength.log_l2"}
    assert {"net.0.bias", "net.2.weight", "net.2.bias"} <= net.own_reads
    # The frozen first layer and the buffer are constants, but the forward pass reads them.
    assert {"net.0.weight", "net.offset"} <= net.own_reads
    assert results["strength"].reads == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "net.offset"}


def test_data_dependent_branch_fallback():
    _, results, notes = compile_traced(two_levels(lower_loss='"tests.toy_trace:branches"(top)'))
    result = results["bottom"]
    assert not result.traced
    assert result.reads == {"top.x", "top.lr"}
    assert result.own_reads == {"bottom.x"}
    line = line_of(toy_trace.branches, "if own.x.sum() > 0:")
    assert f"toy_trace.py:{line} (`if own.x.sum() > 0:`)" in result.reason
    assert "data-dependent control flow" in result.reason
    assert "is assumed to read top.lr, top.x, because tracing" in notes[0]


def test_item_fallback_names_line():
    _, results, _ = compile_traced(two_levels(lower_loss='"tests.toy_trace:calls_item"(top)'))
    line = line_of(toy_trace.calls_item, ".item()")
    assert not results["bottom"].traced
    assert f"toy_trace.py:{line} " in results["bottom"].reason


def test_branch_on_data_fallback():
    # A value computed from a data tensor is a traced tensor too, so the branch fails the trace.
    _, results, _ = compile_traced(two_levels(lower_loss='"tests.toy_trace:branches_on_data"(top, points)'))
    line = line_of(toy_trace.branches_on_data, "if y.sum() > 0:")
    assert not results["bottom"].traced
    assert f"toy_trace.py:{line} " in results["bottom"].reason


def test_scalar_variables():
    text = two_levels().replace("param x = zeros(3)", "param s = zeros()")
    text = text.replace('"tests.toy:reads_upper"(top)', '"tests.toy_trace:scalar_pull"(top)')
    text = text.replace('"tests.toy:reads_lower"(bottom)', '"tests.toy_trace:scalar_pull"(bottom)')
    _, results, _ = compile_traced(text)
    assert results["bottom"].traced
    assert results["bottom"].reads == {"top.s"}
    assert results["bottom"].own_reads == {"bottom.s"}


def test_write_through_view_reads():
    text = two_levels(lower_loss='"tests.toy_trace:writes_slice"(top)')
    _, results, _ = compile_traced(text)
    assert results["bottom"].traced
    assert results["bottom"].reads == {"top.x"}


def test_shape_only_use_not_read():
    text = two_levels(lower_loss='"tests.toy_trace:shape_only"(top)')
    with pytest.warns(DependencyWarning, match="'bottom' never reads"):
        _, results, _ = compile_traced(text)
    assert results["bottom"].reads == frozenset()


def test_gradient_penalty_traced():
    _, results, _ = compile_traced(two_levels(lower_loss='"tests.toy_trace:gradient_penalty"(top)'))
    assert results["bottom"].traced
    assert results["bottom"].reads == {"top.x"}


def test_huge_variables_skipped():
    # 8000 x 8000 = 64 million elements, over the 50 million limit; nothing is allocated.
    plan = compile_spec(parse(two_levels(shape="8000, 8000"), file="toy.chronos"))
    results = trace_plan(plan, load_data(plan))
    assert not results["bottom"].traced
    assert "tracing limit" in results["bottom"].reason
    assert results["bottom"].reads == {"top.x", "top.lr"}


def test_missing_data_rejected():
    text = two_levels(lower_loss='"tests.toy_trace:branches_on_data"(top, points)')
    plan = compile_spec(parse(text, file="toy.chronos"))
    with pytest.raises(CompileError, match="data set 'points' was not loaded"):
        trace_plan(plan, {})


def test_bottom_ignoring_own_variables_warns(monkeypatch):
    from pathlib import Path

    from chronos.compiler.compile import compile_spec
    from chronos.compiler.trace import DependencyWarning
    from chronos.dsl import parse

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    text = """
problem frozen_bottom
level top {
    param x = zeros(3)
    loss = "tests.toy:reads_lower"(bottom)
    optimizer = sgd(lr = 0.1)
    steps = 2
}
level bottom {
    param x = zeros(3)
    loss = "tests.toy_trace:reads_only_upper"(top)
    optimizer = sgd(lr = 0.1)
    steps = 2 per top
}
"""
    with pytest.warns(DependencyWarning, match="does not depend on the level's own trainable variables \\(bottom.x\\)"):
        compile_spec(parse(text))


def test_missing_variable_fails_at_compile(monkeypatch):
    from pathlib import Path

    from chronos.compiler.compile import compile_spec
    from chronos.dsl import parse
    from chronos.errors import CompileError

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    text = """
problem missing
level top {
    param x = zeros(3)
    loss = "tests.toy:reads_lower"(bottom)
    optimizer = sgd(lr = 0.1)
    steps = 2
}
level bottom {
    param w = zeros(3)
    loss = "tests.toy:reads_upper"(top)
    optimizer = sgd(lr = 0.1)
    steps = 2 per top
}
"""
    expected = "failed on example inputs: level 'bottom' has no variable 'x'"
    with pytest.raises(CompileError, match=expected):
        compile_spec(parse(text))
