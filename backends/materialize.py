"""Turn a plan's levels into live objects: imported functions, modules, tensors, objectives.

Shared by every backend, so that all of them run the same objectives on the
same initial variables.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import torch
from torch import nn

from chronos.compiler.plan import LevelPlan, Plan, VariablePlan
from chronos.compiler.resolve import import_ref
from chronos.errors import BackendError
from chronos.optim import DifferentiableOptimizer, make_optimizer, outer
from chronos.views import LevelView

__all__ = ["LiveLevel", "LiveProblem", "materialize"]

logger = logging.getLogger(__name__)


@dataclass
class LiveLevel:
    """One level ready to run: its initial variables, module, objective and optimizer."""

    plan: LevelPlan
    params: dict[str, torch.Tensor]  # variables that start from an upper variable are absent
    constants: dict[str, torch.Tensor]
    module: Optional[nn.Module]
    module_keys: Optional[frozenset[str]]
    loss: Callable[..., torch.Tensor]
    optimizer: DifferentiableOptimizer
    initial_params: dict[str, torch.Tensor] = field(default_factory=dict)

    def init_from(self) -> dict[str, tuple[str, str]]:
        """Map each variable that starts from an upper variable to ``(upper level, variable)``."""
        return {
            variable.name: tuple(variable.init_from.split(".", 1))
            for variable in self.plan.variables
            if variable.init_from is not None
        }

    def start(self, upper_variables: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Return the initial variables of one solve, taking ``init_from`` ones from ``upper_variables``.

        Each is a clone, which stays on the autograd graph of the upper
        variable but is a tensor of its own, so the lower level's gradient is
        taken with respect to its own variable only.
        """
        start = dict(self.initial_params)
        for name, (upper, variable) in self.init_from().items():
            start[name] = upper_variables[upper][variable].clone()
        return start

    def view(self, params: Mapping[str, torch.Tensor]) -> LevelView:
        return LevelView(self.plan.name, params, self.constants, self.module, self.module_keys)


@dataclass
class LiveProblem:
    plan: Plan
    levels: dict[str, LiveLevel]
    data: dict[str, Any]

    def objective(self, level: str, upper_or_lower: str) -> Callable:
        """Build ``objective(own_params, other_params, batch)`` for ``level`` reading one other level.

        This is the form chronos.core takes: InnerProblem objectives are
        ``(params, outer_params, data)`` and OuterOptimizer objectives are
        ``(outer_params, inner_params, data)``. ``batch`` maps data names to data.
        """
        live = self.levels[level]
        other = self.levels[upper_or_lower]
        args = live.plan.loss.args
        where = _where(live.plan)

        def objective(params, other_params, batch):
            values = []
            for kind, name in args:
                if kind == "data":
                    values.append(batch[name])
                elif name == upper_or_lower:
                    values.append(other.view(other_params))
                else:
                    raise BackendError(
                        f"objective of '{level}' reads level '{name}', but this backend only passes "
                        f"'{upper_or_lower}' to it",
                        level=level,
                    )
            try:
                value = live.loss(live.view(params), *values)
            except BackendError:
                raise
            except Exception as error:
                raise BackendError(
                    f"objective \"{live.plan.loss.ref}\" of level '{level}'{where} raised "
                    f"{type(error).__name__}: {error}",
                    level=level,
                ) from error
            return _check_scalar(value, live.plan)

        return objective

    def batch(self, level: str) -> dict[str, Any]:
        return {name: self.data[name] for kind, name in self.levels[level].plan.loss.args if kind == "data"}


def _where(plan: LevelPlan) -> str:
    if plan.source is None:
        return ""
    return f" (defined at {plan.source.file}:{plan.source.line})"


def _check_scalar(value: Any, plan: LevelPlan) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise BackendError(
            f"objective \"{plan.loss.ref}\" of level '{plan.name}' returned {shape}; "
            "expected a scalar tensor",
            level=plan.name,
            hint="reduce the loss with .mean() or .sum()",
        )
    return value.reshape(())


def materialize(plan: Plan) -> LiveProblem:
    """Import every reference the plan names, load the data and build the initial variables."""
    data = {}
    for entry in plan.data:
        function = import_ref(entry.ref, role="data")
        data[entry.name] = function()
    levels = {level.name: _live_level(level) for level in plan.levels}
    return LiveProblem(plan=plan, levels=levels, data=data)


def _live_level(plan: LevelPlan) -> LiveLevel:
    params: dict[str, torch.Tensor] = {}
    constants: dict[str, torch.Tensor] = {}
    module = None
    module_keys = None
    if plan.module is not None:
        from chronos.functional import split_module

        module = import_ref(plan.module, role="module factory")()
        module_params, module_constants = split_module(module)
        module_keys = frozenset([*module_params, *module_constants])
        params.update({key: value.detach().clone() for key, value in module_params.items()})
        constants.update({key: value.detach().clone() for key, value in module_constants.items()})
    for variable in plan.variables:
        if variable.init is not None:
            try:
                params[variable.name] = _initial_tensor(variable)
            except (RuntimeError, MemoryError) as error:
                raise BackendError(
                    f"cannot allocate variable '{variable.name}' of shape {tuple(variable.shape)} "
                    f"{variable.dtype}: {type(error).__name__}: {str(error).splitlines()[0][:200]}",
                    level=plan.name,
                    hint="check the shape in the spec",
                ) from error
    optimizer = _optimizer(plan)
    loss = import_ref(plan.loss.ref, role="objective")
    return LiveLevel(
        plan=plan,
        params=params,
        constants=constants,
        module=module,
        module_keys=module_keys,
        loss=loss,
        optimizer=optimizer,
        initial_params={key: value.clone() for key, value in params.items()},
    )


def _initial_tensor(variable: VariablePlan) -> torch.Tensor:
    dtype = getattr(torch, variable.dtype)
    init = variable.init
    shape = tuple(variable.shape)
    if init.kind == "zeros":
        return torch.zeros(shape, dtype=dtype)
    if init.kind == "ones":
        return torch.ones(shape, dtype=dtype)
    if init.kind == "full":
        return torch.full(shape, float(init.value), dtype=dtype)
    generator = torch.Generator().manual_seed(init.seed or 0)
    return torch.randn(shape, generator=generator, dtype=dtype)


def _optimizer(plan: LevelPlan) -> DifferentiableOptimizer:
    # A variable "upper.lr" of the 'per' level becomes OuterRef("lr"), because
    # inner solves see that level's variables keyed by their own names. A
    # variable of a level further above keeps its "level.lr" key.
    hyperparameters = {
        key: (_outer_key(value.ref, plan.per) if value.ref is not None else value.value)
        for key, value in plan.optimizer.hyperparameters.items()
    }
    return make_optimizer(plan.optimizer.name, **hyperparameters)


def _outer_key(ref: str, per: Optional[str]):
    level, _, variable = ref.partition(".")
    return outer(variable if level == per else ref)
