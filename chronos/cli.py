"""The ``chronos`` command: compile, run and explain specs and plans."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from chronos.errors import BackendError, ChronosError

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
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose else logging.INFO)
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
        plan = compile_file(args.spec, memory_budget=args.memory_budget)
        path = plan.save(args.output)
        print(f"wrote plan for problem '{plan.problem}' to {path}")
        return 0
    if args.command == "explain":
        plan = load_plan(args.source)
        print(explain(plan), end="")
        if args.graph:
            print(f"wrote level graph to {render_graph(plan, args.graph)}")
        return 0
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from chronos.api import load_plan, run
    from chronos.compiler.resolve import import_ref, search_path

    if args.threads is not None:
        if args.threads < 1:
            raise BackendError(f"--threads must be a positive integer, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    plan = load_plan(args.source)
    directories = [os.path.dirname(os.path.abspath(plan.source))] if plan.source else []
    with search_path(directories):
        if args.resume and args.checkpoint is None:
            raise BackendError("--resume needs --checkpoint FILE", hint="name the checkpoint file to resume from")
        result = run(
            plan,
            progress=not args.no_progress,
            checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
        )
        output = Path(args.output) if args.output else None
        if output is not None:
            print(f"wrote run summary to {result.save_summary(output / 'result.json')}")
        if plan.report is not None:
            report = import_ref(plan.report, what="report")
            report(result, output)
    for level, values in result.history.items():
        if values:
            print(f"{level}: final objective {values[-1]:.6g} after {result.versions.get(level, 0)} update(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
