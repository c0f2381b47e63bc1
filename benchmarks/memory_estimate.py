"""Check the compiler's unrolled-memory estimate against measured peak memory.

For the hyper-cleaning problem with T inner steps, the compiler stores on the
edge an estimate of the bytes that full unrolling keeps alive
(``EdgePlan.unrolled_bytes``). This benchmark runs one macro step of the
compiled plan in a fresh process per (method, T) and measures the peak RSS
increase over the step (see ``benchmarks.measure.PeakMemory``), then reports
measured / estimated. Implicit differentiation is measured too: its memory
must stay flat in T.

    python -m benchmarks.memory_estimate --output out/memory [--steps 10 50 100 200 400]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "examples" / "hyperclean.chronos"
METHODS = {"unrolled": "unrolled", "implicit": "implicit(neumann, iters = 20, alpha = 0.1)"}


def _plan(steps: int, method: str):
    from chronos.compiler.compile import compile_spec
    from chronos.dsl import parse

    text = SPEC.read_text().replace("steps = 100 per weights", f"steps = {steps} per weights")
    text = text.replace("hypergradient = auto", f"hypergradient = {METHODS[method]}")
    return compile_spec(parse(text, file=str(SPEC)))


def _worker(steps: int, method: str) -> dict:
    """Compile, build the executor, then measure the peak RSS increase of one macro step."""
    import torch

    from benchmarks.measure import PeakMemory
    from chronos.backends.local import LocalExecutor

    torch.set_num_threads(1)
    plan = _plan(steps, method)
    executor = LocalExecutor(plan)
    peak = PeakMemory()
    peak.start()
    executor.macro_step()
    measured = peak.stop()
    edge = plan.edges[0]
    return {
        "method": method,
        "steps": steps,
        "estimated_bytes": edge.unrolled_bytes,
        "measured_bytes": measured,
        "measurement": peak.method,
    }


def _run_worker(steps: int, method: str) -> dict:
    command = [sys.executable, "-m", "benchmarks.memory_estimate", "--worker", "--steps", str(steps), "--method", method]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    if completed.returncode != 0:
        raise RuntimeError(f"worker {method} T={steps} failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _table(rows: list[dict]) -> str:
    lines = [
        "| method | inner steps T | estimated (MiB) | measured peak (MiB) | measured / estimated |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        estimate = row["estimated_bytes"] / 2**20
        measured = row["measured_bytes"] / 2**20
        ratio = "n/a" if row["method"] == "implicit" else f"{row['measured_bytes'] / max(row['estimated_bytes'], 1):.2f}"
        estimate_cell = f"{estimate:.1f}" if row["method"] == "unrolled" else f"({estimate:.1f} if unrolled)"
        lines.append(f"| {row['method']} | {row['steps']} | {estimate_cell} | {measured:.1f} | {ratio} |")
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for method, marker in (("unrolled", "o"), ("implicit", "s")):
        points = [row for row in rows if row["method"] == method]
        axes.plot([r["steps"] for r in points], [r["measured_bytes"] / 2**20 for r in points], marker=marker, label=f"{method}, measured")
    unrolled = [row for row in rows if row["method"] == "unrolled"]
    axes.plot([r["steps"] for r in unrolled], [r["estimated_bytes"] / 2**20 for r in unrolled], "--", label="unrolled, compiler estimate")
    axes.set_xlabel("inner steps T")
    axes.set_ylabel("peak memory of one outer step (MiB)")
    axes.set_title("hyper-cleaning: estimate vs measured")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("out/memory"), help="directory for JSON, Markdown and PNG")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50, 100, 200, 400], help="inner steps T to measure")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=sorted(METHODS), default="unrolled", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        logging.disable(logging.INFO)
        print(json.dumps(_worker(args.steps[0], args.method)))
        return 0

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = []
    jobs = [(method, steps) for steps in args.steps for method in METHODS]
    for method, steps in tqdm(jobs, desc="memory", unit="run"):
        rows.append(_run_worker(steps, method))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "memory_estimate.json").write_text(json.dumps(rows, indent=2) + "\n")
    header = (
        f"Command: `python -m benchmarks.memory_estimate --output {args.output} --steps {' '.join(map(str, args.steps))}`\n\n"
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"date {date.today().isoformat()}\n\n"
    )
    (args.output / "memory_estimate.md").write_text(header + _table(rows) + "\n")
    _plot(rows, args.output / "memory_estimate.png")
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
