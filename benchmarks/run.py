"""Run the side-by-side benchmarks and write results.json, results.md and PNG plots.

Usage::

    python -m benchmarks.run --output DIR [--cases NAME_OR_GROUP ...] [--systems ...] [--repeat N] [--quick]

Every (case, system, round) runs in a fresh ``python -m benchmarks.worker``
process, so peak memory is measured per process. Within a case the systems
take turns: each round runs every system once, and the order rotates from
round to round, so slow drift of the machine (other load, thermal state)
reaches every system alike. The reference runs first in round 0, because
every other system checks its first hypergradient against the reference's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from tqdm import tqdm

from benchmarks.cases import GROUP_COMPILE, Case, hyperclean_available, select_cases
from benchmarks.systems.base import SYSTEMS

__all__ = ["machine_info", "main", "run_benchmarks"]

logger = logging.getLogger(__name__)

REFERENCE = "reference"
WORKER_TIMEOUT_S = 600
# Workers run `python -m benchmarks...`, which needs the repository root as the working directory.
REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def machine_info() -> dict[str, Any]:
    """Return the CPU model, core count, memory, load average, Python and torch versions."""
    import torch

    cpu = platform.processor()
    memory_gib: Optional[float] = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _run_worker(system: str, case: Case, args: argparse.Namespace, scratch: Path, round_index: int) -> dict[str, Any]:
    result = scratch / f"{case.name}.{system}.{round_index}.json"
    reference = scratch / f"{case.name}.reference.pt"
    command = [sys.executable, "-m", "benchmarks.worker", "--system", system, "--case", case.name,
               "--repeat", str(args.repeat), "--result", str(result), "--threads", str(args.threads)]
    if args.quick:
        command.append("--quick")
    if system == REFERENCE:
        command += ["--save-hypergradient", str(reference)]
    elif reference.exists():
        command += ["--reference-hypergradient", str(reference)]
    logger.debug("running %s", " ".join(command))
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False, cwd=REPOSITORY_ROOT
        )
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"worker timed out after {WORKER_TIMEOUT_S} s"}
    if completed.returncode != 0 or not result.exists():
        logger.error("worker for %s on %s exited with %s: %s", system, case.name, completed.returncode, completed.stderr[-2000:])
        return {"status": "error", "reason": f"worker exited with status {completed.returncode}"}
    record = json.loads(result.read_text())
    if record.get("status") == "error":
        logger.error("%s on %s: %s\n%s", system, case.name, record["reason"], record.get("traceback", ""))
    return record


def _merge(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine the rounds of one (case, system): all timed steps pooled, the median peak memory."""
    first = records[0]
    merged = {key: value for key, value in first.items() if key not in ("seconds", "peak_bytes", "traceback")}
    if first.get("status") != "ok" or any(r.get("status") != "ok" for r in records):
        bad = next(r for r in records if r.get("status") != "ok")
        return {key: value for key, value in bad.items() if key != "traceback"}
    seconds = [s for r in records for s in r["seconds"]]
    merged["seconds_median"] = statistics.median(seconds)
    merged["seconds_min"] = min(seconds)
    merged["timed_steps"] = len(seconds)
    merged["peak_bytes"] = int(statistics.median(r["peak_bytes"] for r in records))
    return merged


def _order(systems: list[str], round_index: int) -> list[str]:
    if round_index == 0:
        return systems
    shift = round_index % len(systems)
    return systems[shift:] + systems[:shift]


def _run_case(case: Case, systems: list[str], args: argparse.Namespace, scratch: Path, bar: tqdm) -> dict[str, Any]:
    records: dict[str, list[dict[str, Any]]] = {system: [] for system in systems}
    for round_index in range(args.rounds):
        for system in _order(systems, round_index):
            bar.set_postfix_str(f"{case.name} {system}")
            records[system].append(_run_worker(system, case, args, scratch, round_index))
            bar.update(1)
    return {system: _merge(found) for system, found in records.items()}


def _run_compile_time(output: Path, quick: bool) -> dict[str, Any]:
    """Run benchmarks.compile_time (written elsewhere in the project) if it exists."""
    if not (Path(__file__).parent / "compile_time.py").exists():
        return {"status": "skipped", "reason": "benchmarks/compile_time.py does not exist"}
    target = (output / "compile_time").resolve()
    command = [sys.executable, "-m", "benchmarks.compile_time", "--output", str(target)]
    # compile_time's own defaults reach 10,000 levels and take minutes, so this
    # case runs smaller sizes. Its own command line runs the full range.
    if quick:
        command += ["--sizes", "10,100", "--chain-sizes", "10", "--repeat", "1"]
    else:
        command += ["--sizes", "10,100,1000", "--repeat", "3"]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False, cwd=REPOSITORY_ROOT
    )
    if completed.returncode != 0:
        return {"status": "error", "reason": completed.stderr.strip().splitlines()[-1:] or ["no output"]}
    report = target / "compile_time.md"
    return {"status": "ok", "output": str(target), "report": report.read_text() if report.exists() else ""}


def run_benchmarks(args: argparse.Namespace) -> dict[str, Any]:
    """Run every selected case for every selected system and return the results document."""
    cases = select_cases(args.cases, quick=args.quick)
    skipped: dict[str, str] = {}
    if not hyperclean_available():
        skipped.update({c.name: "examples/hyperclean.py does not exist yet" for c in cases if c.problem == "hyperclean"})
        cases = [c for c in cases if c.problem != "hyperclean"]
    timed = [c for c in cases if c.group != GROUP_COMPILE]
    systems = [REFERENCE] + [s for s in args.systems if s != REFERENCE]
    results: dict[str, Any] = {"machine": machine_info(), "systems": systems, "repeat": args.repeat, "threads": args.threads,
                               "rounds": args.rounds, "quick": args.quick, "cases": {}, "skipped": skipped}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="chronos-bench-") as directory:
        bar = tqdm(total=len(timed) * len(systems) * args.rounds, desc="benchmarks", unit="run")
        for case in timed:
            results["cases"][case.name] = {"case": case.__dict__, "systems": _run_case(case, systems, args, Path(directory), bar)}
        bar.close()
    if any(c.group == GROUP_COMPILE for c in cases):
        results["compile_time"] = _run_compile_time(args.output, args.quick)
    results["wall_seconds"] = time.perf_counter() - started
    results["machine"]["load_average_end"] = os.getloadavg()
    return results


def _parse(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="directory for results.json, results.md and plots")
    parser.add_argument("--cases", nargs="+", help="case names or groups (hyperclean, memory, scale, compile); default all")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS), help="systems to run")
    parser.add_argument("--repeat", type=int, default=None, help="timed outer steps per worker (default 5, 2 with --quick)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds over the systems per case (default 2, 1 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each worker process")
    parser.add_argument("--quick", action="store_true", help="smaller cases, fewer steps and rounds: a smoke run")
    parser.add_argument("--verbose", action="store_true", help="log at debug level")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 2 if args.quick else 5
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    if args.repeat < 1 or args.rounds < 1:
        parser.error(f"--repeat and --rounds must be at least 1, got {args.repeat} and {args.rounds}")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmarks from the command line and write the report files."""
    from benchmarks.report import write_report

    args = _parse(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        results = run_benchmarks(args)
    except ValueError as error:
        logger.error("%s", error)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=1, default=str))
    write_report(results, args.output)
    logger.info("wrote %s", args.output / "results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
