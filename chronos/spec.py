"""The problem IR: what a user wrote, before the compiler has decided anything.

Both front ends (the ``.chronos`` DSL and the ``@chronos.level`` decorators)
produce a :class:`ProblemSpec`. It records names and references only; nothing
is imported or evaluated here. Every node keeps the :class:`SourceSpan` it came
from so that later stages can point at the user's line.

Expressions are the whole value language of a spec: numbers, strings, booleans,
names (``noisy_train``, ``noisy_train.size``, ``schedule.lr``) and calls
(``zeros(64, 10)``, ``adam(lr = 0.1)``, ``"pkg.mod:fn"(classifier, clean_val)``).
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from chronos.errors import Location, SpecError, did_you_mean

__all__ = [
    "BackendSpec",
    "Call",
    "DataSpec",
    "Expr",
    "HypergradientSpec",
    "LevelSpec",
    "LossSpec",
    "Name",
    "Number",
    "OptimizerSpec",
    "ParamSpec",
    "ProblemSpec",
    "SourceSpan",
    "String",
    "Bool",
]

OPTIMIZERS = ("sgd", "adam")
INITIALIZERS = ("zeros", "ones", "full", "randn")
HYPERGRADIENT_METHODS = ("auto", "unrolled", "implicit", "finite_difference")
IMPLICIT_SOLVERS = ("cg", "neumann")
BACKENDS = ("local", "torch", "horovod")


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpan(_Node):
    """Where a node was written: file, 1-based line and column."""

    file: str = "<string>"
    line: int = 0
    column: int = 0

    def location(self) -> Location:
        return Location(self.file, self.line, self.column)


class Number(_Node):
    kind: Literal["number"] = "number"
    value: Union[int, float]
    span: Optional[SourceSpan] = None


class String(_Node):
    kind: Literal["string"] = "string"
    value: str
    span: Optional[SourceSpan] = None


class Bool(_Node):
    kind: Literal["bool"] = "bool"
    value: bool
    span: Optional[SourceSpan] = None


class Name(_Node):
    """A reference to a level, a data set or a builtin, with an optional attribute."""

    kind: Literal["name"] = "name"
    name: str
    attr: Optional[str] = None
    span: Optional[SourceSpan] = None

    def dotted(self) -> str:
        return self.name if self.attr is None else f"{self.name}.{self.attr}"


class Call(_Node):
    """``func(args..., key = value...)``; ``func`` is a builtin name or a ``module:function`` ref."""

    kind: Literal["call"] = "call"
    func: str
    args: list["Expr"] = Field(default_factory=list)
    kwargs: dict[str, "Expr"] = Field(default_factory=dict)
    span: Optional[SourceSpan] = None


Expr = Annotated[Union[Number, String, Bool, Name, Call], Field(discriminator="kind")]
Call.model_rebuild()


class DataSpec(_Node):
    """``data NAME = "module:function"``: a zero-argument function returning the data."""

    name: str
    ref: str
    span: Optional[SourceSpan] = None


class ParamSpec(_Node):
    """``param NAME = init(shape...)`` with init one of zeros, ones, full, randn, or ``param NAME = upper.variable``.

    The second form starts the level's every solve from an upper level's
    variable (meta-learning an initialization, as in MAML).
    """

    name: str
    init: Union[Call, Name]
    span: Optional[SourceSpan] = None


class LossSpec(_Node):
    """The objective ``ref(own, *args)``: ``own`` is the level itself, passed first.

    ``args`` are names of levels and data sets, in the order the function takes them.
    """

    ref: str
    args: list[Name] = Field(default_factory=list)
    span: Optional[SourceSpan] = None


class OptimizerSpec(_Node):
    """``sgd(lr = ..., momentum = ...)`` or ``adam(lr = ..., b1 = ..., b2 = ..., eps = ...)``.

    A keyword value may be a number or a ``level.variable`` name: the lower
    level's optimizer then reads an upper level's variable.
    """

    name: str
    kwargs: dict[str, Union[Number, Name]] = Field(default_factory=dict)
    span: Optional[SourceSpan] = None


class HypergradientSpec(_Node):
    """How the hypergradient reaches the upper level through this level.

    ``method`` is one of auto, unrolled, implicit, finite_difference. ``options``
    hold ``last`` (unrolled truncation), ``solver`` (cg or neumann), ``iters``,
    ``tol`` and ``alpha`` (the Neumann step).
    """

    method: str = "auto"
    options: dict[str, Union[int, float, str]] = Field(default_factory=dict)
    span: Optional[SourceSpan] = None


class LevelSpec(_Node):
    """One level: variables (``param`` entries and/or a ``module``), objective, optimizer, timescale."""

    name: str
    params: list[ParamSpec] = Field(default_factory=list)
    module: Optional[str] = None
    module_span: Optional[SourceSpan] = None
    loss: Optional[LossSpec] = None
    optimizer: Optional[OptimizerSpec] = None
    steps: Optional[int] = None
    steps_span: Optional[SourceSpan] = None
    per: Optional[str] = None
    per_span: Optional[SourceSpan] = None
    hypergradient: Optional[HypergradientSpec] = None
    staleness: Optional[int] = None
    staleness_span: Optional[SourceSpan] = None
    warm_start: bool = False
    span: Optional[SourceSpan] = None


class BackendSpec(_Node):
    name: str = "local"
    options: dict[str, Union[int, float, str, bool]] = Field(default_factory=dict)
    span: Optional[SourceSpan] = None


class ProblemSpec(_Node):
    """A whole problem: its data sets, levels and backend, as written."""

    name: str
    data: list[DataSpec] = Field(default_factory=list)
    levels: list[LevelSpec] = Field(default_factory=list)
    backend: BackendSpec = Field(default_factory=BackendSpec)
    report: Optional[str] = None
    report_span: Optional[SourceSpan] = None
    source: Optional[str] = None  # path of the spec file, if it came from one

    def level(self, name: str) -> LevelSpec:
        """Return the level called ``name``; raise SpecError naming the close matches otherwise."""
        for level in self.levels:
            if level.name == name:
                return level
        raise SpecError(f"unknown level '{name}'{did_you_mean(name, [lv.name for lv in self.levels])}")

    def validate_spec(self) -> None:
        """Check the invariants every later stage relies on; raise SpecError at the first violation.

        Checked: unique names across levels and data, every level has a loss, an
        optimizer and positive steps, ``per`` and loss arguments name known levels
        or data, optimizer and initializer names are known.
        """
        from chronos.spec_checks import check_problem_spec

        check_problem_spec(self)
