"""The run loop shared by the local executors: progress, logging and checkpoints."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Optional, Union

from tqdm.auto import tqdm

from chronos.backends.checkpoint import load_checkpoint, plan_digest
from chronos.compiler.plan import LevelPlan, Plan
from chronos.core import MetaState, VersionTracker
from chronos.errors import BackendError
from chronos.result import RunResult

__all__ = ["Executor", "gradient_norm", "single_root"]

logger = logging.getLogger(__name__)


def single_root(plan: Plan) -> LevelPlan:
    """Return the plan's only top level; raise BackendError naming the top levels otherwise."""
    roots = plan.roots()
    if len(roots) != 1:
        raise BackendError(
            f"the local backend runs one top level; this plan has {[root.name for root in roots]}",
            hint="give every top level but one a 'per' clause",
        )
    return roots[0]


def gradient_norm(gradient: dict) -> float:
    """Return the L2 norm over every tensor of a hypergradient, computed in float64."""
    import torch

    return float(torch.sqrt(sum((value.detach().double() ** 2).sum() for value in gradient.values())))


class Executor:
    """Base class: subclasses implement macro_step, checkpoint_state, restore and result."""

    plan: Plan
    root: str
    versions: "VersionTracker"
    history: dict[str, list[float]]
    hypergradient_norms: dict[str, list[float]]
    macro_step_index: int

    def macro_step(self):
        raise NotImplementedError

    def checkpoint_state(self) -> MetaState:
        raise NotImplementedError

    def restore(self, meta: MetaState) -> None:
        raise NotImplementedError

    def result(self, seconds: float = 0.0) -> RunResult:
        raise NotImplementedError

    def _result(self, variables: dict, seconds: float) -> RunResult:
        return RunResult(
            problem=self.plan.problem,
            variables=variables,
            history=self.history,
            hypergradient_norms=self.hypergradient_norms,
            versions={level.name: self.versions.version(level.name) for level in self.plan.levels},
            seconds=seconds,
        )

    def _progress_record(self) -> dict:
        return {
            "plan_digest": plan_digest(self.plan),
            "macro_step": self.macro_step_index,
            "history": {key: list(values) for key, values in self.history.items()},
            "hypergradient_norms": {key: list(values) for key, values in self.hypergradient_norms.items()},
        }

    def _restore_progress(self, extra: dict) -> None:
        self.macro_step_index = int(extra["macro_step"])
        self.history = {key: list(values) for key, values in extra["history"].items()}
        self.hypergradient_norms = {key: list(values) for key, values in extra["hypergradient_norms"].items()}

    def save_checkpoint(self, path: Union[str, Path]) -> None:
        """Write every level's state and the run's progress to ``path`` atomically."""
        meta = self.checkpoint_state()
        meta.extra = self._progress_record()
        meta.save(path)

    def load_checkpoint(self, path: Union[str, Path]) -> None:
        """Continue from the checkpoint at ``path``; raise BackendError if it belongs to another plan."""
        meta = load_checkpoint(path, self.plan)
        self.restore(meta)
        self._restore_progress(meta.extra)
        logger.info("resumed problem '%s' at macro step %d from %s", self.plan.problem, self.macro_step_index, path)

    def run(
        self,
        *,
        progress: bool = True,
        callback: Optional[Callable[[int, "Executor"], None]] = None,
        checkpoint: Optional[Union[str, Path]] = None,
        checkpoint_every: int = 1,
        resume: bool = False,
    ) -> RunResult:
        """Run the remaining macro steps and return the final variables and histories.

        With ``checkpoint``, the state is saved there every ``checkpoint_every``
        macro steps and at the end. With ``resume`` and an existing file, the
        run continues from it and ends with the same result as an uninterrupted run.
        """
        if checkpoint_every < 1:
            raise BackendError(f"checkpoint_every must be a positive integer, got {checkpoint_every}")
        if resume and checkpoint is not None and Path(checkpoint).exists():
            self.load_checkpoint(checkpoint)
        started = time.perf_counter()
        logger.info(
            "running problem '%s' on the local backend from macro step %d of %d",
            self.plan.problem,
            self.macro_step_index,
            self.plan.macro_steps,
        )
        steps = range(self.macro_step_index, self.plan.macro_steps)
        bar = tqdm(steps, desc=self.plan.problem, unit="step", disable=not progress)
        for index in bar:
            self.macro_step()
            bar.set_postfix({self.root: f"{self.history[self.root][-1]:.4f}"})
            logger.debug("macro step %d: %s objective %.6g", index, self.root, self.history[self.root][-1])
            if callback is not None:
                callback(index, self)
            last = index + 1 == self.plan.macro_steps
            if checkpoint is not None and ((index + 1) % checkpoint_every == 0 or last):
                self.save_checkpoint(checkpoint)
        seconds = time.perf_counter() - started
        logger.info("finished problem '%s' in %.2f s", self.plan.problem, seconds)
        return self.result(seconds)
