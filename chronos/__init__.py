"""Chronos: compile and run multilevel (nested, bilevel) optimization problems."""

from chronos.errors import (
    BackendError,
    ChronosError,
    CompileError,
    HypergradientError,
    PlanError,
    SpecError,
    SpecSyntaxError,
)

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "ChronosError",
    "CompileError",
    "HypergradientError",
    "PlanError",
    "SpecError",
    "SpecSyntaxError",
    "__version__",
]
