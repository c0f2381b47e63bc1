"""Measure one system on one case in this process and write the result as JSON.

Run by :mod:`benchmarks.run`, one fresh process per (system, case, round)::

    python -m benchmarks.worker --system chronos-plan --case hyperclean-unrolled-10 \\
        --repeat 5 --result out/r.json [--reference-hypergradient ref.pt] [--save-hypergradient h.pt]

Order of work: the worker builds the problem and the system, runs the first
outer step (the warm-up) and checks its hypergradient against the
reference's. Then it starts the memory measurement and times ``--repeat``
outer steps. Last, it runs any further untimed steps up to the case's
``outer_steps``, reads the peak memory and scores the final inner variables. A system whose first
hypergradient has cosine similarity below :data:`MIN_COSINE` to the
reference's is reported as wrong and not timed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import torch

from benchmarks.cases import Case, build_problem, select_cases
from benchmarks.measure import PeakMemory, time_calls
from benchmarks.systems.base import MethodUnsupported, System, SystemUnavailable, flatten, load_system

__all__ = ["MIN_COSINE", "cosine", "main", "measure"]

logger = logging.getLogger(__name__)

# Systems that compute the same float32 hypergradient agreed to a cosine of
# 0.99999 or better in the benchmark run, so a value below this bar means a
# different computation, not rounding.
MIN_COSINE = 0.999


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Return the cosine similarity of two flat vectors (0 when either is zero)."""
    denominator = float(a.norm() * b.norm())
    return float(a @ b) / denominator if denominator > 0 else 0.0


def _status(kind: str, reason: str = "") -> dict[str, Any]:
    return {"status": kind, "reason": reason}


def measure(
    system_name: str,
    case: Case,
    repeat: int,
    reference: Optional[torch.Tensor],
    save_hypergradient: Optional[Path],
) -> dict[str, Any]:
    """Measure ``system_name`` on ``case`` and return the result record (see the module docstring)."""
    try:
        system_class = load_system(system_name)
    except SystemUnavailable as error:
        return _status("not available", str(error))
    result: dict[str, Any] = {"version": system_class.version(), "threads": torch.get_num_threads()}
    problem = build_problem(case)
    memory = PeakMemory()
    try:
        system: System = system_class(problem)
        hypergradient = flatten(system.step(), list(problem.outer_init))
    except MethodUnsupported as error:
        return {**result, **_status("not supported", str(error))}
    if save_hypergradient is not None:
        torch.save(hypergradient, save_hypergradient)
    if reference is not None:
        result["cosine"] = cosine(hypergradient, reference)
        if result["cosine"] < MIN_COSINE:
            return {**result, **_status("wrong", f"hypergradient cosine {result['cosine']:.6f} < {MIN_COSINE}")}
    # Memory is measured from after the warm-up step, so one-time costs (code
    # pages of kernels used for the first time, thread pools) are not counted.
    memory.start()
    timing = time_calls(system.step, repeat)
    for _ in range(case.outer_steps - 1 - repeat):
        system.step()
    result["peak_bytes"] = memory.stop()
    result["memory_method"] = memory.method
    result["seconds"] = timing.seconds
    result["metric"] = problem.metric(system.inner_params())
    result["outer_steps"] = max(case.outer_steps, repeat + 1)
    return {**result, **_status("ok")}


def _parse(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--system", required=True, help="system name (see benchmarks.systems.SYSTEMS)")
    parser.add_argument("--case", required=True, help="case name (see benchmarks.cases.all_cases)")
    parser.add_argument("--quick", action="store_true", help="use the reduced cases of a quick run")
    parser.add_argument("--repeat", type=int, default=5, help="timed outer steps after the warm-up step")
    parser.add_argument("--result", type=Path, required=True, help="JSON file to write the result to")
    parser.add_argument("--reference-hypergradient", type=Path, help="reference hypergradient (.pt) to check against")
    parser.add_argument("--save-hypergradient", type=Path, help="write the first hypergradient (.pt) here")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (torch.set_num_threads)")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    """Run one measurement and write its JSON record; the exit status is 0 whatever the record's status."""
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # One thread by default: on a shared two-core machine, two spinning OpenMP
    # threads that lose their core to another process make step times vary by
    # an order of magnitude, and every system gets the same setting.
    torch.set_num_threads(args.threads)
    (case,) = select_cases([args.case], quick=args.quick)
    reference = None
    if args.reference_hypergradient is not None:
        reference = torch.load(args.reference_hypergradient, weights_only=True)
    try:
        record = measure(args.system, case, args.repeat, reference, args.save_hypergradient)
    except Exception as error:
        logger.error("system %s failed on case %s: %s", args.system, case.name, error)
        record = _status("error", f"{type(error).__name__}: {error}")
        record["traceback"] = traceback.format_exc()
    args.result.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
