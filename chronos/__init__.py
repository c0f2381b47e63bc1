"""Chronos: compile and run multilevel (nested, bilevel) optimization problems.

Describe a problem once, as a ``.chronos`` spec or as ``@chronos.level``
functions; :func:`compile` turns it into a :class:`Plan` (levels, edges,
hypergradient methods with reasons, timescales), and :func:`run` executes it.
"""

from chronos.errors import (
    BackendError,
    ChronosError,
    CompileError,
    HypergradientError,
    PlanError,
    SpecError,
    SpecSyntaxError,
)
from chronos.optim import adam, outer, sgd
from chronos.compiler.plan import Plan
from chronos.result import RunResult
from chronos.api import (
    LevelDefinition,
    compile,
    full,
    implicit,
    level,
    load_plan,
    neumann,
    ones,
    randn,
    run,
    unrolled,
    zeros,
)

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "ChronosError",
    "CompileError",
    "HypergradientError",
    "LevelDefinition",
    "Plan",
    "PlanError",
    "RunResult",
    "SpecError",
    "SpecSyntaxError",
    "__version__",
    "adam",
    "compile",
    "full",
    "implicit",
    "level",
    "load_plan",
    "neumann",
    "ones",
    "outer",
    "randn",
    "run",
    "sgd",
    "unrolled",
    "zeros",
]
