"""The imperative bilevel layer: inner solves, outer steps, versions and checkpoints.

Compiled plans run on these classes, and they can be used by hand::

    inner = InnerProblem(train_loss, sgd(lr=0.1))
    outer = OuterOptimizer({"lam": lam0}, adam(lr=0.01), val_loss, val_batch)
    method = ImplicitDifferentiation(outer)            # from chronos.solver
    params, trajectory = inner.solve(outer.params, init, 100, loader, track_last=method.track_last)
    method.step(method.compute_hypergradient(trajectory, inner))

Variables are flat ``dict[str, Tensor]``. Objectives take their own variables
first: ``inner_objective(params, outer_params, batch)`` and
``outer_objective(outer_params, inner_params, data)``, each returning a 0-d
tensor.

Note on versions: every variable group (a level's variables) carries an
integer version, 0 before the first update and +1 per update. A reader records
the version it used; its staleness is the newest version minus that one, so
staleness 0 means it read the newest values.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor
from tqdm import tqdm

from chronos.errors import ChronosError, HypergradientError
from chronos.optim import DifferentiableOptimizer, OptimizerState

__all__ = [
    "InnerProblem",
    "LevelState",
    "MetaState",
    "OuterOptimizer",
    "Trajectory",
    "VersionTracker",
]

logger = logging.getLogger(__name__)

Params = dict[str, Tensor]
InnerObjective = Callable[[Mapping[str, Tensor], Mapping[str, Tensor], Any], Tensor]
OuterObjective = Callable[[Mapping[str, Tensor], Mapping[str, Tensor], Any], Tensor]
DataSource = Union[Iterable[Any], Callable[[int], Any]]


@dataclass
class Trajectory:
    """The result of :meth:`InnerProblem.solve` that hypergradient methods read.

    ``final_params`` carry the autograd graph of the last ``track_last`` steps
    (all steps when ``track_last`` is None, none when it is 0). ``outer_params``
    are the very tensors the solve read, so autograd reaches them. ``losses``
    contains the inner objective before each step. ``last_batch`` is the batch of
    the last step, which implicit differentiation evaluates the inner Hessian on.
    """

    final_params: Params
    final_state: OptimizerState
    init_params: Params
    outer_params: dict[str, Tensor]
    num_steps: int
    track_last: Optional[int]
    losses: list[float]
    outer_version: Optional[int] = None
    last_batch: Any = None

    def tracked_steps(self) -> int:
        """Return how many of the last steps the graph of ``final_params`` covers."""
        if self.track_last is None:
            return self.num_steps
        return min(self.track_last, self.num_steps)


class _BatchStream:
    """Batches by step: calls a callable, or iterates an iterable and restarts it at its end."""

    def __init__(self, source: DataSource, level: str) -> None:
        self._source = source
        self._level = level
        self._iterator: Optional[Iterator[Any]] = None
        if not hasattr(source, "__iter__") and not callable(source):
            raise ChronosError(
                f"the data loader must be an iterable of batches or a callable step -> batch, "
                f"got {type(source).__name__}",
                level=level,
                hint="for full-batch training pass itertools.repeat(batch)",
            )
        if isinstance(source, (tuple, Tensor)) and (
            isinstance(source, Tensor) or (source and all(isinstance(item, Tensor) for item in source))
        ):
            # Iterating (inputs, targets) would give two "batches": inputs, then targets.
            raise ChronosError(
                f"the data loader is a {type(source).__name__} of tensors, which would be iterated "
                "item by item as separate batches",
                level=level,
                hint="for full-batch training pass itertools.repeat(batch)",
            )

    def get(self, step: int) -> Any:
        if not hasattr(self._source, "__iter__"):
            return self._source(step)  # type: ignore[operator]
        if self._iterator is None:
            self._iterator = iter(self._source)  # type: ignore[arg-type]
        try:
            return next(self._iterator)
        except StopIteration:
            self._iterator = iter(self._source)  # type: ignore[arg-type]
        try:
            return next(self._iterator)
        except StopIteration:
            raise ChronosError(
                f"the data loader yielded no batch at inner step {step}: it is empty or an "
                f"iterator that is already exhausted",
                level=self._level,
                hint="pass a list, a DataLoader or itertools.repeat(batch), which can be iterated again",
            ) from None


def _check_scalar(value: Any, description: str, level: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise ChronosError(
            f"the {description} must return a 0-d tensor, got {type(value).__name__}", level=level
        )
    if value.dim() != 0:
        raise ChronosError(
            f"the {description} must return a 0-d tensor, got shape {tuple(value.shape)}",
            level=level,
            hint="reduce the loss with .mean() or .sum()",
        )
    if not value.is_floating_point():
        raise ChronosError(f"the {description} must return a floating-point tensor, got {value.dtype}", level=level)
    return value


def _grad_or_zeros(
    loss: Tensor, params: Mapping[str, Tensor], *, create_graph: bool, retain_graph: Optional[bool] = None
) -> Params:
    """Differentiate ``loss`` with respect to ``params``; variables with no path get zeros."""
    keys = [k for k in params if params[k].requires_grad]
    found: dict[str, Optional[Tensor]] = {}
    if keys and loss.requires_grad:
        grads = torch.autograd.grad(
            loss,
            [params[k] for k in keys],
            create_graph=create_graph,
            retain_graph=retain_graph,
            allow_unused=True,
        )
        found = dict(zip(keys, grads))
    # Zeros only where no gradient came back, to spare an allocation per variable and step.
    return {k: found[k] if found.get(k) is not None else torch.zeros_like(p) for k, p in params.items()}


def _as_leaves(params: Mapping[str, Tensor]) -> Params:
    """Return detached copies that require grad: the start of a new graph."""
    return {k: p.detach().requires_grad_(True) for k, p in params.items()}


def _detach_tree(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach()
    if isinstance(value, dict):
        return {k: _detach_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_detach_tree(v) for v in value)
    return value


def _check_variables(params: Mapping[str, Tensor], description: str, level: str) -> None:
    for key, value in params.items():
        if not isinstance(value, Tensor):
            raise ChronosError(f"{description} '{key}' must be a tensor, got {type(value).__name__}", level=level)
        if not value.is_floating_point():
            raise ChronosError(
                f"{description} '{key}' must be a floating-point tensor to be optimized, got {value.dtype}",
                level=level,
            )


class InnerProblem:
    """The lower level of a bilevel problem: an objective and a differentiable optimizer.

    ``objective(params, outer_params, batch)`` returns the inner loss as a 0-d
    tensor. ``name`` is the level name used in errors and logs.
    """

    def __init__(
        self, objective: InnerObjective, optimizer: DifferentiableOptimizer, *, name: str = "inner"
    ) -> None:
        self.objective = objective
        self.optimizer = optimizer
        self.name = name

    def evaluate(self, params: Mapping[str, Tensor], outer_params: Mapping[str, Tensor], data: Any) -> Tensor:
        """Return the inner objective, checked to be a 0-d floating-point tensor.

        Raises:
            ChronosError: the objective returned something else (the level is named).
        """
        return _check_scalar(self.objective(params, outer_params, data), "inner objective", self.name)

    def gradient(
        self,
        params: Mapping[str, Tensor],
        outer_params: Mapping[str, Tensor],
        data: Any,
        *,
        create_graph: bool = False,
    ) -> Params:
        """Return the gradient of the inner objective with respect to ``params``.

        Without ``create_graph`` the gradient is taken at detached copies of
        ``params`` and carries no graph. With it, ``params`` that require grad
        are used as they are, so the gradient is differentiable with respect to
        them and to ``outer_params``. Variables the objective does not read get
        zeros.
        """
        with torch.enable_grad():
            if create_graph:
                leaves = {k: p if p.requires_grad else p.detach().requires_grad_(True) for k, p in params.items()}
            else:
                leaves = _as_leaves(params)
            loss = self.evaluate(leaves, outer_params, data)
            return _grad_or_zeros(loss, leaves, create_graph=create_graph)

    def solve(
        self,
        outer_params: Mapping[str, Tensor],
        init_params: Mapping[str, Tensor],
        num_steps: int,
        data_loader: DataSource,
        *,
        track_last: Optional[int] = 0,
        init_state: Optional[OptimizerState] = None,
        outer_version: Optional[int] = None,
        progress: bool = False,
    ) -> tuple[Params, Trajectory]:
        """Run ``num_steps`` optimizer steps on the inner objective and return ``(params, trajectory)``.

        ``data_loader`` is an iterable of batches, iterated again from the start
        when it ends (``itertools.repeat(batch)`` for full batch), or a callable
        ``step -> batch``. Each solve starts a fresh iteration.

        ``track_last = K`` keeps the autograd graph of the last K steps, so the
        final params are a differentiable function of ``outer_params`` (and of
        ``init_params`` when K covers every step and they require grad). Earlier
        steps run detached, so memory grows with K, not with ``num_steps``.
        ``track_last=None`` keeps every step and ``track_last=0`` none: the final
        params then carry no graph and do not require grad. ``init_state`` (for
        example the ``final_state`` of an earlier trajectory) is used detached.

        Raises:
            ChronosError: invalid ``num_steps`` or ``track_last``, a non-scalar or
                non-finite inner objective, an empty data loader, or a missing
                outer variable read by the optimizer.
        """
        self._check_solve_args(num_steps, track_last)
        _check_variables(init_params, "inner variable", self.name)
        first_tracked = _first_tracked_step(num_steps, track_last)
        hyper = self.optimizer.resolve(outer_params, level=self.name)
        params: Params = dict(init_params) if first_tracked == 0 else _detach_tree(dict(init_params))
        # A warm-started state may carry the graph of an earlier solve; detaching it
        # keeps that graph (and its memory) out of this trajectory.
        state = _detach_tree(init_state) if init_state is not None else self.optimizer.init(params)
        stream = _BatchStream(data_loader, self.name)
        losses: list[float] = []
        batch: Any = None
        # The outer variables do not change during a solve: detach them once for the untracked steps.
        detached_outer = _detach_tree(dict(outer_params)) if first_tracked > 0 else {}
        detached_hyper = _detach_tree(dict(hyper)) if first_tracked > 0 else {}
        for step in tqdm(range(num_steps), desc=self.name, disable=not progress, leave=False):
            batch = stream.get(step)
            if step >= first_tracked:
                params, state, loss = self._tracked_step(params, state, outer_params, hyper, batch)
            else:
                params, state, loss = self._detached_step(params, state, detached_outer, detached_hyper, batch)
            losses.append(self._check_finite(loss, step))
        if track_last == 0:
            params = _detach_tree(params)
            state = _detach_tree(state)
        logger.debug("level %s: %s inner steps, last loss %s", self.name, num_steps, losses[-1:])
        trajectory = Trajectory(
            final_params=params,
            final_state=state,
            init_params=dict(init_params),
            outer_params=dict(outer_params),
            num_steps=num_steps,
            track_last=track_last,
            losses=losses,
            outer_version=outer_version,
            last_batch=batch,
        )
        return params, trajectory

    def _check_solve_args(self, num_steps: int, track_last: Optional[int]) -> None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ChronosError(f"num_steps must be a non-negative int, got {num_steps!r}", level=self.name)
        if track_last is not None and (
            isinstance(track_last, bool) or not isinstance(track_last, int) or track_last < 0
        ):
            raise ChronosError(
                f"track_last must be None (every step) or a non-negative int, got {track_last!r}",
                level=self.name,
            )

    def _check_finite(self, loss: Tensor, step: int) -> float:
        value = float(loss.detach())
        if value != value or value in (float("inf"), float("-inf")):
            raise ChronosError(
                f"the inner objective is {value} at inner step {step}",
                level=self.name,
                hint="lower the inner learning rate or check the data for inf and NaN",
            )
        return value

    def _tracked_step(
        self,
        params: Params,
        state: OptimizerState,
        outer_params: Mapping[str, Tensor],
        hyper: Mapping[str, Any],
        batch: Any,
    ) -> tuple[Params, OptimizerState, Tensor]:
        with torch.enable_grad():
            leaves = {k: p if p.requires_grad else p.detach().requires_grad_(True) for k, p in params.items()}
            loss = self.evaluate(leaves, outer_params, batch)
            grads = _grad_or_zeros(loss, leaves, create_graph=True)
            new_params, new_state = self.optimizer.update(leaves, grads, state, hyper)
        return new_params, new_state, loss

    def _detached_step(
        self,
        params: Params,
        state: OptimizerState,
        detached_outer: Mapping[str, Tensor],
        detached_hyper: Mapping[str, Any],
        batch: Any,
    ) -> tuple[Params, OptimizerState, Tensor]:
        """Take one step with no graph kept; ``detached_outer`` and ``detached_hyper`` carry no graph."""
        with torch.enable_grad():
            leaves = _as_leaves(params)
            loss = self.evaluate(leaves, detached_outer, batch)
            grads = _grad_or_zeros(loss, leaves, create_graph=False)
        with torch.no_grad():
            new_params, new_state = self.optimizer.update(_detach_tree(params), grads, state, detached_hyper)
        return new_params, new_state, loss


def _first_tracked_step(num_steps: int, track_last: Optional[int]) -> int:
    if track_last is None:
        return 0
    return max(num_steps - track_last, 0) if track_last > 0 else num_steps


class OuterOptimizer:
    """The upper level: its variables, optimizer, objective and data.

    ``objective(outer_params, inner_params, data)`` returns the outer loss as a
    0-d tensor. ``params`` are leaf tensors with ``requires_grad=True``, copied
    from the ones given; :meth:`step` replaces them by new leaves and increments
    ``version`` (0 before the first step).
    """

    def __init__(
        self,
        params: Mapping[str, Tensor],
        optimizer: DifferentiableOptimizer,
        objective: OuterObjective,
        data: Any,
        *,
        name: str = "outer",
    ) -> None:
        _check_variables(params, "outer variable", name)
        self.name = name
        self.params: Params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        self.optimizer = optimizer
        self.objective = objective
        self.data = data
        self.version = 0
        self.state: OptimizerState = optimizer.init(self.params)

    def evaluate(self, outer_params: Mapping[str, Tensor], inner_params: Mapping[str, Tensor]) -> Tensor:
        """Return the outer objective on ``self.data``, checked to be a 0-d floating-point tensor."""
        return _check_scalar(self.objective(outer_params, inner_params, self.data), "outer objective", self.name)

    def step(
        self, hypergradient: Mapping[str, Tensor], *, outer_params: Optional[Mapping[str, Tensor]] = None
    ) -> None:
        """Apply one optimizer update with ``hypergradient`` and increment ``version``.

        ``outer_params`` are the variables of the levels above, read by this
        level's optimizer through ``outer(...)`` hyperparameters, if any.

        Raises:
            ChronosError: a variable is missing from ``hypergradient``, has an
                unknown name, or has another shape or dtype than the variable
                (both are named).
            HypergradientError: a hypergradient entry contains inf or NaN.
        """
        grads = self._check_hypergradient(hypergradient)
        with torch.no_grad():
            hyper = self.optimizer.resolve(outer_params, level=self.name)
            current = {k: p.detach() for k, p in self.params.items()}
            new_params, new_state = self.optimizer.update(current, grads, self.state, _detach_tree(hyper))
        self.params = _as_leaves(new_params)
        self.state = new_state
        self.version += 1
        logger.debug("level %s: outer step to version %s", self.name, self.version)

    def _check_hypergradient(self, hypergradient: Mapping[str, Tensor]) -> Params:
        unknown = sorted(set(hypergradient) - set(self.params))
        if unknown:
            raise ChronosError(
                f"hypergradient has entries for unknown variables {', '.join(unknown)} "
                f"(variables: {', '.join(sorted(self.params))})",
                level=self.name,
            )
        grads: Params = {}
        for key, param in self.params.items():
            if key not in hypergradient:
                raise ChronosError(
                    f"hypergradient is missing variable '{key}' (shape {tuple(param.shape)})",
                    level=self.name,
                    hint="give every variable an entry, zeros where it has no gradient",
                )
            grads[key] = self._check_entry(key, param, hypergradient[key])
        return grads

    def _check_entry(self, key: str, param: Tensor, grad: Any) -> Tensor:
        if not isinstance(grad, Tensor):
            raise ChronosError(
                f"hypergradient of variable '{key}' must be a tensor, got {type(grad).__name__}", level=self.name
            )
        if grad.shape != param.shape:
            raise ChronosError(
                f"hypergradient of variable '{key}' has shape {tuple(grad.shape)}, but the "
                f"variable has shape {tuple(param.shape)}",
                level=self.name,
            )
        if grad.dtype != param.dtype:
            raise ChronosError(
                f"hypergradient of variable '{key}' has dtype {grad.dtype}, but the variable "
                f"has dtype {param.dtype}",
                level=self.name,
            )
        if not bool(torch.isfinite(grad).all()):
            raise HypergradientError(
                f"hypergradient of variable '{key}' contains inf or NaN",
                level=self.name,
                hint="lower the learning rates, or use fewer unrolled steps or another method",
            )
        return grad.detach()


class VersionTracker:
    """Versions of variable groups and the version each reader last used.

    A group's version is 0 until its first :meth:`bump`. Staleness of a reader
    for a group is the newest version minus the version it recorded.
    """

    def __init__(self) -> None:
        self._versions: dict[str, int] = {}
        self._reads: dict[str, dict[str, int]] = {}

    def bump(self, group: str) -> int:
        """Increment the version of ``group`` after an update and return the new version."""
        self._versions[group] = self._versions.get(group, 0) + 1
        return self._versions[group]

    def version(self, group: str) -> int:
        """Return the newest version of ``group`` (0 if it was never updated)."""
        return self._versions.get(group, 0)

    def record_read(self, reader: str, group: str, version: Optional[int] = None) -> None:
        """Record that ``reader`` used ``version`` of ``group`` (default: the newest).

        Raises:
            ChronosError: ``version`` is negative or newer than the newest version.
        """
        newest = self.version(group)
        used = newest if version is None else version
        if isinstance(used, bool) or not isinstance(used, int) or not 0 <= used <= newest:
            raise ChronosError(
                f"reader '{reader}' cannot have read version {version!r} of group '{group}': "
                f"versions run from 0 to {newest}"
            )
        self._reads.setdefault(reader, {})[group] = used

    def last_read(self, reader: str, group: str) -> Optional[int]:
        """Return the version of ``group`` that ``reader`` last recorded, or None."""
        return self._reads.get(reader, {}).get(group)

    def staleness(self, reader: str, group: str) -> int:
        """Return the newest version of ``group`` minus the version ``reader`` last used.

        Raises:
            ChronosError: ``reader`` never recorded a read of ``group``.
        """
        used = self.last_read(reader, group)
        if used is None:
            raise ChronosError(
                f"reader '{reader}' has not read group '{group}' yet",
                hint="call record_read(reader, group) when the reader uses the group",
            )
        return self.version(group) - used

    def state_dict(self) -> dict[str, Any]:
        """Return the versions and reads as plain dicts of ints."""
        return {"versions": dict(self._versions), "reads": {r: dict(g) for r, g in self._reads.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the versions and reads by those of :meth:`state_dict` output.

        Raises:
            ChronosError: a key is missing or a version is not a non-negative int.
        """
        versions = _int_map(state, "versions")
        reads = state.get("reads") if isinstance(state, Mapping) else None
        if not isinstance(reads, Mapping):
            raise ChronosError("version state is missing the 'reads' mapping")
        self._versions = versions
        self._reads = {reader: _int_map(reads, reader) for reader in reads}


def _int_map(state: Any, key: str) -> dict[str, int]:
    values = state.get(key) if isinstance(state, Mapping) else None
    if not isinstance(values, Mapping):
        raise ChronosError(f"version state is missing the '{key}' mapping")
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ChronosError(f"version state '{key}' has invalid version {value!r} for '{name}'")
    return dict(values)


@dataclass
class LevelState:
    """One level's checkpointed state: variables, constants, optimizer state and version."""

    params: Params
    constants: Params = field(default_factory=dict)
    optimizer_state: OptimizerState = field(default_factory=dict)
    version: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": _detach_tree(dict(self.params)),
            "constants": _detach_tree(dict(self.constants)),
            "optimizer_state": _detach_tree(dict(self.optimizer_state)),
            "version": self.version,
        }

    @classmethod
    def from_state_dict(cls, name: str, state: Any) -> "LevelState":
        """Build a level state from :meth:`state_dict` output.

        Raises:
            ChronosError: a key is missing (the level is named).
        """
        keys = ("params", "constants", "optimizer_state", "version")
        if not isinstance(state, Mapping) or any(k not in state for k in keys):
            raise ChronosError(f"checkpoint entry must have the keys {', '.join(keys)}", level=name)
        return cls(
            params=dict(state["params"]),
            constants=dict(state["constants"]),
            optimizer_state=dict(state["optimizer_state"]),
            version=int(state["version"]),
        )


_CHECKPOINT_FORMAT = 1


@dataclass
class MetaState:
    """Every level's state and the version tracker: the contents of a checkpoint."""

    levels: dict[str, LevelState] = field(default_factory=dict)
    versions: VersionTracker = field(default_factory=VersionTracker)
    # Executor progress (macro step, histories): plain ints, floats, strings, lists and dicts.
    extra: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        """Return plain dicts of detached tensors and ints, loadable with ``weights_only=True``."""
        return {
            "format": _CHECKPOINT_FORMAT,
            "levels": {name: level.state_dict() for name, level in self.levels.items()},
            "versions": self.versions.state_dict(),
            "extra": dict(self.extra),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace every level and the versions by those of :meth:`state_dict` output.

        Raises:
            ChronosError: the format is unknown or an entry is missing.
        """
        if not isinstance(state, Mapping) or state.get("format") != _CHECKPOINT_FORMAT:
            found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
            raise ChronosError(f"unknown checkpoint format {found!r}; expected {_CHECKPOINT_FORMAT}")
        if not isinstance(state.get("levels"), Mapping):
            raise ChronosError("checkpoint is missing the 'levels' mapping")
        levels = {name: LevelState.from_state_dict(name, s) for name, s in state["levels"].items()}
        versions = VersionTracker()
        versions.load_state_dict(state.get("versions", {}))
        self.levels = levels
        self.versions = versions
        self.extra = dict(state.get("extra", {}))

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write the state to ``path`` atomically.

        The state goes to a temporary file in the same directory, which then
        replaces ``path`` with ``os.replace``. If writing fails, the temporary
        file is removed and an existing ``path`` is left as it was.

        Raises:
            ChronosError: serialization or writing failed (the cause is kept).
        """
        target = Path(path)
        try:
            handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        except OSError as error:
            raise ChronosError(f"could not write checkpoint {target}: {error}") from error
        try:
            with os.fdopen(handle, "wb") as stream:
                torch.save(self.state_dict(), stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except BaseException as error:
            # BaseException too: an interrupt during the write must not leave the temporary file.
            Path(temporary).unlink(missing_ok=True)
            if not isinstance(error, Exception):
                raise
            raise ChronosError(f"could not write checkpoint {target}: {error}") from error
        logger.info("saved checkpoint %s", target)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "MetaState":
        """Read a state written by :meth:`save`, with every tensor on the CPU.

        Only tensors and plain data are unpickled (``weights_only=True``).

        Raises:
            ChronosError: the file is missing, unreadable or not a checkpoint.
        """
        try:
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
        except FileNotFoundError as error:
            raise ChronosError(f"checkpoint {path} not found") from error
        except Exception as error:
            # torch's own message suggests weights_only=False, which is unsafe advice for a
            # damaged or foreign file: name the failure without it.
            raise ChronosError(
                f"could not read checkpoint {path}: it is damaged or not a Chronos checkpoint "
                f"({type(error).__name__})"
            ) from error
        meta = cls()
        meta.load_state_dict(state)
        return meta


def as_list(trajectories: Union[Trajectory, Sequence[Trajectory]]) -> list[Trajectory]:
    """Return one trajectory or a sequence of them as a non-empty list.

    Raises:
        HypergradientError: the sequence is empty or contains something else.
    """
    items = [trajectories] if isinstance(trajectories, Trajectory) else list(trajectories)
    if not items:
        raise HypergradientError("no trajectories given: pass at least one solve result")
    for item in items:
        if not isinstance(item, Trajectory):
            raise HypergradientError(
                f"expected Trajectory objects from InnerProblem.solve, got {type(item).__name__}"
            )
    return items
