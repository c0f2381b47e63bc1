"""The interface every benchmarked system implements, and the registry of systems.

A system is built for one :class:`benchmarks.cases.Problem` and then runs outer
steps: each :meth:`System.step` solves the inner problem from the initial
inner variables, computes the hypergradient with the case's method, applies
it with the outer optimizer and returns it.
"""

from __future__ import annotations

import importlib
import logging
from typing import Optional

import torch
from torch import Tensor

from benchmarks.cases import Problem

__all__ = ["SYSTEMS", "MethodUnsupported", "System", "SystemUnavailable", "flatten", "load_system"]

logger = logging.getLogger(__name__)

Params = dict[str, Tensor]

# Name -> "module:class". The reference comes first: the others are checked against it.
SYSTEMS: dict[str, str] = {
    "reference": "benchmarks.systems.reference:ReferenceSystem",
    "chronos-plan": "benchmarks.systems.chronos_plan:ChronosPlanSystem",
    "chronos-imperative": "benchmarks.systems.chronos_imperative:ChronosImperativeSystem",
    "betty": "benchmarks.systems.betty_peer:BettySystem",
    "torchopt": "benchmarks.systems.torchopt_peer:TorchOptSystem",
    "higher": "benchmarks.systems.higher_peer:HigherSystem",
}


class SystemUnavailable(Exception):
    """The system's package is not installed or does not import; the message gives the reason."""


class MethodUnsupported(Exception):
    """The system has no implementation of the case's hypergradient method."""


class System:
    """Base class: one system set up for one problem."""

    name = ""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.case = problem.case

    @staticmethod
    def version() -> str:
        """Return the version string of the package measured (torch for the reference)."""
        return torch.__version__

    def step(self) -> Params:
        """Run one outer step and return the hypergradient it applied (detached), keyed like ``outer_init``."""
        raise NotImplementedError

    def inner_params(self) -> Params:
        """Return the inner variables at the end of the last step's inner solve (detached)."""
        raise NotImplementedError


def apply_hypergradient(outer: Params, optimizer: torch.optim.Optimizer, hypergradient: Params) -> None:
    """Store ``hypergradient`` as the ``.grad`` of each outer variable and take one step of ``optimizer``."""
    for key, tensor in outer.items():
        tensor.grad = hypergradient[key]
    optimizer.step()


def outer_hypergradient(problem: Problem, outer: Params, inner: Params) -> Params:
    """Differentiate the outer loss at ``inner`` with respect to ``outer``, through the graph ``inner`` carries (unrolled or implicit)."""
    loss = problem.outer_loss(outer, inner, problem.val)
    found = torch.autograd.grad(loss, list(outer.values()))
    return dict(zip(outer, found))


def flatten(tensors: Params, keys: Optional[list[str]] = None) -> Tensor:
    """Concatenate the tensors, in the order of ``keys`` (default: sorted), as one float64 vector."""
    order = keys if keys is not None else sorted(tensors)
    return torch.cat([tensors[key].detach().reshape(-1).double() for key in order])


def load_system(name: str) -> type[System]:
    """Import the class of system ``name``.

    Raises:
        KeyError: unknown name (the valid ones are listed).
        SystemUnavailable: the system's package is missing or fails to import.
    """
    if name not in SYSTEMS:
        raise KeyError(f"unknown system '{name}'; valid ones: {', '.join(SYSTEMS)}")
    module_name, _, class_name = SYSTEMS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    # A peer can fail at import with more than ImportError (a compiled extension
    # built for another torch raises OSError or RuntimeError), and any failure
    # means the same thing here: the system is not available.
    except Exception as error:
        raise SystemUnavailable(f"{type(error).__name__}: {error}") from error
    return getattr(module, class_name)
