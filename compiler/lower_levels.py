"""Resolve each level of a spec into a :class:`LevelPlan`: variables with shapes, objective, optimizer.

This is the only pass that runs user code at compile time: it imports the
referenced functions, calls data functions whose size a shape needs, and calls
module factories once to read their parameter shapes.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from torch import nn

from chronos.compiler.plan import DataPlan, HyperValue, InitPlan, LevelPlan, LossPlan, OptimizerPlan, VariablePlan
from chronos.compiler.resolve import check_arity, import_ref
from chronos.errors import ChronosError, CompileError, did_you_mean
from chronos.optim import OuterRef, make_optimizer, outer
from chronos.spec import Call, LevelSpec, Name, Number, ProblemSpec, SourceSpan

__all__ = ["DataCatalog", "data_size", "lower_level", "resolve_data"]

logger = logging.getLogger(__name__)


def _loc(span: Optional[SourceSpan]):
    return span.location() if span is not None else None


class DataCatalog:
    """Data references of a spec, loaded on first use (only when a shape needs a size)."""

    def __init__(self, spec: ProblemSpec) -> None:
        self._specs = {data.name: data for data in spec.data}
        self._loaded: dict[str, Any] = {}

    def names(self) -> list[str]:
        return list(self._specs)

    def __contains__(self, name: str) -> bool:
        return name in self._specs

    def load(self, name: str) -> Any:
        if name not in self._loaded:
            data = self._specs[name]
            function = import_ref(data.ref, location=_loc(data.span), role="data")
            check_arity(function, 0, ref=data.ref, described="no arguments", location=_loc(data.span))
            try:
                self._loaded[name] = function()
            except Exception as error:
                raise CompileError(
                    f"data function \"{data.ref}\" for '{name}' raised {type(error).__name__}: {error}",
                    location=_loc(data.span),
                ) from error
        return self._loaded[name]

    def size(self, name: str, span: Optional[SourceSpan]) -> int:
        """Number of samples: the first dimension of a tensor or of a tuple of tensors, else len()."""
        value = self.load(name)
        size = data_size(value)
        if size is None:
            raise CompileError(
                f"'{name}.size' needs the number of samples, but \"{self._specs[name].ref}\" returned "
                f"a {type(value).__name__} without a length",
                location=_loc(span),
                hint="return a tensor, a tuple of tensors or an object with __len__",
            )
        return size

    def plans(self) -> list[DataPlan]:
        return [
            DataPlan(
                name=name,
                ref=data.ref,
                size=data_size(self._loaded[name]) if name in self._loaded else None,
                source=data.span,
            )
            for name, data in self._specs.items()
        ]


def data_size(value: Any) -> Optional[int]:
    """Number of samples in ``value``, or None if it has no length.

    A tuple or list of tensors, such as ``(inputs, targets)``, counts the first
    dimension of its first tensor, not its number of items.
    """
    if isinstance(value, torch.Tensor):
        return int(value.shape[0]) if value.dim() > 0 else None
    if isinstance(value, (tuple, list)) and value and all(isinstance(item, torch.Tensor) for item in value):
        return data_size(value[0])
    try:
        return len(value)
    except TypeError:
        return None


def resolve_data(spec: ProblemSpec) -> DataCatalog:
    """Check that every data reference imports; load nothing yet."""
    catalog = DataCatalog(spec)
    for data in spec.data:
        import_ref(data.ref, location=_loc(data.span), role="data")
    return catalog


def lower_level(
    level: LevelSpec,
    catalog: DataCatalog,
    level_names: set[str],
    uppers: list[str],
    lowers: list[str],
    period: int,
) -> LevelPlan:
    """Build the LevelPlan of ``level``; raise CompileError at the spec line of a bad part."""
    variables = [
        _param_variable(param.name, param.init, catalog, level)
        for param in level.params
        if not isinstance(param.init, Name)
    ]
    # Params that start from an upper variable get their shape from it in compile.py.
    variables += [
        VariablePlan(name=param.name, shape=[], init_from=param.init.dotted())
        for param in level.params
        if isinstance(param.init, Name)
    ]
    if level.module is not None:
        variables += _module_variables(level)
    names = [variable.name for variable in variables]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise CompileError(
            f"level '{level.name}' defines variable(s) {clashes} twice (a param and a module entry?)",
            location=_loc(level.span),
            level=level.name,
        )
    return LevelPlan(
        name=level.name,
        variables=variables,
        module=level.module,
        loss=_loss(level, catalog, level_names),
        optimizer=_optimizer(level),
        steps=level.steps,
        per=level.per,
        period=period,
        warm_start=level.warm_start,
        uppers=uppers,
        lowers=lowers,
        source=level.span,
    )


def _param_variable(name: str, init: Call, catalog: DataCatalog, level: LevelSpec) -> VariablePlan:
    args = list(init.args)
    value = None
    if init.func == "full":
        if not args or not isinstance(args[0], Number):
            raise CompileError(
                f"full(value, shape...) for '{level.name}.{name}' needs a number first",
                location=_loc(init.span),
                level=level.name,
            )
        value = float(args.pop(0).value)
    shape = [_dimension(arg, catalog, level, name) for arg in args]
    seed = init.kwargs.get("seed")
    if isinstance(seed, Number):
        seed_value = int(seed.value)
    else:
        seed_value = 0 if init.func == "randn" else None
    return VariablePlan(
        name=name,
        shape=shape,
        dtype=_init_dtype(init, level, name),
        init=InitPlan(
            kind=init.func,
            value=value,
            seed=seed_value,
        ),
    )


DTYPES = ("float32", "float64", "float16", "bfloat16")


def _init_dtype(init: Call, level: LevelSpec, variable: str) -> str:
    value = init.kwargs.get("dtype")
    if value is None:
        return "float32"
    text = value.dotted() if isinstance(value, Name) else getattr(value, "value", None)
    if text not in DTYPES:
        raise CompileError(
            f"dtype of '{level.name}.{variable}' is {text!r}; expected one of {', '.join(DTYPES)}",
            location=_loc(getattr(value, "span", None) or init.span),
            level=level.name,
        )
    return text


def _dimension(arg, catalog: DataCatalog, level: LevelSpec, variable: str) -> int:
    if isinstance(arg, Number) and isinstance(arg.value, int) and arg.value >= 0:
        return arg.value
    if isinstance(arg, Name) and arg.attr == "size":
        if arg.name not in catalog:
            raise CompileError(
                f"shape of '{level.name}.{variable}' reads '{arg.dotted()}', but '{arg.name}' is "
                f"not a data set{did_you_mean(arg.name, catalog.names())}",
                location=_loc(arg.span),
                level=level.name,
            )
        return catalog.size(arg.name, arg.span)
    written = arg.dotted() if isinstance(arg, Name) else getattr(arg, "value", arg)
    raise CompileError(
        f"shape of '{level.name}.{variable}' has dimension {written!r}; expected a non-negative "
        "integer or DATA.size",
        location=_loc(getattr(arg, "span", None)),
        level=level.name,
    )


def _module_variables(level: LevelSpec) -> list[VariablePlan]:
    factory = import_ref(level.module, location=_loc(level.module_span), role="module factory")
    check_arity(factory, 0, ref=level.module, described="no arguments", location=_loc(level.module_span))
    try:
        module = factory()
    except Exception as error:
        raise CompileError(
            f"module factory \"{level.module}\" raised {type(error).__name__}: {error}",
            location=_loc(level.module_span),
            level=level.name,
        ) from error
    if not isinstance(module, nn.Module):
        raise CompileError(
            f"module factory \"{level.module}\" returned a {type(module).__name__}, expected a torch.nn.Module",
            location=_loc(level.module_span),
            level=level.name,
        )
    variables = [
        VariablePlan(name=key, shape=list(tensor.shape), dtype=_dtype_name(tensor), trainable=tensor.requires_grad)
        for key, tensor in module.named_parameters()
    ]
    variables += [
        VariablePlan(name=key, shape=list(tensor.shape), dtype=_dtype_name(tensor), trainable=False)
        for key, tensor in module.named_buffers()
    ]
    return variables


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _loss(level: LevelSpec, catalog: DataCatalog, level_names: set[str]) -> LossPlan:
    loss = level.loss
    function = import_ref(loss.ref, location=_loc(loss.span), role="objective")
    args: list[tuple[str, str]] = []
    for arg in loss.args:
        if arg.name in level_names:
            args.append(("level", arg.name))
        elif arg.name in catalog:
            args.append(("data", arg.name))
        else:
            raise CompileError(
                f"objective of '{level.name}' reads unknown name '{arg.name}'"
                f"{did_you_mean(arg.name, [*level_names, *catalog.names()])}",
                location=_loc(arg.span or loss.span),
                level=level.name,
            )
    described = ", ".join([f"the level '{level.name}' itself", *[name for _, name in args]])
    check_arity(function, 1 + len(args), ref=loss.ref, described=described, location=_loc(loss.span))
    return LossPlan(ref=loss.ref, args=args)


def _optimizer(level: LevelSpec) -> OptimizerPlan:
    """Build the optimizer once to check its hyperparameters and record every default."""
    spec = level.optimizer
    values = {
        key: float(value.value) if isinstance(value, Number) else outer(value.dotted())
        for key, value in spec.kwargs.items()
    }
    try:
        optimizer = make_optimizer(spec.name, **values)
    except ChronosError as error:
        raise CompileError(
            f"optimizer of level '{level.name}': {error.message}",
            location=_loc(spec.span),
            level=level.name,
            hint=error.hint,
        ) from error
    hyperparameters = {
        key: HyperValue(ref=value.key) if isinstance(value, OuterRef) else HyperValue(value=float(value))
        for key, value in optimizer.hyperparameters.items()
    }
    return OptimizerPlan(name=optimizer.name, hyperparameters=hyperparameters)
