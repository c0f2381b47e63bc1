"""Chronos through its compiled path: a ``.chronos`` spec compiled to a plan and run by the local backend.

The spec names the functions below by ``module:function``, as a user's spec
names theirs. Plans hold references, not objects, so these functions read the
problem of the current worker from :data:`_ACTIVE`, which
:class:`ChronosPlanSystem` sets before compiling. One worker process runs one
(system, case) pair, so only one problem is active at a time.

One outer step is one ``LocalExecutor.macro_step()``: the inner solve, the
hypergradient through the plan's method and the outer update.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import chronos
from chronos.backends.local import LocalExecutor
from chronos.compiler.compile import compile_spec
from chronos.dsl import parse
from torch import Tensor, nn

from benchmarks.cases import Problem
from benchmarks.systems.base import Params, System

__all__ = ["ChronosPlanSystem", "spec_text"]

logger = logging.getLogger(__name__)

_ACTIVE: Optional[Problem] = None
_HERE = "benchmarks.systems.chronos_plan"


def _problem() -> Problem:
    if _ACTIVE is None:
        raise RuntimeError("no benchmark problem is active: build a ChronosPlanSystem first")
    return _ACTIVE


def train_data() -> Any:
    return _problem().train


def val_data() -> Any:
    return _problem().val


def make_model() -> nn.Module:
    return _problem().model


def inner_objective(own: Any, upper: Any, train: Any) -> Tensor:
    return _problem().inner_loss(own.params, upper.params, train)


def outer_objective(own: Any, lower: Any, val: Any) -> Tensor:
    return _problem().outer_loss(own.params, lower.params, val)


def _method_line(problem: Problem) -> str:
    case = problem.case
    if case.method == "unrolled":
        return "unrolled"
    return f"implicit(cg, iters = {case.cg_iters})"


def spec_text(problem: Problem) -> str:
    """Return the ``.chronos`` spec of ``problem``: the outer level ``upper`` over the module level ``lower``."""
    (name, init), = problem.outer_init.items()
    shape = ", ".join(str(size) for size in init.shape)
    return f"""problem bench

data train = "{_HERE}:train_data"
data val   = "{_HERE}:val_data"

level upper {{
    param {name} = zeros({shape})
    loss = "{_HERE}:outer_objective"(lower, val)
    optimizer = adam(lr = {problem.outer_lr}, eps = {problem.outer_eps})
    steps = {problem.case.outer_steps}
}}

level lower {{
    module = "{_HERE}:make_model"
    loss = "{_HERE}:inner_objective"(upper, train)
    optimizer = sgd(lr = {problem.inner_lr})
    steps = {problem.case.inner_steps} per upper
    hypergradient = {_method_line(problem)}
}}

backend local
"""


class ChronosPlanSystem(System):
    name = "chronos-plan"

    @staticmethod
    def version() -> str:
        return chronos.__version__

    def __init__(self, problem: Problem) -> None:
        global _ACTIVE
        super().__init__(problem)
        _ACTIVE = problem
        text = problem.spec_text if problem.spec_text is not None else spec_text(problem)
        self.plan = compile_spec(parse(text, file="<benchmark>"))
        self.executor = LocalExecutor(self.plan)

    def step(self) -> Params:
        return self.executor.macro_step()

    def inner_params(self) -> Params:
        return dict(self.executor.lower_params)
