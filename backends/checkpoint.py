"""Checkpoints of a running plan: every level's variables, optimizer state and version.

A checkpoint also stores the macro step reached, the histories and a digest
of the plan (without source locations), so that resuming refuses a
checkpoint written for another plan. Files are written atomically by
:meth:`chronos.core.MetaState.save`: a crash leaves the previous checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Union

from chronos.compiler.plan import Plan
from chronos.core import MetaState
from chronos.errors import BackendError, ChronosError

__all__ = ["load_checkpoint", "plan_digest"]


def plan_digest(plan: Plan) -> str:
    """SHA-256 of the plan's JSON without source locations."""
    return hashlib.sha256(plan.without_sources().to_json().encode("utf-8")).hexdigest()


def load_checkpoint(path: Union[str, Path], plan: Plan) -> MetaState:
    """Read the checkpoint at ``path`` and check that it belongs to ``plan``."""
    try:
        meta = MetaState.load(path)
    except ChronosError as error:
        raise BackendError(f"cannot resume: {error.message}", hint="run without --resume to start over") from error
    digest = meta.extra.get("plan_digest")
    if digest != plan_digest(plan):
        raise BackendError(
            f"checkpoint {path} was written for a different plan than problem '{plan.problem}'",
            hint="resume with the plan that wrote it, or delete the checkpoint to start over",
        )
    missing = sorted({level.name for level in plan.levels} - set(meta.levels))
    if missing:
        raise BackendError(f"checkpoint {path} has no state for level(s) {missing}")
    for level in plan.levels:
        _check_variables(path, level, meta.levels[level.name].params)
    if not isinstance(meta.extra.get("macro_step"), int) or not isinstance(meta.extra.get("history"), dict):
        raise BackendError(f"checkpoint {path} lacks the run's progress (macro step and histories)")
    if not 0 <= meta.extra["macro_step"] <= plan.macro_steps:
        raise BackendError(
            f"checkpoint {path} is at macro step {meta.extra['macro_step']}, outside the plan's "
            f"0 to {plan.macro_steps}"
        )
    return meta


def _check_variables(path, level, params) -> None:
    """Raise BackendError if the checkpoint's variables of ``level`` differ from the plan's in name, shape or dtype."""
    for variable in level.variables:
        if not variable.trainable:
            continue
        tensor = params.get(variable.name)
        if tensor is None:
            raise BackendError(f"checkpoint {path} has no variable '{variable.name}'", level=level.name)
        if list(tensor.shape) != variable.shape or str(tensor.dtype).removeprefix("torch.") != variable.dtype:
            raise BackendError(
                f"checkpoint {path} contains '{variable.name}' as {tuple(tensor.shape)} {tensor.dtype}, but the "
                f"plan declares {tuple(variable.shape)} {variable.dtype}",
                level=level.name,
            )
