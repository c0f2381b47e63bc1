"""The decorator front end: ``@chronos.level`` functions compiled into the same plan as a spec.

A decorated function is the level's objective. Its first parameter receives
the level itself; the names of the remaining parameters name the levels and
data sets it reads, in order::

    @chronos.level(params={"log_lambda": chronos.zeros()}, optimizer=chronos.adam(lr=0.05), steps=50)
    def regularizer(own, weights, val): ...

The plan refers to the function as ``module:qualname``, so decorated
functions must live at the top level of an importable module.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from chronos.compiler.plan import Plan
from chronos.errors import SpecError, did_you_mean
from chronos.optim import DifferentiableOptimizer, OuterRef
from chronos.result import RunResult
from chronos.spec import (
    BackendSpec,
    Call,
    DataSpec,
    HypergradientSpec,
    LevelSpec,
    LossSpec,
    Name,
    Number,
    OptimizerSpec,
    ParamSpec,
    ProblemSpec,
    SourceSpan,
)

__all__ = [
    "LevelDefinition",
    "compile",
    "full",
    "implicit",
    "level",
    "load_plan",
    "neumann",
    "ones",
    "randn",
    "run",
    "unrolled",
    "zeros",
]

Dimension = Union[int, str]


def _dimension(value: Dimension) -> Union[Number, Name]:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SpecError(f"a shape dimension must be an int or 'DATA.size', got {value!r}")
    if isinstance(value, int):
        return Number(value=value)
    name, _, attr = value.partition(".")
    return Name(name=name, attr=attr or None)


def _dtype(dtype: Optional[str]) -> dict[str, Name]:
    return {} if dtype is None else {"dtype": Name(name=dtype)}


def zeros(*shape: Dimension, dtype: Optional[str] = None) -> Call:
    """Initialize a variable with zeros; a dimension is an int or ``"data_name.size"``.

    ``dtype`` is a torch dtype name such as ``"float64"``; the default is float32.
    """
    return Call(func="zeros", args=[_dimension(size) for size in shape], kwargs=_dtype(dtype))


def ones(*shape: Dimension, dtype: Optional[str] = None) -> Call:
    """Initialize a variable with ones."""
    return Call(func="ones", args=[_dimension(size) for size in shape], kwargs=_dtype(dtype))


def full(value: float, *shape: Dimension, dtype: Optional[str] = None) -> Call:
    """Initialize a variable with ``value`` everywhere."""
    args = [Number(value=value), *[_dimension(size) for size in shape]]
    return Call(func="full", args=args, kwargs=_dtype(dtype))


def randn(*shape: Dimension, seed: int = 0, dtype: Optional[str] = None) -> Call:
    """Initialize a variable from a standard normal with a fixed ``seed``."""
    kwargs = {"seed": Number(value=seed), **_dtype(dtype)}
    return Call(func="randn", args=[_dimension(size) for size in shape], kwargs=kwargs)


def unrolled(last: Optional[int] = None) -> HypergradientSpec:
    """Reverse mode through the inner trajectory, truncated to the ``last`` steps if given."""
    return HypergradientSpec(method="unrolled", options={} if last is None else {"last": last})


def implicit(solver: str = "cg", iters: int = 20, **options: Union[int, float]) -> HypergradientSpec:
    """Implicit differentiation, solving the Hessian system with ``cg`` or ``neumann``."""
    return HypergradientSpec(method="implicit", options={"solver": solver, "iters": iters, **options})


def neumann(iters: int = 20, alpha: Optional[float] = None) -> HypergradientSpec:
    """Implicit differentiation with a Neumann series of step ``alpha`` (below 2 / lambda_max)."""
    options: dict[str, Union[int, float, str]] = {"solver": "neumann", "iters": iters}
    if alpha is not None:
        options["alpha"] = alpha
    return HypergradientSpec(method="implicit", options=options)


class LevelDefinition:
    """A level built by ``@chronos.level``; calling it calls the objective."""

    def __init__(self, function: Callable[..., Any], spec: LevelSpec, under: Optional[str]) -> None:
        functools.update_wrapper(self, function)
        self.function = function
        self.spec = spec
        self.under = under

    @property
    def name(self) -> str:
        return self.spec.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<chronos level {self.spec.name!r} objective {self.spec.loss.ref}>"


def _ref(obj: Any, role: str) -> str:
    if isinstance(obj, str):
        return obj
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if module is None or qualname is None or "<locals>" in qualname or "<lambda>" in qualname:
        raise SpecError(
            f"{role} {_short(obj)} cannot be named as 'module:function'",
            hint="define it at the top level of an importable module; plans store references, not code",
        )
    if module == "__main__":
        raise SpecError(
            f"{role} {qualname} is defined in the script being run (module '__main__'), which a "
            "saved plan cannot import later",
            hint="move it into an importable module and import it from the script",
        )
    return f"{module}:{qualname}"


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 80 else f"of type {type(obj).__name__}"


def _span(function: Callable[..., Any]) -> Optional[SourceSpan]:
    try:
        file = inspect.getsourcefile(function) or "<unknown>"
    except TypeError:
        return None
    return SourceSpan(file=file, line=function.__code__.co_firstlineno, column=1)


def _optimizer_spec(optimizer: DifferentiableOptimizer) -> OptimizerSpec:
    if not isinstance(optimizer, DifferentiableOptimizer):
        raise SpecError(
            f"optimizer must come from chronos.sgd(...) or chronos.adam(...), got {optimizer!r}"
        )
    kwargs: dict[str, Union[Number, Name]] = {}
    for key, value in optimizer.hyperparameters.items():
        if isinstance(value, OuterRef):
            level_name, _, attr = value.key.partition(".")
            if not attr:
                raise SpecError(
                    f"optimizer hyperparameter {key} = outer({value.key!r}) must name 'level.variable'"
                )
            kwargs[key] = Name(name=level_name, attr=attr)
        else:
            kwargs[key] = Number(value=value)
    return OptimizerSpec(name=optimizer.name, kwargs=kwargs)


def level(
    *,
    optimizer: DifferentiableOptimizer,
    steps: int,
    params: Optional[Mapping[str, Call]] = None,
    module: Optional[Union[str, Callable[[], Any]]] = None,
    under: Optional[Union[str, LevelDefinition]] = None,
    hypergradient: Union[str, HypergradientSpec] = "auto",
    staleness: Optional[int] = None,
    warm_start: bool = False,
    name: Optional[str] = None,
) -> Callable[[Callable[..., Any]], LevelDefinition]:
    """Declare a level whose objective is the decorated function.

    Args:
        optimizer: ``chronos.sgd(...)`` or ``chronos.adam(...)``; a
            hyperparameter may be ``chronos.outer("upper.variable")``.
        steps: steps per step of ``under``, or total steps for a top level.
        params: variable name -> initializer (``chronos.zeros(...)`` etc.).
        module: a zero-argument factory returning an ``nn.Module``.
        under: the upper level (its name or its definition).
        hypergradient: ``"auto"``, ``"unrolled"``, ``"implicit"`` or a
            ``chronos.unrolled(...)`` / ``chronos.implicit(...)`` spec.
        name: the level name; defaults to the function name.
    """

    _check_level_arguments(steps, params, staleness, warm_start)
    if params is not None and not isinstance(params, Mapping):
        raise SpecError(
            f"params must be a dict of name -> initializer, got {_short(params)}",
            hint='write params={"w": chronos.zeros(5)}',
        )

    def decorate(function: Callable[..., Any]) -> LevelDefinition:
        loss_ref = _ref(function, "objective")
        _check_level_name(name or function.__name__)
        parameters = list(inspect.signature(function).parameters)
        if not parameters:
            raise SpecError(
                f"objective {function.__qualname__} takes no arguments; its first argument receives the level itself"
            )
        span = _span(function)
        upper = under.name if isinstance(under, LevelDefinition) else under
        method = hypergradient if isinstance(hypergradient, HypergradientSpec) else _method(hypergradient)
        spec = LevelSpec(
            name=name or function.__name__,
            params=[ParamSpec(name=key, init=init, span=span) for key, init in (params or {}).items()],
            module=None if module is None else _ref(module, "module factory"),
            module_span=span if module is not None else None,
            loss=LossSpec(ref=loss_ref, args=[Name(name=p, span=span) for p in parameters[1:]], span=span),
            optimizer=_optimizer_spec(optimizer).model_copy(update={"span": span}),
            steps=steps,
            steps_span=span,
            per=upper,
            per_span=span if upper is not None else None,
            hypergradient=method if upper is not None else None,
            staleness=staleness,
            staleness_span=span if staleness is not None else None,
            warm_start=warm_start,
            span=span,
        )
        return LevelDefinition(function, spec, upper)

    return decorate


# Words the spec language reserves; a level named so could not be written as a spec.
RESERVED_WORDS = ("problem", "data", "report", "level", "backend", "param", "per", "true", "false")


def _check_level_name(name: str) -> None:
    if not isinstance(name, str) or not name.isidentifier() or name in RESERVED_WORDS:
        raise SpecError(
            f"level name {name!r} is not a valid name: use letters, digits and underscores, not "
            f"starting with a digit, and none of {', '.join(RESERVED_WORDS)}",
        )


def _check_level_arguments(steps: Any, params: Any, staleness: Any, warm_start: Any) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise SpecError(f"steps must be a positive int, got {steps!r}", hint="write steps=100")
    if staleness is not None and (isinstance(staleness, bool) or not isinstance(staleness, int)):
        raise SpecError(f"staleness must be an int, got {staleness!r}")
    if not isinstance(warm_start, bool):
        raise SpecError(f"warm_start must be True or False, got {warm_start!r}")
    for name, init in (params or {}).items():
        if not isinstance(init, Call):
            raise SpecError(
                f"param '{name}' must be an initializer such as chronos.zeros(5), got {_short(init)}",
                hint="initial values come from chronos.zeros, ones, full or randn, so the plan can record them",
            )


def _method(text: str) -> HypergradientSpec:
    if text == "implicit":
        return implicit()
    return HypergradientSpec(method=text)


def compile(  # noqa: A001 - the public name of the front end, as in DESIGN
    levels: Sequence[LevelDefinition],
    *,
    data: Optional[Mapping[str, Union[str, Callable[[], Any]]]] = None,
    name: str = "problem",
    backend: str = "local",
    report: Optional[Union[str, Callable[..., Any]]] = None,
    memory_budget: Optional[int] = None,
) -> Plan:
    """Compile decorated levels (and named data functions) into a Plan."""
    from chronos.compiler.compile import compile_spec

    for definition in levels:
        if not isinstance(definition, LevelDefinition):
            raise SpecError(f"chronos.compile takes @chronos.level functions, got {definition!r}")
    spec = ProblemSpec(
        name=name,
        data=[DataSpec(name=key, ref=_ref(value, "data function")) for key, value in (data or {}).items()],
        levels=[definition.spec for definition in levels],
        backend=BackendSpec(name=backend),
        report=None if report is None else _ref(report, "report function"),
    )
    return compile_spec(spec, memory_budget=memory_budget)


def load_plan(source: Union[Plan, str, Path]) -> Plan:
    """Return a Plan from a Plan, a ``.json`` plan file or a ``.chronos`` spec file."""
    if isinstance(source, Plan):
        return source
    path = Path(source)
    if path.suffix == ".json":
        return Plan.load(path)
    from chronos.compiler.compile import compile_file

    return compile_file(path)


def run(source: Union[Plan, str, Path], *, progress: bool = True, **options: Any) -> RunResult:
    """Execute a plan (or a plan file, or a spec file) on the backend it names.

    ``options`` go to the backend: ``checkpoint`` (a file), ``checkpoint_every``
    (macro steps) and ``resume`` for the local backend.
    """
    from chronos.backends import get_backend

    unknown = sorted(set(options) - RUN_OPTIONS)
    if unknown:
        raise SpecError(
            f"unknown run option(s) {unknown}{did_you_mean(unknown[0], RUN_OPTIONS)}",
            hint=f"run options are {', '.join(sorted(RUN_OPTIONS))}",
        )
    from chronos.compiler.resolve import search_path

    plan = load_plan(source)
    with search_path(plan.import_directories()):
        return get_backend(plan.backend.name)(plan, progress=progress, **options)


RUN_OPTIONS = {"checkpoint", "checkpoint_every", "resume", "callback"}

