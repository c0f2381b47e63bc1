"""Differentiable optimizers whose state is part of the inner trajectory.

An optimizer here is a pure function of tensors. :meth:`DifferentiableOptimizer.update`
returns new parameters and a new state and never writes into its inputs. Autograd
can therefore differentiate a run of updates with respect to the initial
parameters and to hyperparameters that are outer (upper-level) variables.

A hyperparameter is either a Python number fixed in the spec or an
:class:`OuterRef`, created by :func:`outer`, that names an outer variable. Before
each run the caller turns references into tensors with
:meth:`DifferentiableOptimizer.resolve`; the update then reads those tensors, so
the hypergradient reaches them through unrolled differentiation. Implicit
differentiation gives such variables no gradient (see ``chronos.solver``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import torch
from torch import Tensor

from chronos.errors import ChronosError, SpecError, did_you_mean

__all__ = [
    "OPTIMIZERS",
    "Adam",
    "DifferentiableOptimizer",
    "OuterRef",
    "SGD",
    "adam",
    "make_optimizer",
    "outer",
    "sgd",
]

Params = dict[str, Tensor]
OptimizerState = dict[str, Any]
ResolvedHyper = Mapping[str, Union[float, Tensor]]


@dataclass(frozen=True)
class OuterRef:
    """A hyperparameter read from the outer (upper-level) variable named ``key``."""

    key: str


HyperValue = Union[float, OuterRef]


def outer(key: str) -> OuterRef:
    """Create a hyperparameter that reads the outer variable ``key``.

    Example: ``sgd(lr=outer("lr"))`` makes the inner learning rate the outer
    variable ``lr``.

    Raises:
        SpecError: ``key`` is not a non-empty string.
    """
    if not isinstance(key, str) or not key:
        raise SpecError(f"outer() expects the name of an outer variable, got {key!r}")
    return OuterRef(key)


@dataclass(frozen=True)
class _Range:
    """An interval that a numeric hyperparameter must lie in."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True

    def contains(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self, name: str) -> str:
        low = f"{self.low:g} {'<' if self.low_open else '<='} "
        if self.high == math.inf:
            return f"{name} {'>' if self.low_open else '>='} {self.low:g}"
        return f"{low}{name} {'<' if self.high_open else '<='} {self.high:g}"


_POSITIVE = _Range(0.0, low_open=True)
_NON_NEGATIVE = _Range(0.0)
_UNIT = _Range(0.0, 1.0)


class DifferentiableOptimizer:
    """Base class: a named update rule with validated hyperparameters.

    Subclasses set ``name``, ``_defaults`` (every hyperparameter and its default,
    ``None`` for a required one), ``_ranges`` and implement ``init`` and
    ``update``.

    Raises:
        SpecError: an unknown hyperparameter, a missing required one, or a value
            outside its range (for example ``lr <= 0``).
    """

    name: str = ""
    _defaults: dict[str, Optional[float]] = {}
    _ranges: dict[str, _Range] = {}

    def __init__(self, **hyperparameters: Any) -> None:
        self._check_names(hyperparameters)
        merged = {**self._defaults, **hyperparameters}
        self.hyperparameters: dict[str, HyperValue] = {
            key: self._check_value(key, value) for key, value in merged.items()
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"{self.name}({args})"

    def _check_names(self, hyperparameters: Mapping[str, Any]) -> None:
        valid = sorted(self._defaults)
        for key in hyperparameters:
            if key not in self._defaults:
                raise SpecError(
                    f"unknown hyperparameter '{key}' for optimizer '{self.name}'"
                    f"{did_you_mean(key, valid)}; valid ones: {', '.join(valid)}"
                )
        for key, default in self._defaults.items():
            if default is None and key not in hyperparameters:
                raise SpecError(f"optimizer '{self.name}' needs the hyperparameter '{key}'")

    def _check_value(self, key: str, value: Any) -> HyperValue:
        if isinstance(value, OuterRef):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(
                f"hyperparameter '{key}' of optimizer '{self.name}' must be a number or "
                f"outer('<variable>'), got {type(value).__name__} {value!r}"
            )
        allowed = self._ranges[key]
        if not allowed.contains(float(value)):
            raise SpecError(
                f"invalid value {value!r} for hyperparameter '{key}' of optimizer "
                f"'{self.name}': expected {allowed.describe(key)}"
            )
        return float(value)

    def outer_keys(self) -> set[str]:
        """Return the names of the outer variables that the hyperparameters read."""
        return {v.key for v in self.hyperparameters.values() if isinstance(v, OuterRef)}

    def resolve(
        self, outer_params: Optional[Mapping[str, Tensor]], *, level: Optional[str] = None
    ) -> dict[str, Union[float, Tensor]]:
        """Replace every :class:`OuterRef` by the outer tensor it names.

        The tensor is returned as a 0-d view of the same object, so autograd
        reaches the outer variable. ``level`` only labels errors.

        Raises:
            ChronosError: a referenced variable is missing from ``outer_params``
                (the message names it and lists the variables available), or it
                is not a floating-point tensor with exactly one element.
        """
        resolved: dict[str, Union[float, Tensor]] = {}
        for hyper_name, value in self.hyperparameters.items():
            if isinstance(value, OuterRef):
                resolved[hyper_name] = self._lookup(hyper_name, value.key, outer_params, level)
            else:
                resolved[hyper_name] = value
        return resolved

    def _lookup(
        self,
        hyper_name: str,
        key: str,
        outer_params: Optional[Mapping[str, Tensor]],
        level: Optional[str],
    ) -> Tensor:
        available = sorted(outer_params) if outer_params is not None else []
        try:
            tensor = outer_params[key] if outer_params is not None else None
        except KeyError:
            tensor = None
        if tensor is None:
            listed = ", ".join(available) if available else "none"
            raise ChronosError(
                f"hyperparameter '{hyper_name}' of optimizer '{self.name}' reads the outer "
                f"variable '{key}', which is not among the outer variables (available: {listed})"
                f"{did_you_mean(key, available)}",
                level=level,
                hint="declare the variable in the upper level or fix the name in outer(...)",
            )
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point() or tensor.numel() != 1:
            raise ChronosError(
                f"outer variable '{key}' read as hyperparameter '{hyper_name}' of optimizer "
                f"'{self.name}' must be a floating-point tensor with one element, got "
                f"{_describe(tensor)}",
                level=level,
            )
        return tensor.reshape(())

    def init(self, params: Mapping[str, Tensor]) -> OptimizerState:
        """Return the initial state for ``params``: a step count and zero buffers."""
        raise NotImplementedError

    def update(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Optional[Tensor]],
        state: OptimizerState,
        hyper: ResolvedHyper,
    ) -> tuple[Params, OptimizerState]:
        """Return ``(new_params, new_state)`` after one step; the inputs are not modified."""
        raise NotImplementedError


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"


def _like(value: Union[float, Tensor], param: Tensor) -> Union[float, Tensor]:
    """Cast a tensor hyperparameter to the parameter's dtype and device (differentiably)."""
    if isinstance(value, Tensor):
        return value.to(dtype=param.dtype, device=param.device)
    return value


def _zeros(params: Mapping[str, Tensor]) -> Params:
    return {k: torch.zeros_like(p, memory_format=torch.preserve_format).detach() for k, p in params.items()}


def _gradient_for(key: str, params: Mapping[str, Tensor], grads: Mapping[str, Optional[Tensor]]) -> Tensor:
    """Return the gradient of ``key``, zeros where it is None (the variable had no path)."""
    if key not in grads:
        raise ChronosError(
            f"no gradient given for variable '{key}' (gradients were given for: "
            f"{', '.join(sorted(grads)) or 'none'})"
        )
    grad = grads[key]
    if grad is None:
        return torch.zeros_like(params[key])
    if grad.shape != params[key].shape:
        raise ChronosError(
            f"gradient of variable '{key}' has shape {tuple(grad.shape)}, but the variable "
            f"has shape {tuple(params[key].shape)}"
        )
    return grad


class SGD(DifferentiableOptimizer):
    r"""Stochastic gradient descent with heavy-ball momentum and L2 weight decay.

    With gradient :math:`\nabla f(\theta_t)`, learning rate :math:`\eta`,
    momentum :math:`\mu` and weight decay :math:`\lambda`, one step is

    .. math::

        g_t &= \nabla f(\theta_t) + \lambda \theta_t \\
        b_t &= \mu b_{t-1} + g_t, \qquad b_0 = 0 \\
        \theta_{t+1} &= \theta_t - \eta b_t

    which is ``torch.optim.SGD`` with ``dampening=0`` and ``nesterov=False``
    (its first step sets :math:`b_1 = g_1`, the same as :math:`\mu \cdot 0 + g_1`).
    State: ``step`` (int) and, unless ``momentum`` is the number 0, ``momentum``
    (one buffer per variable).
    """

    name = "sgd"
    _defaults = {"lr": None, "momentum": 0.0, "weight_decay": 0.0}
    _ranges = {"lr": _POSITIVE, "momentum": _UNIT, "weight_decay": _NON_NEGATIVE}

    def _uses_momentum(self) -> bool:
        return self.hyperparameters["momentum"] != 0.0

    def init(self, params: Mapping[str, Tensor]) -> OptimizerState:
        state: OptimizerState = {"step": 0}
        if self._uses_momentum():
            state["momentum"] = _zeros(params)
        return state

    def update(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Optional[Tensor]],
        state: OptimizerState,
        hyper: ResolvedHyper,
    ) -> tuple[Params, OptimizerState]:
        new_params: Params = {}
        new_buffers: Params = {}
        buffers = state.get("momentum")
        for key, param in params.items():
            grad = _gradient_for(key, params, grads)
            lr = _like(hyper["lr"], param)
            decay = _like(hyper["weight_decay"], param)
            direction = _add_scaled(grad, decay, param) if _nonzero(decay) else grad
            if buffers is not None:
                direction = _add_scaled(direction, _like(hyper["momentum"], param), buffers[key])
                new_buffers[key] = direction
            new_params[key] = _add_scaled(param, -lr, direction)
        new_state: OptimizerState = {"step": int(state["step"]) + 1}
        if buffers is not None:
            new_state["momentum"] = new_buffers
        return new_params, new_state


def _add_scaled(base: Tensor, scale: Union[float, Tensor], other: Tensor) -> Tensor:
    """Return ``base + scale * other``.

    A number scale goes into one fused ``torch.add(..., alpha=scale)``, which
    puts one node instead of two on the autograd graph of an unrolled
    trajectory. A tensor scale (an outer variable) keeps the product, so the
    hypergradient reaches it.
    """
    if isinstance(scale, Tensor):
        return base + scale * other
    return torch.add(base, other, alpha=scale)


def _nonzero(value: Union[float, Tensor]) -> bool:
    """Tell whether a hyperparameter term must be computed; tensors always are (they carry a gradient)."""
    return isinstance(value, Tensor) or value != 0.0


class Adam(DifferentiableOptimizer):
    r"""Adam (Kingma and Ba, 2015) with an ``eps_root`` inside the square root.

    With gradient :math:`\nabla f(\theta_t)`, learning rate :math:`\eta`,
    decay rates :math:`\beta_1, \beta_2`, weight decay :math:`\lambda` and the
    step count :math:`t = 1, 2, \dots`, one step is

    .. math::

        g_t &= \nabla f(\theta_t) + \lambda \theta_t \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad m_0 = 0 \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \qquad v_0 = 0 \\
        \hat m_t &= m_t / (1 - \beta_1^t), \qquad \hat v_t = v_t / (1 - \beta_2^t) \\
        \theta_{t+1} &= \theta_t - \eta\, \hat m_t / \left(\sqrt{\hat v_t + \epsilon_{root}} + \epsilon\right)

    With :math:`\epsilon_{root} = 0` this is ``torch.optim.Adam`` (L2 weight
    decay, not AdamW). The derivative of :math:`\sqrt{x}` is infinite at
    :math:`x = 0`, so a variable with exactly zero gradient would give the
    meta-gradient ``inf * 0 = nan``. The default :math:`\epsilon_{root} = 10^{-16}`
    keeps it finite. It adds :math:`\sqrt{\epsilon_{root}} = 10^{-8}` to the
    denominator where :math:`\hat v_t = 0` and at most
    :math:`\epsilon_{root} / (2\sqrt{\hat v_t})` elsewhere, which is below
    :math:`10^{-10}` (a hundredth of the default :math:`\epsilon`) once
    :math:`\sqrt{\hat v_t} > 5 \cdot 10^{-7}`.
    State: ``step`` (int), ``mu`` (first moments) and ``nu`` (second moments).
    """

    name = "adam"
    _defaults = {
        "lr": None,
        "b1": 0.9,
        "b2": 0.999,
        "eps": 1e-8,
        "eps_root": 1e-16,
        "weight_decay": 0.0,
    }
    _ranges = {
        "lr": _POSITIVE,
        "b1": _UNIT,
        "b2": _UNIT,
        "eps": _NON_NEGATIVE,
        "eps_root": _NON_NEGATIVE,
        "weight_decay": _NON_NEGATIVE,
    }

    def init(self, params: Mapping[str, Tensor]) -> OptimizerState:
        return {"step": 0, "mu": _zeros(params), "nu": _zeros(params)}

    def update(
        self,
        params: Mapping[str, Tensor],
        grads: Mapping[str, Optional[Tensor]],
        state: OptimizerState,
        hyper: ResolvedHyper,
    ) -> tuple[Params, OptimizerState]:
        step = int(state["step"]) + 1
        new_params: Params = {}
        new_mu: Params = {}
        new_nu: Params = {}
        for key, param in params.items():
            grad = _gradient_for(key, params, grads)
            decay = _like(hyper["weight_decay"], param)
            if _nonzero(decay):
                grad = grad + decay * param
            b1 = _like(hyper["b1"], param)
            b2 = _like(hyper["b2"], param)
            new_mu[key] = b1 * state["mu"][key] + (1 - b1) * grad
            new_nu[key] = b2 * state["nu"][key] + (1 - b2) * grad * grad
            mu_hat = new_mu[key] / (1 - b1**step)
            nu_hat = new_nu[key] / (1 - b2**step)
            denominator = torch.sqrt(nu_hat + _like(hyper["eps_root"], param)) + _like(hyper["eps"], param)
            new_params[key] = param - _like(hyper["lr"], param) * mu_hat / denominator
        return new_params, {"step": step, "mu": new_mu, "nu": new_nu}


OPTIMIZERS: dict[str, type[DifferentiableOptimizer]] = {"sgd": SGD, "adam": Adam}


def sgd(
    lr: HyperValue,
    momentum: HyperValue = 0.0,
    weight_decay: HyperValue = 0.0,
) -> DifferentiableOptimizer:
    """Create an :class:`SGD` optimizer; see its docstring for the update rule.

    Raises:
        SpecError: ``lr <= 0``, ``momentum`` outside [0, 1) or ``weight_decay < 0``.
    """
    return SGD(lr=lr, momentum=momentum, weight_decay=weight_decay)


def adam(
    lr: HyperValue,
    b1: HyperValue = 0.9,
    b2: HyperValue = 0.999,
    eps: HyperValue = 1e-8,
    eps_root: HyperValue = 1e-16,
    weight_decay: HyperValue = 0.0,
) -> DifferentiableOptimizer:
    """Create an :class:`Adam` optimizer; see its docstring for the update rule.

    Raises:
        SpecError: ``lr <= 0``, ``b1`` or ``b2`` outside [0, 1), or a negative
            ``eps``, ``eps_root`` or ``weight_decay``.
    """
    return Adam(lr=lr, b1=b1, b2=b2, eps=eps, eps_root=eps_root, weight_decay=weight_decay)


def make_optimizer(name: str, **hyperparameters: Any) -> DifferentiableOptimizer:
    """Create the optimizer called ``name`` (a key of :data:`OPTIMIZERS`).

    Raises:
        SpecError: an unknown name (the message lists the valid ones), or an
            unknown or invalid hyperparameter.
    """
    if name not in OPTIMIZERS:
        valid = sorted(OPTIMIZERS)
        raise SpecError(
            f"unknown optimizer '{name}'{did_you_mean(name, valid)}; valid ones: {', '.join(valid)}"
        )
    return OPTIMIZERS[name](**hyperparameters)
