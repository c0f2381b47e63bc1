"""Semantic checks of a ProblemSpec: the invariants that every compiler pass relies on.

:func:`check_problem_spec` raises SpecError at the first violation, located at
the offending node, with a "did you mean" from the names in scope where a name
is unknown. Nothing is imported here: a ``module:function`` reference is
checked for its form only, and the compiler's resolve pass imports it.
"""

from __future__ import annotations

import keyword
from typing import Callable, Optional, Union

from chronos.errors import Location, SpecError, did_you_mean
from chronos.spec import (
    BACKENDS,
    HYPERGRADIENT_METHODS,
    IMPLICIT_SOLVERS,
    INITIALIZERS,
    OPTIMIZERS,
    BackendSpec,
    HypergradientSpec,
    LevelSpec,
    Name,
    Number,
    OptimizerSpec,
    ParamSpec,
    ProblemSpec,
    SourceSpan,
)

__all__ = ["HYPERGRADIENT_OPTIONS", "INITIALIZER_KEYWORDS", "OPTIMIZER_KEYWORDS", "check_problem_spec"]

# The compiler checks the values: dtype one of float32, float64, float16 or
# bfloat16, and seed an integer for randn.
INITIALIZER_KEYWORDS = ("dtype", "seed")

# Steps beyond this are a typo rather than a plan: a billion inner steps per
# upper step would run for days, and counts near 2**63 overflow torch and tqdm.
MAX_STEPS = 10**9

# Backend options and the smallest value each accepts: world_size (processes),
# max_staleness (versions, summed along any path from a top level down),
# memory_budget (bytes that unrolled hypergradients may use), timeout (seconds).
BACKEND_OPTIONS = {"world_size": 1, "max_staleness": 0, "memory_budget": 1, "timeout": 1}
BACKEND_DEVICES = ("cpu", "cuda")

OPTIMIZER_KEYWORDS = {
    "sgd": ("lr", "momentum", "weight_decay"),
    "adam": ("lr", "b1", "b2", "eps", "eps_root", "weight_decay"),
}

# Options per hypergradient method: ``last`` truncates unrolling to the last K
# inner steps, ``alpha`` is the Neumann series step, ``eps`` the finite
# difference step.
HYPERGRADIENT_OPTIONS = {
    "auto": (),
    "unrolled": ("last",),
    "implicit": ("solver", "iters", "tol", "alpha", "damping"),
    "finite_difference": ("eps",),
}

# What a user may write after 'hypergradient =': neumann(...) and cg(...) are
# shorthands that the parser turns into implicit with that solver.
_METHOD_SPELLINGS = HYPERGRADIENT_METHODS + IMPLICIT_SOLVERS

_Rule = tuple[Callable[[float], bool], str]
_OPTIMIZER_VALUE_RULES: dict[str, _Rule] = {
    "lr": (lambda value: value > 0, "positive"),
    "momentum": (lambda value: 0 <= value < 1, "in [0, 1)"),
    "b1": (lambda value: 0 <= value < 1, "in [0, 1)"),
    "b2": (lambda value: 0 <= value < 1, "in [0, 1)"),
    "eps": (lambda value: value > 0, "positive"),
    "eps_root": (lambda value: value >= 0, "zero or positive"),
    "weight_decay": (lambda value: value >= 0, "zero or positive"),
}


def check_problem_spec(spec: ProblemSpec) -> None:
    """Raise SpecError at the first node of ``spec`` that breaks an invariant.

    Names must be unique across levels and data, ``module:function`` references
    well formed and the backend known. Every level needs variables (param or
    module), a loss whose arguments are known levels or data, a known optimizer
    with known keywords, and steps that are a positive integer. ``per`` must
    name another level, the hypergradient method and its options must be known,
    and staleness must be zero or more.
    """
    checker = _Checker(spec)
    if not spec.levels:
        where = SourceSpan(file=spec.source, line=1, column=1) if spec.source else None
        raise checker.error(
            f"problem '{spec.name}' declares no level",
            where,
            hint="add a block: level NAME { param ... loss = ... optimizer = ... steps = ... }",
        )
    checker.check_names()
    if spec.report is not None:
        checker.check_ref(spec.report, "report", spec.report_span)
    for data in spec.data:
        checker.check_ref(data.ref, f"data '{data.name}'", data.span)
    checker.check_backend(spec.backend)
    for level in spec.levels:
        checker.check_level(level)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_dotted_identifier(text: str) -> bool:
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in text.split("."))


def _describe_ref_problem(ref: str) -> Optional[str]:
    """Return what is wrong with a ``module:function`` reference, or None."""
    if ref.count(":") != 1:
        return f"it contains {ref.count(':')} ':' instead of one between module and function"
    module, function = ref.split(":")
    if not _is_dotted_identifier(module):
        return f"'{module}' is not a dotted Python module name"
    if not _is_dotted_identifier(function):
        return f"'{function}' is not a Python function name"
    return None


class _Checker:
    def __init__(self, spec: ProblemSpec) -> None:
        self.spec = spec
        self.levels = {level.name: level for level in spec.levels}
        self.data = [data.name for data in spec.data]
        # Loss arguments may name any level or data set. The list keeps the
        # order for "did you mean"; the set makes each lookup O(1).
        self.scope = list(self.levels) + self.data
        self.scope_names = set(self.scope)

    # Errors.

    def location(self, span: Optional[SourceSpan]) -> Optional[Location]:
        # Without the source line, the error's excerpt reads it from span.file.
        return None if span is None else span.location()

    def error(
        self,
        message: str,
        span: Optional[SourceSpan],
        level: Optional[LevelSpec] = None,
        hint: Optional[str] = None,
    ) -> SpecError:
        name = None if level is None else level.name
        return SpecError(message, location=self.location(span), level=name, hint=hint)

    # The whole spec.

    def check_names(self) -> None:
        named = [("data set", data.name, data.span) for data in self.spec.data]
        named += [("level", level.name, level.span) for level in self.spec.levels]
        named.sort(key=lambda item: (item[2].line, item[2].column) if item[2] is not None else (0, 0))
        seen: dict[str, tuple[str, Optional[SourceSpan]]] = {}
        for kind, name, span in named:
            if name in seen:
                first_kind, first_span = seen[name]
                where = f" at line {first_span.line}" if first_span is not None else ""
                if first_kind == kind:
                    message = f"duplicate {kind} '{name}': the name is already used{where}"
                else:
                    message = f"{kind} '{name}' has the same name as the {first_kind}{where}"
                raise self.error(message, span, hint="give every level and data set its own name")
            seen[name] = (kind, span)

    def check_ref(
        self, ref: str, context: str, span: Optional[SourceSpan], level: Optional[LevelSpec] = None
    ) -> None:
        problem = _describe_ref_problem(ref)
        if problem is not None:
            raise self.error(
                f'invalid reference "{ref}" in {context}: {problem}',
                span,
                level,
                hint='write "package.module:function"',
            )

    def check_backend(self, backend: BackendSpec) -> None:
        if backend.name not in BACKENDS:
            raise self.error(
                f"unknown backend '{backend.name}'{did_you_mean(backend.name, BACKENDS)}",
                backend.span,
                hint=f"use one of {', '.join(BACKENDS)}",
            )
        for option, value in backend.options.items():
            if option == "device":
                if value not in BACKEND_DEVICES:
                    raise self.error(
                        f"backend option device must be one of {', '.join(BACKEND_DEVICES)}, found {value!r}",
                        backend.span,
                    )
                continue
            if option not in BACKEND_OPTIONS:
                raise self.error(
                    f"unknown backend option '{option}'{did_you_mean(option, [*BACKEND_OPTIONS, 'device'])}",
                    backend.span,
                    hint=f"backend options are {', '.join(sorted([*BACKEND_OPTIONS, 'device']))}",
                )
            low = BACKEND_OPTIONS[option]
            if not (_is_int(value) and value >= low):
                kind = "a positive integer" if low > 0 else "a non-negative integer"
                raise self.error(
                    f"backend option {option} must be {kind}, found {value!r}",
                    backend.span,
                )

    # One level.

    def check_level(self, level: LevelSpec) -> None:
        if not level.params and level.module is None:
            raise self.error(
                "the level has no variables",
                level.span,
                level,
                hint='add an entry "param NAME = zeros(...)" or "module = \\"package.module:function\\""',
            )
        if level.module is not None:
            self.check_ref(level.module, "module", level.module_span, level)
        self.check_params(level)
        self.check_loss(level)
        self.check_optimizer(level)
        self.check_steps(level)
        if level.hypergradient is not None:
            self.check_hypergradient(level.hypergradient, level)
        if level.staleness is not None and not (_is_int(level.staleness) and level.staleness >= 0):
            raise self.error(
                f"staleness must be an integer of zero or more, found {level.staleness}",
                level.staleness_span,
                level,
                hint="staleness = 0 runs synchronously",
            )

    def check_params(self, level: LevelSpec) -> None:
        first_lines: dict[str, Optional[SourceSpan]] = {}
        for param in level.params:
            if param.name in first_lines:
                first = first_lines[param.name]
                where = f" at line {first.line}" if first is not None else ""
                raise self.error(f"duplicate param '{param.name}': it is already defined{where}", param.span, level)
            first_lines[param.name] = param.span
            self.check_initializer(param, level)

    def check_initializer(self, param: ParamSpec, level: LevelSpec) -> None:
        init = param.init
        if isinstance(init, Name):
            self.check_variable_reference(init, f"the initial value of param '{param.name}'", level)
            if init.name == level.name:
                raise self.error(f"param '{param.name}' cannot start from its own level", init.span, level)
            if level.warm_start:
                raise self.error(
                    f"param '{param.name}' starts every solve from '{init.dotted()}', which contradicts warm_start = true",
                    init.span,
                    level,
                    hint="drop warm_start, or initialize the param with zeros(...)",
                )
            return
        hint = "write zeros(10), ones(3, 4), randn(noisy_train.size) or full(0.5, 10)"
        if init.func not in INITIALIZERS:
            raise self.error(
                f"unknown initializer '{init.func}' for param '{param.name}'"
                f"{did_you_mean(init.func, INITIALIZERS)}",
                init.span,
                level,
                hint=hint,
            )
        for key, value in init.kwargs.items():
            if key not in INITIALIZER_KEYWORDS:
                raise self.error(
                    f"unknown keyword '{key}' for initializer '{init.func}'"
                    f"{did_you_mean(key, INITIALIZER_KEYWORDS)}",
                    value.span or init.span,
                    level,
                    hint="an initializer takes dtype (float32, float64, float16, bfloat16) and seed",
                )
            if key == "seed" and not (isinstance(value, Number) and _is_int(value.value) and 0 <= value.value < 2**63):
                raise self.error(
                    f"seed of param '{param.name}' must be an integer from 0 to 2**63 - 1",
                    value.span or init.span,
                    level,
                )
        shape = list(init.args)
        if init.func == "full":
            if not shape or not isinstance(shape[0], Number):
                raise self.error("full takes the fill value first, then the shape", init.span, level, hint=hint)
            shape = shape[1:]
        for item in shape:
            self.check_shape_item(item, param, level)

    def check_shape_item(self, item: object, param: ParamSpec, level: LevelSpec) -> None:
        if isinstance(item, Number) and _is_int(item.value) and item.value >= 0:
            return
        if isinstance(item, Name) and item.name in self.data and item.attr == "size":
            return
        if isinstance(item, Name) and item.name not in self.data:
            message = (
                f"unknown data '{item.name}' in the shape of param '{param.name}'"
                f"{did_you_mean(item.name, self.data)}"
            )
        elif isinstance(item, Name):
            message = f"the shape of param '{param.name}' can use {item.name}.size, not '{item.dotted()}'"
        else:
            message = f"a shape item of param '{param.name}' must be an integer of zero or more, or DATA.size"
        raise self.error(message, getattr(item, "span", None) or param.span, level)

    def check_loss(self, level: LevelSpec) -> None:
        loss = level.loss
        if loss is None:
            raise self.error(
                "missing 'loss' entry",
                level.span,
                level,
                hint='add loss = "package.module:function"(upper_level, data), called as function(level, *args)',
            )
        self.check_ref(loss.ref, "loss", loss.span, level)
        for argument in loss.args:
            if argument.name == level.name:
                raise self.error(
                    f"loss argument '{argument.name}' names the level itself",
                    argument.span,
                    level,
                    hint="the level is passed first on its own; list only other levels and data",
                )
            if argument.name not in self.scope_names:
                raise self.error(
                    f"unknown level or data '{argument.name}' in the loss arguments"
                    f"{did_you_mean(argument.name, self.scope)}",
                    argument.span,
                    level,
                )

    def check_optimizer(self, level: LevelSpec) -> None:
        optimizer = level.optimizer
        if optimizer is None:
            raise self.error("missing 'optimizer' entry", level.span, level, hint="add optimizer = sgd(lr = 0.1)")
        if optimizer.name not in OPTIMIZERS:
            raise self.error(
                f"unknown optimizer '{optimizer.name}'{did_you_mean(optimizer.name, OPTIMIZERS)}",
                optimizer.span,
                level,
                hint=f"use one of {', '.join(OPTIMIZERS)}",
            )
        for key, value in optimizer.kwargs.items():
            self.check_optimizer_keyword(optimizer, key, value, level)

    def check_optimizer_keyword(
        self, optimizer: OptimizerSpec, key: str, value: Union[Number, Name], level: LevelSpec
    ) -> None:
        valid = OPTIMIZER_KEYWORDS[optimizer.name]
        if key not in valid:
            raise self.error(
                f"unknown keyword '{key}' for optimizer '{optimizer.name}'{did_you_mean(key, valid)}",
                value.span or optimizer.span,
                level,
                hint=f"{optimizer.name} takes {', '.join(valid)}",
            )
        if isinstance(value, Name):
            self.check_variable_reference(value, f"optimizer keyword '{key}'", level)
            return
        rule, description = _OPTIMIZER_VALUE_RULES[key]
        if not rule(value.value):
            raise self.error(f"optimizer keyword '{key}' must be {description}, found {value.value}", value.span, level)

    def check_variable_reference(self, name: Name, context: str, level: LevelSpec) -> None:
        """Check a ``level.variable`` value: a known level and, for param-only levels, a known param."""
        if name.name not in self.levels:
            raise self.error(
                f"unknown level '{name.name}' in {context}{did_you_mean(name.name, self.levels)}",
                name.span,
                level,
            )
        if name.attr is None:
            raise self.error(f"{context} must name a variable, as in {name.name}.lr", name.span, level)
        owner = self.levels[name.name]
        params = [param.name for param in owner.params]
        if owner.module is None and name.attr not in params:
            raise self.error(
                f"level '{owner.name}' has no param '{name.attr}'{did_you_mean(name.attr, params)}",
                name.span,
                level,
            )

    def check_steps(self, level: LevelSpec) -> None:
        if level.steps is None:
            raise self.error("missing 'steps' entry", level.span, level, hint="add steps = 10")
        if not (_is_int(level.steps) and level.steps > 0):
            raise self.error(f"steps must be a positive integer, found {level.steps}", level.steps_span, level)
        if level.steps > MAX_STEPS:
            raise self.error(
                f"steps = {level.steps} is over the limit of {MAX_STEPS:,} steps per upper step",
                level.steps_span,
                level,
                hint="a level this long never finishes one macro step; use fewer steps",
            )
        if level.per is None:
            return
        if level.per == level.name:
            raise self.error(
                "'per' names the level itself",
                level.per_span,
                level,
                hint="name the upper level whose one step these steps make up",
            )
        if level.per not in self.levels:
            raise self.error(
                f"unknown level '{level.per}' after 'per'{did_you_mean(level.per, self.levels)}",
                level.per_span,
                level,
            )

    def check_hypergradient(self, spec: HypergradientSpec, level: LevelSpec) -> None:
        method = spec.method
        if method not in HYPERGRADIENT_METHODS:
            raise self.error(
                f"unknown hypergradient method '{method}'{did_you_mean(method, _METHOD_SPELLINGS)}",
                spec.span,
                level,
                hint="use auto, unrolled, unrolled(last = 10), implicit(cg, iters = 20), "
                "neumann(iters = 20, alpha = 0.1) or finite_difference",
            )
        valid = HYPERGRADIENT_OPTIONS[method]
        for key, value in spec.options.items():
            if key not in valid:
                takes = f"{method} takes {', '.join(valid)}" if valid else f"{method} takes no options"
                raise self.error(
                    f"unknown option '{key}' for hypergradient method '{method}'{did_you_mean(key, valid)}",
                    spec.span,
                    level,
                    hint=takes,
                )
            self.check_hypergradient_option(spec, key, value, level)

    def check_hypergradient_option(
        self, spec: HypergradientSpec, key: str, value: Union[int, float, str], level: LevelSpec
    ) -> None:
        if key == "solver":
            if value not in IMPLICIT_SOLVERS:
                raise self.error(
                    f"unknown implicit solver '{value}'{did_you_mean(str(value), IMPLICIT_SOLVERS)}",
                    spec.span,
                    level,
                    hint=f"use one of {', '.join(IMPLICIT_SOLVERS)}",
                )
            return
        if key in ("last", "iters"):
            valid, description = _is_int(value) and value > 0, "a positive integer"
        elif key == "damping":
            valid, description = _is_number(value) and value >= 0, "a non-negative number"
        else:
            valid, description = _is_number(value) and value > 0, "a positive number"
        if not valid:
            raise self.error(f"hypergradient option '{key}' must be {description}, found {value!r}", spec.span, level)
        if key == "alpha" and spec.options.get("solver") != "neumann":
            raise self.error(
                "hypergradient option 'alpha' applies to the neumann solver only",
                spec.span,
                level,
                hint="write implicit(neumann, iters = 20, alpha = 0.1) or neumann(iters = 20, alpha = 0.1)",
            )
