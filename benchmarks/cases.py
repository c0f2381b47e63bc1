"""The benchmark problems: one description per case, shared by every system.

A :class:`Case` names a problem, a hypergradient method and its sizes.
:func:`build_problem` turns it into a :class:`Problem`: data, a model, the
initial variables and the two objectives as plain functions of dicts of
tensors. Every system (Chronos, the hand-written reference, the peers) thus
optimizes the same numbers from the same start.

Conventions shared by all systems:

- the inner optimizer is plain SGD (no momentum, no weight decay) and the outer
  optimizer is Adam, with the learning rates of the problem;
- every outer step starts the inner solve from the same initial variables
  (no warm start), and every inner step is full batch;
- an unrolled case backpropagates through all of its ``inner_steps``, so the
  number of unrolled steps K equals the number of inner steps (no truncation);
- an implicit case runs ``inner_steps`` detached SGD steps and then solves the
  Hessian system by conjugate gradient with ``cg_iters`` iterations.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["Case", "Problem", "all_cases", "build_problem", "case_groups", "select_cases"]

logger = logging.getLogger(__name__)

Params = dict[str, Tensor]
InnerLoss = Callable[[Params, Params, Any], Tensor]
OuterLoss = Callable[[Params, Params, Any], Tensor]

HYPERCLEAN_MODULE = "examples.hyperclean"
# Cases that compare systems on one outer step.
GROUP_HYPERCLEAN = "hyperclean"
GROUP_MEMORY = "memory"
GROUP_SCALE = "scale"
GROUP_COMPILE = "compile"


@dataclass(frozen=True)
class Case:
    """One benchmark case: a problem, a hypergradient method and its sizes.

    ``width`` is the hidden width of the synthetic two-layer model (scale
    group); the linear model of the memory group ignores it.
    ``outer_steps`` is the number of outer steps after which the metric is read.
    """

    name: str
    group: str
    problem: str
    method: str
    inner_steps: int
    cg_iters: int = 20
    width: int = 64
    outer_steps: int = 5


@dataclass
class Problem:
    """A bilevel problem as plain functions of dicts of tensors.

    ``inner_loss(params, outer, batch)`` and ``outer_loss(outer, params, batch)``
    return 0-d tensors. ``model`` computes the inner model's output with
    ``torch.func.functional_call(model, params, x)``; its own parameters hold
    the initial values (``inner_init`` is a detached copy of them).
    ``outer_eps`` is the ``eps`` of the outer Adam. ``metric(params)`` scores final inner variables (test accuracy in [0, 1],
    or None where the case has no test set).
    """

    case: Case
    model: nn.Module
    inner_init: Params
    outer_init: Params
    inner_loss: InnerLoss
    outer_loss: OuterLoss
    train: Any
    val: Any
    inner_lr: float
    outer_lr: float
    outer_eps: float = 1e-8
    metric: Callable[[Params], Optional[float]] = field(default=lambda params: None)
    spec_text: Optional[str] = None


def hyperclean_available() -> bool:
    """Tell whether examples/hyperclean.py exists (another part of the project writes it)."""
    return importlib.util.find_spec(HYPERCLEAN_MODULE) is not None


def all_cases(quick: bool = False) -> list[Case]:
    """Return every case; ``quick`` shrinks sizes and outer steps for a smoke run."""
    outer_steps = 2 if quick else 10
    cases = [
        Case("hyperclean-unrolled-10", GROUP_HYPERCLEAN, "hyperclean", "unrolled", 10, outer_steps=outer_steps),
        Case("hyperclean-unrolled-50", GROUP_HYPERCLEAN, "hyperclean", "unrolled", 50, outer_steps=outer_steps),
        Case("hyperclean-implicit-200", GROUP_HYPERCLEAN, "hyperclean", "implicit", 200, outer_steps=outer_steps),
    ]
    for steps in (10, 100) if quick else (10, 100, 1000):
        for method in ("unrolled", "implicit"):
            cases.append(Case(f"memory-{method}-T{steps}", GROUP_MEMORY, "linear", method, steps, outer_steps=1))
    for width in (64, 256) if quick else (64, 256, 1024, 4096):
        cases.append(Case(f"scale-unrolled-w{width}", GROUP_SCALE, "mlp", "unrolled", 10, width=width, outer_steps=1))
    cases.append(Case("compile-time", GROUP_COMPILE, "compile", "none", 0))
    return cases


def case_groups() -> tuple[str, ...]:
    return (GROUP_HYPERCLEAN, GROUP_MEMORY, GROUP_SCALE, GROUP_COMPILE)


def select_cases(names: Optional[list[str]], quick: bool = False) -> list[Case]:
    """Return the cases whose name or group is in ``names`` (all when None).

    Raises:
        ValueError: a name matches no case or group (the valid ones are listed).
    """
    cases = all_cases(quick)
    if not names:
        return cases
    chosen = [case for case in cases if case.name in names or case.group in names]
    known = {case.name for case in cases} | {case.group for case in cases}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown case or group {', '.join(unknown)}; valid ones: {', '.join(sorted(known))}")
    return chosen


def build_problem(case: Case) -> Problem:
    """Build the data, model and objectives of ``case`` (deterministic: fixed seeds).

    Raises:
        ValueError: the case names an unknown problem.
    """
    if case.problem == "hyperclean":
        return _hyperclean_problem(case)
    if case.problem == "linear":
        return _synthetic_problem(case, _linear_model())
    if case.problem == "mlp":
        return _synthetic_problem(case, _mlp_model(case.width))
    raise ValueError(f"case '{case.name}' names unknown problem '{case.problem}'; valid: hyperclean, linear, mlp")


# Synthetic data re-weighting: 10 Gaussian classes in INPUTS dimensions, a
# quarter of the training labels replaced by random ones, one learned logit
# per training sample (its weight is sigmoid(logit)) and a clean validation set.
INPUTS = 64
CLASSES = 10
TRAIN_SIZE = 1024
VAL_SIZE = 256
NOISE = 0.25
# An L2 term on the inner variables makes the linear problem strongly convex,
# so conjugate gradient meets a positive definite Hessian.
INNER_L2 = 1e-3


def _linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(INPUTS, CLASSES)


def _mlp_model(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(INPUTS, width), nn.Tanh(), nn.Linear(width, CLASSES))


def _synthetic_data(seed: int = 0) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(CLASSES, INPUTS, generator=generator)

    def sample(count: int) -> tuple[Tensor, Tensor]:
        labels = torch.randint(0, CLASSES, (count,), generator=generator)
        return centers[labels] + 2.0 * torch.randn(count, INPUTS, generator=generator), labels

    x_train, y_train = sample(TRAIN_SIZE)
    flip = torch.rand(TRAIN_SIZE, generator=generator) < NOISE
    y_train = torch.where(flip, torch.randint(0, CLASSES, (TRAIN_SIZE,), generator=generator), y_train)
    return (x_train, y_train), sample(VAL_SIZE)


def _synthetic_problem(case: Case, model: nn.Module) -> Problem:
    train, val = _synthetic_data()

    def inner_loss(params: Params, outer: Params, batch: Any) -> Tensor:
        x, y = batch
        losses = nn.functional.cross_entropy(functional_call(model, params, (x,)), y, reduction="none")
        weights = torch.sigmoid(outer["logits"])
        penalty = sum(p.pow(2).sum() for p in params.values())
        return (weights * losses).mean() + 0.5 * INNER_L2 * penalty

    def outer_loss(outer: Params, params: Params, batch: Any) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    return Problem(
        case=case,
        model=model,
        inner_init={k: v.detach().clone() for k, v in model.named_parameters()},
        outer_init={"logits": torch.zeros(TRAIN_SIZE)},
        inner_loss=inner_loss,
        outer_loss=outer_loss,
        train=train,
        val=val,
        inner_lr=0.1,
        outer_lr=0.1,
    )


def _hyperclean_problem(case: Case) -> Problem:
    """Wrap examples/hyperclean.py: its data split, classifier, objectives and learning rates.

    Batches are ``(x, y)`` tuples for every system (Betty iterates a batch), and
    the objectives rebuild the example's ``Digits`` from them. The
    ``chronos-plan`` system instead compiles examples/hyperclean.chronos itself
    with the case's steps and method, so it runs the example's own functions.
    """
    example = importlib.import_module(HYPERCLEAN_MODULE)
    from examples import _hyperclean_model as settings

    train, val, test = example.noisy_train(), example.clean_val(), example.test_set()
    model = example.make_classifier()

    def classifier(params: Params) -> Callable[[Tensor], Tensor]:
        return lambda x: functional_call(model, params, (x,))

    def inner_loss(params: Params, outer: Params, batch: Any) -> Tensor:
        weights = SimpleNamespace(logits=outer["logits"])
        return example.weighted_train_loss(classifier(params), weights, example.Digits(*batch))

    def outer_loss(outer: Params, params: Params, batch: Any) -> Tensor:
        return example.validation_loss(None, classifier(params), example.Digits(*batch))

    def metric(params: Params) -> float:
        with torch.no_grad():
            predictions = functional_call(model, params, (test.x,)).argmax(dim=1)
        return float((predictions == test.y).float().mean())

    return Problem(
        case=case,
        model=model,
        inner_init={k: v.detach().clone() for k, v in model.named_parameters()},
        outer_init={"logits": torch.zeros(len(train))},
        inner_loss=inner_loss,
        outer_loss=outer_loss,
        train=(train.x, train.y),
        val=(val.x, val.y),
        inner_lr=settings.INNER_LR,
        outer_lr=settings.OUTER_LR,
        outer_eps=settings.OUTER_EPS,
        metric=metric,
        spec_text=_hyperclean_spec(case),
    )


def _hyperclean_spec(case: Case) -> str:
    """Return examples/hyperclean.chronos with the case's outer steps, inner steps and method.

    Raises:
        ValueError: the spec no longer has one of the lines replaced here.
    """
    path = Path(importlib.import_module(HYPERCLEAN_MODULE).__file__).with_suffix(".chronos")
    text = path.read_text()
    method = "unrolled" if case.method == "unrolled" else f"implicit(cg, iters = {case.cg_iters})"
    replacements = (
        (r"steps = \d+\n", f"steps = {case.outer_steps}\n"),
        (r"steps = \d+ per weights", f"steps = {case.inner_steps} per weights"),
        (r"hypergradient = \w+", f"hypergradient = {method}"),
    )
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text, count=1)
        if count != 1:
            raise ValueError(f"{path} has no line matching {pattern!r}; update benchmarks/cases.py to the spec")
    return text
