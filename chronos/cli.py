"""The ``chronos`` command: compile, run and explain specs and plans."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from chronos.errors import BackendError, ChronosError, CompileError, PlanError

__all__ = ["main"]

logger = logging.getLogger("chronos.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chronos", description="Compile, run and explain multilevel optimization problems.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    commands = parser.add_subparsers(dest="command", required=True)

    compile_cmd = commands.add_parser("compile", help="compile a .chronos spec to a JSON plan")
    compile_cmd.add_argument("spec", help="path to the .chronos spec")
    compile_cmd.add_argument("-o", "--output", required=True, help="path of the plan file to write (.json)")
    compile_cmd.add_argument("--memory-budget", type=int, default=None, help="bytes that unrolled hypergradients may use (default: a quarter of RAM)")

    run_cmd = commands.add_parser("run", help="run a spec or a plan")
    run_cmd.add_argument("source", help="path to a .chronos spec or a .json plan")
    run_cmd.add_argument("--output", default=None, help="directory for result.json and the problem's report")
    run_cmd.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    run_cmd.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice); small models often run faster on 1",
    )
    run_cmd.add_argument("--checkpoint", default=None, help="file to save every level's state to (written atomically)")
    run_cmd.add_argument("--checkpoint-every", type=int, default=1, help="macro steps between checkpoints (default 1)")
    run_cmd.add_argument("--resume", action="store_true", help="continue from --checkpoint if the file exists")

    explain_cmd = commands.add_parser("explain", help="print levels, edges, methods with reasons, and the schedule")
    explain_cmd.add_argument("source", help="path to a .chronos spec or a .json plan")
    explain_cmd.add_argument("--graph", default=None, help="also render the level graph to this .png or .dot file")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the exit status (0 ok, 2 a ChronosError, 130 interrupted)."""
    args = _parser().parse_args(argv)
    level = logging.INFO
    if args.quiet:
        level = logging.WARNING
    elif args.verbose:
        level = logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(args)
    except ChronosError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from chronos.api import load_plan
    from chronos.compiler.compile import compile_file
    from chronos.compiler.explain import explain, render_graph

    if args.command == "compile":
        if args.memory_budget is not None and args.memory_budget < 1:
            raise CompileError(f"--memory-budget must be a positive number of bytes, got {args.memory_budget}")
        _check_writable_file(args.output, "plan file")
        plan = compile_file(args.spec, memory_budget=args.memory_budget)
        path = _write(lambda: plan.save(args.output), args.output, "plan file")
        print(f"wrote plan for problem '{plan.problem}' to {path}")
        return 0
    if args.command == "explain":
        if args.graph and Path(args.graph).suffix not in (".png", ".dot"):
            raise PlanError(f"cannot render the level graph to '{args.graph}': use a .dot or .png file name")
        plan = load_plan(args.source)
        print(explain(plan), end="")
        if args.graph:
            path = _write(lambda: render_graph(plan, args.graph), args.graph, "graph file")
            print(f"wrote level graph to {path}")
        return 0
    return _run(args)


def _check_writable_file(path: str, role: str) -> None:
    """Raise before any work if ``path`` is a directory or its directory cannot be created."""
    target = Path(path)
    if target.is_dir():
        raise ChronosError(f"{role} '{path}' is a directory", hint="give a file name, for example plan.json")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ChronosError(f"cannot create the directory of {role} '{path}': {error.strerror or error}") from error


def _check_output_directory(path: str) -> Path:
    """Create the output directory before the run, so that a bad path fails in a second, not after the run."""
    output = Path(path)
    if output.exists() and not output.is_dir():
        raise ChronosError(f"output '{path}' is a file, not a directory", hint="give a directory for the results")
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / ".chronos-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ChronosError(
            f"output directory '{path}' is not writable: {error.strerror or error}",
            hint="choose a directory you can write to",
        ) from error
    return output


def _write(write, path: str, role: str):
    try:
        return write()
    except OSError as error:
        raise ChronosError(f"cannot write {role} '{path}': {error.strerror or error}") from error


def _run(args: argparse.Namespace) -> int:
    from chronos.api import load_plan, run
    from chronos.compiler.resolve import import_ref, search_path

    if args.threads is not None:
        if args.threads < 1:
            raise BackendError(f"--threads must be a positive integer, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    if args.resume and args.checkpoint is None:
        raise BackendError("--resume needs --checkpoint FILE", hint="name the checkpoint file to resume from")
    output = _check_output_directory(args.output) if args.output else None
    if args.checkpoint is not None:
        _check_writable_file(args.checkpoint, "checkpoint file")
    plan = load_plan(args.source)
    with search_path(plan.import_directories()):
        report = import_ref(plan.report, role="report") if plan.report is not None else None
        result = run(
            plan,
            progress=not args.no_progress,
            checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
        )
        for level, values in result.history.items():
            if values:
                print(f"{level}: final objective {values[-1]:.6g} after {result.versions.get(level, 0)} update(s)")
        if output is not None:
            summary = _write(lambda: result.save_summary(output / "result.json"), str(output / "result.json"), "run summary")
            print(f"wrote run summary to {summary}")
        if report is not None:
            _call_report(report, plan.report, result, output)
    return 0


def _call_report(report, ref: str, result, output) -> None:
    try:
        report(result, output)
    except ChronosError:
        raise
    except Exception as error:
        raise BackendError(
            f"report function \"{ref}\" raised {type(error).__name__}: {error}",
            hint="the run itself finished; its summary is printed above",
        ) from error


if __name__ == "__main__":
    sys.exit(main())
