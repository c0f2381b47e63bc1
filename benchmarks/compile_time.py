"""Time parse-to-plan compilation of generated specs from 10 to 10,000 levels.

Run from the repository root::

    python -m benchmarks.compile_time --output out/bench

Each size is compiled once as a warm-up (imports, the cached lark parser),
then ``--repeat`` times; the report gives the median and the minimum. The
growth exponent is the least-squares slope of log(median time) against
log(levels): 1 is linear, 2 quadratic. A second, instrumented run per size
splits the time into compiler stages. Its wrappers add a few microseconds per
call, so the stage times come from that run and not from the timed ones.

Generated specs (see :func:`tree_spec` and :func:`chain_spec`) reference the
functions in ``benchmarks.spec_objectives``, so every reference imports and
passes the arity check as a real spec's would.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

__all__ = [
    "GeneratedSpec",
    "chain_spec",
    "compile_text",
    "growth_exponent",
    "render_markdown",
    "machine_info",
    "main",
    "measure",
    "run",
    "time_stages",
    "tree_spec",
    "write_json",
    "write_plot",
]

logger = logging.getLogger(__name__)

OBJECTIVES = "benchmarks.spec_objectives"
DEFAULT_SIZES = (10, 100, 1_000, 10_000)
DEFAULT_CHAIN_SIZES = (10, 100)
# Stages in pipeline order; "other" is the rest of the total (plan construction,
# optimizer reads, edge assembly, the staleness check, the search path).
STAGES = (
    "parse",
    "build spec",
    "spec checks",
    "graph",
    "data",
    "timescales",
    "lowering",
    "methods",
    "tracing",
    "read checks",
    "plan validation",
)


@dataclass(frozen=True)
class GeneratedSpec:
    """A generated spec's text and the plan facts it must compile to."""

    name: str
    text: str
    levels: int
    edges: int
    depth: int  # edges on the longest path from the root
    periods: dict[str, int] = field(repr=False)
    ticks_per_macro_step: int


def tree_spec(levels: int, *, branching: int = 8, steps: int = 2) -> GeneratedSpec:
    """Generate a spec whose levels form one tree, filled tier by tier.

    Level ``lv{i}`` has upper ``lv{(i - 1) // branching}`` and takes ``steps``
    steps per step of it, so a level at depth d has period ``steps ** (D - d)``
    with D the tree's depth. Ten thousand levels with branching 8 give depth 5.
    Every upper level's objective reads all its lower levels, and leaves cycle
    through four kinds (see :func:`_leaf_entries`).
    """
    if levels < 1 or branching < 1 or steps < 1:
        raise ValueError(f"levels, branching and steps must be positive, got {levels}, {branching}, {steps}")
    lowers: list[list[int]] = [[] for _ in range(levels)]
    depth = [0] * levels
    for index in range(1, levels):
        upper = (index - 1) // branching
        lowers[upper].append(index)
        depth[index] = depth[upper] + 1
    blocks = [_level_block(0, _root_entries(lowers[0]))]
    for index in range(1, levels):
        upper = (index - 1) // branching
        if lowers[index]:
            entries = _inner_entries(upper, lowers[index], steps)
        else:
            entries = _leaf_entries(index, upper, steps)
        blocks.append(_level_block(index, entries))
    deepest = max(depth)
    return GeneratedSpec(
        name=f"tree{levels}",
        text=_problem(f"tree{levels}", blocks),
        levels=levels,
        edges=levels - 1,
        depth=deepest,
        periods={f"lv{index}": steps ** (deepest - depth[index]) for index in range(levels)},
        ticks_per_macro_step=steps**deepest,
    )


def chain_spec(levels: int) -> GeneratedSpec:
    """Generate a chain ``lv0 -> lv1 -> ...`` in which every level takes one step per upper step.

    Every period is 1. With ``steps = N per`` for N above 1, a chain of L
    levels would need a period of N ** (L - 1) ticks at its top.
    """
    if levels < 2:
        raise ValueError(f"a chain needs at least 2 levels, got {levels}")
    blocks = [_level_block(0, _root_entries([1]))]
    for index in range(1, levels):
        upper = f"lv{index - 1}"
        if index < levels - 1:
            loss = f'"{OBJECTIVES}:chain_loss"({upper}, lv{index + 1})'
        else:
            loss = f'"{OBJECTIVES}:leaf_loss"({upper}, targets)'
        entries = ["param x = zeros(4)", f"loss = {loss}", "optimizer = sgd(lr = 0.1)", f"steps = 1 per {upper}"]
        blocks.append(_level_block(index, entries))
    return GeneratedSpec(
        name=f"chain{levels}",
        text=_problem(f"chain{levels}", blocks),
        levels=levels,
        edges=levels - 1,
        depth=levels - 1,
        periods={f"lv{index}": 1 for index in range(levels)},
        ticks_per_macro_step=1,
    )


def _problem(name: str, blocks: list[str]) -> str:
    header = [
        f"problem {name}",
        "",
        f'data features = "{OBJECTIVES}:features"',
        f'data targets  = "{OBJECTIVES}:targets"',
        "",
    ]
    return "\n".join(header + blocks + ["backend local", ""])


def _root_entries(lowers: list[int]) -> list[str]:
    arguments = ", ".join([*(f"lv{lower}" for lower in lowers), "features"])
    return [
        "param x = zeros(features.size)",
        "param lr = full(0.05)",
        f'loss = "{OBJECTIVES}:root_loss"({arguments})',
        "optimizer = adam(lr = 0.01)",
        "steps = 10",
    ]


def _inner_entries(upper: int, lowers: list[int], steps: int) -> list[str]:
    arguments = ", ".join([f"lv{upper}", *(f"lv{lower}" for lower in lowers)])
    return [
        "param x = zeros(4)",
        "param lr = full(0.05)",
        f'loss = "{OBJECTIVES}:inner_loss"({arguments})',
        "optimizer = sgd(lr = 0.1, momentum = 0.9)",
        f"steps = {steps} per lv{upper}",
        "staleness = 0",
    ]


def _leaf_entries(index: int, upper: int, steps: int) -> list[str]:
    """Entries of a leaf, one of four kinds by ``index % 4``.

    The kinds are a module level, a level whose optimizer reads the upper
    level's ``lr`` (so the edge must unroll), a level that states
    ``hypergradient = auto`` and a level with unrolled(last = 1). No leaf requests
    implicit, which the compiler rejects on edges of plans deeper than two levels.
    """
    variables = "param x = zeros(4)"
    optimizer = "sgd(lr = 0.1)"
    extra: list[str] = []
    kind = index % 4
    if kind == 0:
        variables = f'module = "{OBJECTIVES}:make_head"'
    elif kind == 1:
        optimizer = f"sgd(lr = lv{upper}.lr)"
    elif kind == 2:
        extra = ["hypergradient = auto"]
    else:
        extra = ["hypergradient = unrolled(last = 1)"]
    return [
        variables,
        f'loss = "{OBJECTIVES}:leaf_loss"(lv{upper}, targets)',
        f"optimizer = {optimizer}",
        f"steps = {steps} per lv{upper}",
        *extra,
    ]


def _level_block(index: int, entries: list[str]) -> str:
    lines = [f"level lv{index} {{", *(f"    {entry}" for entry in entries), "}", ""]
    return "\n".join(lines)


# Timing.


def compile_text(text: str, file: str = "<generated>", *, trace: bool = True):
    """Parse ``text`` and compile it to a Plan, the path that ``compile_file`` takes.

    ``trace`` is passed to ``compile_spec``: whether each objective is traced
    with torch.fx to find the variables it reads.
    """
    from chronos.compiler.compile import compile_spec
    from chronos.dsl import parse

    return compile_spec(parse(text, file), trace=trace)


def _time_once(text: str, file: str, trace: bool) -> float:
    # Garbage from the previous run is collected first, so that a run pays for
    # its own collections only. Collection stays on during the run, as in use.
    gc.collect()
    started = time.perf_counter()
    compile_text(text, file, trace=trace)
    return time.perf_counter() - started


def _stage_targets() -> dict[str, tuple[object, str]]:
    """Map each stage to the (owner, attribute) whose calls it is timed by."""
    import chronos.compiler.compile as pipeline
    import chronos.compiler.trace as tracing
    import chronos.compiler.validate_plan as plan_checks
    import chronos.dsl.parser as parser
    import chronos.spec_checks as spec_checks
    from chronos.dsl.build import SpecBuilder

    return {
        "parse": (parser, "_parse_tree"),
        "build spec": (SpecBuilder, "build"),
        "spec checks": (spec_checks, "check_problem_spec"),
        "graph": (pipeline, "build_level_graph"),
        "data": (pipeline, "resolve_data"),
        "timescales": (pipeline, "assign_timescales"),
        "lowering": (pipeline, "lower_level"),
        "methods": (pipeline, "choose_method"),
        "tracing": (tracing, "trace_plan"),
        "read checks": (tracing, "check_reads"),
        "plan validation": (plan_checks, "check_plan"),
    }


@contextlib.contextmanager
def _timed_stages(seconds: dict[str, float], calls: dict[str, int]) -> Iterator[None]:
    """Wrap each stage's function so that its calls add to ``seconds`` and ``calls``, and restore them after."""
    patched: list[tuple[object, str, object]] = []
    for stage, (owner, attribute) in _stage_targets().items():
        original = getattr(owner, attribute, None)
        if original is None:
            logger.warning("stage '%s' is not timed: %s has no attribute %s", stage, owner, attribute)
            continue
        setattr(owner, attribute, _timer(stage, original, seconds, calls))
        patched.append((owner, attribute, original))
    try:
        yield
    finally:
        for owner, attribute, original in patched:
            setattr(owner, attribute, original)


def _timer(stage: str, function: Callable, seconds: dict[str, float], calls: dict[str, int]) -> Callable:
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started
            calls[stage] = calls.get(stage, 0) + 1

    return timed


def time_stages(text: str, file: str = "<generated>", *, trace: bool = True) -> tuple[dict[str, float], dict[str, int]]:
    """Compile ``text`` once with every stage timed; return seconds and call counts per stage.

    Stage ``other`` is the total minus the timed stages: plan and edge
    assembly, optimizer reads and the staleness check in compile.py.
    """
    seconds: dict[str, float] = {}
    calls: dict[str, int] = {}
    gc.collect()
    with _timed_stages(seconds, calls):
        started = time.perf_counter()
        compile_text(text, file, trace=trace)
        total = time.perf_counter() - started
    ordered = {stage: seconds.get(stage, 0.0) for stage in STAGES}
    ordered["other"] = max(total - sum(ordered.values()), 0.0)
    ordered["total"] = total
    return ordered, {stage: calls.get(stage, 0) for stage in STAGES}


def _check_plan_shape(spec: GeneratedSpec, file: str, trace: bool) -> None:
    """Compile once (the warm-up) and raise RuntimeError if the plan does not match the generator."""
    plan = compile_text(spec.text, file, trace=trace)
    periods = {level.name: level.period for level in plan.levels}
    found = (len(plan.levels), len(plan.edges), plan.ticks_per_macro_step)
    expected = (spec.levels, spec.edges, spec.ticks_per_macro_step)
    if found != expected or periods != spec.periods:
        raise RuntimeError(
            f"{spec.name}: the plan has (levels, edges, ticks per macro step) {found}, expected {expected}, "
            "or its periods differ from the generator's"
        )


def measure(spec: GeneratedSpec, repeat: int, *, trace: bool = True) -> dict:
    """Warm up once, time ``repeat`` compiles of ``spec`` and one instrumented compile; return the record."""
    file = f"<{spec.name}>"
    _check_plan_shape(spec, file, trace)
    times = [_time_once(spec.text, file, trace) for _ in range(repeat)]
    stages, calls = time_stages(spec.text, file, trace=trace)
    return {
        "levels": spec.levels,
        "edges": spec.edges,
        "depth": spec.depth,
        "characters": len(spec.text),
        "median_s": statistics.median(times),
        "min_s": min(times),
        "times_s": times,
        "stages_s": stages,
        "stage_calls": calls,
    }


def growth_exponent(levels: Sequence[int], seconds: Sequence[float]) -> Optional[float]:
    """Return the least-squares slope of log(seconds) against log(levels), or None for fewer than 2 sizes."""
    if len(levels) < 2:
        return None
    xs = [math.log(value) for value in levels]
    ys = [math.log(value) for value in seconds]
    x_mean = statistics.fmean(xs)
    y_mean = statistics.fmean(ys)
    numerator = sum((x - x_mean) * (y - y_mean) for x, y in zip(xs, ys))
    denominator = sum((x - x_mean) ** 2 for x in xs)
    return numerator / denominator if denominator else None


def _series(runs: list[dict]) -> dict:
    levels = [run["levels"] for run in runs]
    return {
        "runs": runs,
        "growth_exponent": growth_exponent(levels, [run["median_s"] for run in runs]),
        "growth_exponent_min": growth_exponent(levels, [run["min_s"] for run in runs]),
    }


# The machine.


def machine_info() -> dict:
    """Describe the machine: CPU model, logical cores, memory, Python and torch versions."""
    import torch

    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or "unknown"


def _memory_gib() -> Optional[float]:
    try:
        text = Path("/proc/meminfo").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)  # the file gives KiB
    return None


# Reports.


def write_json(result: dict, path: Path) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def render_markdown(result: dict) -> str:
    """Render the result as Markdown: command, machine, one table per series and the stage table."""
    machine = result["machine"]
    lines = [
        "# Compile time",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Date: {result['date']}",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {machine['cpu']} |",
        f"| cores | {machine['logical_cores']} logical, {machine['usable_cores']} usable by this process |",
        f"| memory | {machine['memory_gib']} GiB |",
        f"| Python | {machine['python']} |",
        f"| torch | {machine['torch']} |",
        "",
        f"Each size: one warm-up compile, then {result['repeat']} timed compiles (parse to validated plan), "
        f"{'with' if result['trace'] else 'without'} tracing of the objectives (trace={result['trace']}).",
        "",
    ]
    for key, title in (("tree", "Tree"), ("chain", "Chain")):
        series = result.get(key)
        if series and series["runs"]:
            lines += _series_table(title, series)
    tree = result.get("tree")
    if tree and tree["runs"]:
        lines += _stage_table(tree["runs"])
    return "\n".join(lines) + "\n"


def _series_table(title: str, series: dict) -> list[str]:
    lines = [
        f"## {title}",
        "",
        "| levels | depth | spec size (KiB) | median (s) | min (s) | median per level (ms) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for run in series["runs"]:
        per_level = 1000 * run["median_s"] / run["levels"]
        lines.append(
            f"| {run['levels']:,} | {run['depth']} | {run['characters'] / 1024:,.0f} | {run['median_s']:.4f} | "
            f"{run['min_s']:.4f} | {per_level:.3f} |"
        )
    exponent = series["growth_exponent"]
    if exponent is not None:
        lines += ["", f"Growth exponent (slope of log median time against log levels): {exponent:.2f}"]
        lines.append(f"(from the minimum times: {series['growth_exponent_min']:.2f})")
    return lines + [""]


def _stage_table(runs: list[dict]) -> list[str]:
    columns = [*STAGES, "other", "total"]
    lines = [
        "## Stages of the tree compiles (seconds, one instrumented compile per size)",
        "",
        "| levels | " + " | ".join(columns) + " |",
        "|---:|" + "---:|" * len(columns),
    ]
    for run in runs:
        cells = [f"{run['stages_s'][stage]:.4f}" for stage in columns]
        lines.append(f"| {run['levels']:,} | " + " | ".join(cells) + " |")
    calls = runs[-1]["stage_calls"]
    counted = ", ".join(f"{stage} {count}" for stage, count in calls.items())
    lines += ["", f"Calls per compile at {runs[-1]['levels']:,} levels: {counted}.", ""]
    return lines


def write_plot(result: dict, path: Path) -> None:
    """Plot median compile time and the stage times against levels, both axes logarithmic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (total_axes, stage_axes) = plt.subplots(1, 2, figsize=(11, 4.5))
    for key, marker in (("tree", "o"), ("chain", "s")):
        runs = result.get(key, {}).get("runs", [])
        if runs:
            levels = [run["levels"] for run in runs]
            total_axes.plot(levels, [run["median_s"] for run in runs], marker=marker, label=f"{key} (median)")
    tree_runs = result.get("tree", {}).get("runs", [])
    if tree_runs:
        _plot_linear_reference(total_axes, tree_runs[-1])
        levels = [run["levels"] for run in tree_runs]
        colors = plt.get_cmap("tab20").colors
        for index, stage in enumerate([*STAGES, "other"]):
            values = [run["stages_s"][stage] for run in tree_runs]
            if max(values) > 0:  # a stage that did not run (tracing with --no-trace) has no line
                stage_axes.plot(levels, values, marker=".", label=stage, color=colors[index % len(colors)])
    for axes, title in ((total_axes, "parse to plan"), (stage_axes, "stages (tree)")):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("levels")
        axes.set_ylabel("seconds")
        axes.set_title(title)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_linear_reference(axes, anchor: dict) -> None:
    # A slope-1 line through the largest tree size: points below it at small
    # sizes mean growth faster than linear.
    levels = [10, anchor["levels"]]
    seconds = [anchor["median_s"] * size / anchor["levels"] for size in levels]
    axes.plot(levels, seconds, linestyle="--", color="gray", label="linear through the largest size")


# Command line.


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive integers, got {text!r}")
    return sizes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compile_time",
        description="Time parse-to-plan compilation of generated specs of growing size.",
    )
    parser.add_argument("--output", type=Path, required=True, help="directory for compile_time.{json,md,png}")
    parser.add_argument(
        "--sizes", type=_sizes, default=list(DEFAULT_SIZES), help="tree sizes in levels, comma-separated"
    )
    parser.add_argument(
        "--chain-sizes",
        type=_sizes,
        default=list(DEFAULT_CHAIN_SIZES),
        help="chain lengths in levels, comma-separated, each at least 2",
    )
    parser.add_argument("--repeat", type=int, default=5, help="timed compiles per size after the warm-up")
    parser.add_argument("--branching", type=int, default=8, help="lower levels per upper level in the tree")
    parser.add_argument(
        "--no-trace",
        dest="trace",
        action="store_false",
        help="compile with trace=False: skip tracing the objectives with torch.fx",
    )
    return parser


def run(sizes: Sequence[int], chain_sizes: Sequence[int], repeat: int, branching: int, trace: bool = True) -> dict:
    """Measure every tree and chain size; return the result without the command and machine fields."""
    specs = [("tree", tree_spec(size, branching=branching)) for size in sizes]
    specs += [("chain", chain_spec(size)) for size in chain_sizes]
    runs: dict[str, list[dict]] = {"tree": [], "chain": []}
    for key, spec in tqdm(specs, desc="compile time", unit="spec"):
        logger.info("%s: %d levels, depth %d, %d characters", spec.name, spec.levels, spec.depth, len(spec.text))
        record = measure(spec, repeat, trace=trace)
        logger.info("%s: median %.4f s, min %.4f s", spec.name, record["median_s"], record["min_s"])
        runs[key].append(record)
    return {
        "repeat": repeat,
        "trace": trace,
        "tree": {"branching": branching, "steps_per_upper": 2, **_series(runs["tree"])},
        "chain": {"steps_per_upper": 1, **_series(runs["chain"])},
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    options = _parser().parse_args(arguments)
    if options.repeat < 1:
        _parser().error(f"--repeat must be at least 1, got {options.repeat}")
    if options.chain_sizes and min(options.chain_sizes) < 2:
        _parser().error(f"--chain-sizes must be at least 2, got {options.chain_sizes}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # The compiler logs one line per edge at INFO; at 10,000 levels that output
    # would be a large part of the time measured.
    logging.getLogger("chronos").setLevel(logging.WARNING)

    result = {
        "command": " ".join(["python -m benchmarks.compile_time", *arguments]),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
    }
    with logging_redirect_tqdm():
        result.update(run(options.sizes, options.chain_sizes, options.repeat, options.branching, options.trace))

    options.output.mkdir(parents=True, exist_ok=True)
    write_json(result, options.output / "compile_time.json")
    (options.output / "compile_time.md").write_text(render_markdown(result), encoding="utf-8")
    write_plot(result, options.output / "compile_time.png")
    logger.info("wrote %s", options.output / "compile_time.{json,md,png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
