"""Compile generated specs of the compile-time benchmark and check the plan they must give.

A correctness test only: the benchmark (benchmarks.compile_time) measures the
time. The generator is imported from the benchmark so that both use the same
specs.
"""

import importlib
from pathlib import Path

import pytest

from chronos.compiler.compile import compile_spec
from chronos.dsl import parse

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    # The specs reference "benchmarks.spec_objectives:...", which resolves from
    # the repository root; plain `pytest` does not put the root on sys.path.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        patch.syspath_prepend(str(REPO))
        yield importlib.import_module("benchmarks.compile_time")


@pytest.fixture(scope="module")
def tree200(bench):
    generated = bench.tree_spec(200)
    return generated, compile_generated(generated)


def compile_generated(generated, trace: bool = False):
    # Tracing is off: it is tested on its own, and it would dominate this test's time.
    return compile_spec(parse(generated.text, file=f"<{generated.name}>"), trace=trace)


def test_tree_200_counts(tree200):
    generated, plan = tree200
    assert len(plan.levels) == 200
    assert len(plan.edges) == 199
    assert generated.depth == 3  # 1 + 8 + 64 levels fill depths 0 to 2; the other 127 are at depth 3


def test_tree_200_periods(tree200):
    generated, plan = tree200
    periods = {level.name: level.period for level in plan.levels}
    assert periods == generated.periods
    assert plan.ticks_per_macro_step == 2**3
    assert periods["lv0"] == 8
    assert periods["lv199"] == 1


def test_tree_200_schedule(tree200):
    _, plan = tree200
    counts = {entry.level: entry.count for entry in plan.schedule}
    assert counts["lv0"] == 1
    assert counts["lv1"] == 2
    assert counts["lv199"] == 8


def test_tree_200_edges(tree200):
    _, plan = tree200
    pairs = {(edge.upper, edge.lower) for edge in plan.edges}
    expected = {(f"lv{(index - 1) // 8}", f"lv{index}") for index in range(1, 200)}
    assert pairs == expected
    assert plan.level("lv0").lowers == sorted(f"lv{index}" for index in range(1, 9))


def test_tree_optimizer_read_recorded(tree200):
    # Leaves with index % 4 == 1 read their upper level's lr in their optimizer.
    _, plan = tree200
    edge = plan.edge("lv9", "lv73")
    assert edge.optimizer_reads == ["lv9.lr"]
    assert edge.method.name == "unrolled"


def test_tree_traced(bench):
    # The default pipeline traces objectives; 20 levels keep the test short.
    generated = bench.tree_spec(20)
    plan = compile_generated(generated, trace=True)
    assert len(plan.edges) == 19
    assert plan.edge("lv0", "lv1").objective_reads == ["lv0.x"]


def test_chain_100_periods(bench):
    generated = bench.chain_spec(100)
    plan = compile_generated(generated)
    assert len(plan.levels) == 100
    assert len(plan.edges) == 99
    assert {level.period for level in plan.levels} == {1}
    assert plan.ticks_per_macro_step == 1


def test_generator_rejects_sizes(bench):
    with pytest.raises(ValueError, match="at least 2 levels"):
        bench.chain_spec(1)
    with pytest.raises(ValueError, match="must be positive"):
        bench.tree_spec(0)


def test_growth_exponent_slope(bench):
    # Times proportional to levels squared give slope 2 exactly (up to rounding).
    exponent = bench.growth_exponent([10, 100, 1000], [0.01, 1.0, 100.0])
    assert exponent == pytest.approx(2.0, abs=1e-12)
    assert bench.growth_exponent([10], [1.0]) is None
