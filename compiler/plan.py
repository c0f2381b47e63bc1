"""The plan: what the compiler decided, as plain data that saves to JSON.

Design note, plans never hold code: a plan names every function it needs as a
``module:function`` reference and nothing else. Loading a plan imports nothing;
running it imports exactly the references it names. So a plan can be read,
diffed and explained on a machine that lacks the user's code, and executing a
plan file can never run code that the file itself carries.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, StrictBool, ValidationError, field_validator, model_validator

from chronos.errors import PlanError
from chronos.spec import SourceSpan

__all__ = [
    "SCHEMA_VERSION",
    "BackendPlan",
    "DataPlan",
    "EdgePlan",
    "HyperValue",
    "InitPlan",
    "LevelPlan",
    "LossPlan",
    "MethodPlan",
    "OptimizerPlan",
    "Plan",
    "ScheduleEntry",
    "VariablePlan",
]

SCHEMA_VERSION = 1


class _PlanNode(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataPlan(_PlanNode):
    name: str
    ref: str
    size: Optional[int] = None
    source: Optional[SourceSpan] = None


class InitPlan(_PlanNode):
    """Initializer of a ``param`` variable: ``zeros``, ``ones``, ``randn`` or ``full`` with ``value``."""

    kind: Literal["zeros", "ones", "full", "randn"]
    value: Optional[float] = None
    seed: Optional[int] = Field(default=None, ge=0, lt=2**63)

    @model_validator(mode="after")
    def _full_has_value(self) -> "InitPlan":
        if self.kind == "full" and self.value is None:
            raise ValueError("a 'full' initializer needs a 'value'")
        return self


class VariablePlan(_PlanNode):
    """One tensor of a level.

    ``init`` is None for module variables (the module factory sets them) and
    for variables with ``init_from``, the ``upper.variable`` whose current
    value starts every solve of the level.
    """

    name: str
    shape: list[NonNegativeInt]
    dtype: str = "float32"
    trainable: StrictBool = True
    init: Optional[InitPlan] = None
    init_from: Optional[str] = None

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        import torch

        if not isinstance(getattr(torch, value, None), torch.dtype):
            raise ValueError(f"'{value}' is not a torch dtype name such as float32")
        return value

    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


class HyperValue(_PlanNode):
    """An optimizer hyperparameter: a constant ``value`` or a ``ref`` to ``level.variable``."""

    value: Optional[float] = None
    ref: Optional[str] = None


class OptimizerPlan(_PlanNode):
    name: str
    hyperparameters: dict[str, HyperValue] = Field(default_factory=dict)


class LossPlan(_PlanNode):
    """The objective ``ref(own, *args)``; each arg is ``("level" | "data", name)``."""

    ref: str
    args: list[tuple[Literal["level", "data"], str]] = Field(default_factory=list)


class LevelPlan(_PlanNode):
    """One level. ``objective_bytes`` is the size of the tensors one evaluation of its
    objective creates, from the torch.fx trace (None when not traced)."""

    name: str
    variables: list[VariablePlan] = Field(default_factory=list)
    module: Optional[str] = None
    loss: LossPlan
    optimizer: OptimizerPlan
    steps: int
    per: Optional[str] = None
    period: int
    warm_start: StrictBool = False
    uppers: list[str] = Field(default_factory=list)
    lowers: list[str] = Field(default_factory=list)
    objective_bytes: Optional[int] = None
    source: Optional[SourceSpan] = None

    def state_bytes(self) -> int:
        """Bytes of this level's trainable variables (float32 assumed per element unless stated)."""
        return sum(v.numel() * _dtype_bytes(v.dtype) for v in self.variables if v.trainable)


def _dtype_bytes(dtype: str) -> int:
    return {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}.get(dtype, 4)


class MethodPlan(_PlanNode):
    """A resolved hypergradient method: ``unrolled`` (``last`` None = full) or ``implicit``."""

    name: Literal["unrolled", "implicit"]
    last: Optional[int] = None
    solver: Optional[Literal["cg", "neumann"]] = None
    iters: Optional[int] = None
    tol: Optional[float] = None
    alpha: Optional[float] = None
    damping: Optional[float] = None

    def describe(self) -> str:
        if self.name == "unrolled":
            return "unrolled" if self.last is None else f"unrolled(last = {self.last})"
        extra = f", alpha = {self.alpha}" if self.alpha is not None else ""
        extra += f", damping = {self.damping}" if self.damping else ""
        return f"implicit({self.solver}, iters = {self.iters}{extra})"


class EdgePlan(_PlanNode):
    """Edge ``upper -> lower``: the lower level's solution feeds the upper level's objective.

    ``kind`` is ``"per"`` for the edge that times and nests the lower level, and
    ``"reads"`` for an edge from a level further above whose variables the
    lower level reads directly.
    """

    upper: str
    lower: str
    kind: Literal["per", "reads"] = "per"
    method: MethodPlan
    requested: str = "auto"
    reason: str
    staleness: int = 0
    optimizer_reads: list[str] = Field(default_factory=list)
    init_reads: list[str] = Field(default_factory=list)
    objective_reads: list[str] = Field(default_factory=list)
    dependencies: Optional[str] = None
    unrolled_bytes: Optional[int] = None
    source: Optional[SourceSpan] = None


class ScheduleEntry(_PlanNode):
    """A level steps once every ``period`` ticks, ``count`` times per macro step."""

    level: str
    period: int
    count: int


class BackendPlan(_PlanNode):
    name: str = "local"
    options: dict[str, Union[int, float, str, bool]] = Field(default_factory=dict)


class Plan(_PlanNode):
    """A compiled problem. Save with :meth:`save`, load with :meth:`load`."""

    schema_version: int = SCHEMA_VERSION
    problem: str
    source: Optional[str] = None
    data: list[DataPlan] = Field(default_factory=list)
    levels: list[LevelPlan]
    edges: list[EdgePlan] = Field(default_factory=list)
    macro_steps: int
    ticks_per_macro_step: int
    schedule: list[ScheduleEntry] = Field(default_factory=list)
    backend: BackendPlan = Field(default_factory=BackendPlan)
    report: Optional[str] = None
    # The working directory of the compile: runs also search it for the
    # module:function references, so a plan runs from any directory.
    import_root: Optional[str] = None

    def import_directories(self) -> list[str]:
        """Return the directories that runs add to sys.path: the spec's directory and the compile's working directory."""
        directories = [os.path.dirname(os.path.abspath(self.source))] if self.source else []
        if self.import_root:
            directories.append(self.import_root)
        return directories

    def level(self, name: str) -> LevelPlan:
        for level in self.levels:
            if level.name == name:
                return level
        raise PlanError(f"plan has no level '{name}'; its levels are {[lv.name for lv in self.levels]}")

    def edge(self, upper: str, lower: str) -> EdgePlan:
        for edge in self.edges:
            if edge.upper == upper and edge.lower == lower:
                return edge
        raise PlanError(f"plan has no edge {upper} -> {lower}")

    def roots(self) -> list[LevelPlan]:
        return [level for level in self.levels if not level.uppers]

    def to_json(self) -> str:
        """Serialize with sorted keys so that equal plans give byte-equal files."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    def save(self, path: Union[str, Path]) -> Path:
        """Write the plan to ``path`` atomically: a reader sees the old file or the whole new one."""
        path = Path(path)
        text = self.to_json()
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "Plan":
        """Read and validate a plan file; raise PlanError naming the file and the bad field."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise PlanError(f"cannot read plan file {path}: {error}") from error
        return cls.from_json(text, origin=str(path))

    @classmethod
    def from_json(cls, text: str, origin: str = "<string>") -> "Plan":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise PlanError(
                f"{origin} is not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}"
            ) from None
        if not isinstance(raw, dict):
            raise PlanError(f"{origin} must hold a JSON object, found {type(raw).__name__}")
        _check_schema_version(raw, origin)
        try:
            plan = cls.model_validate(raw)
        except ValidationError as error:
            raise PlanError(f"{origin} is not a valid plan:\n{_format_validation(error)}") from None
        plan.validate_plan()
        return plan

    def validate_plan(self) -> None:
        """Check the plan's invariants; raise PlanError naming the level or edge that breaks one."""
        from chronos.compiler.validate_plan import check_plan

        check_plan(self)

    def without_sources(self) -> "Plan":
        """Return a copy without source locations and the compile directory, to compare plans from two front ends."""
        return Plan.model_validate(_strip_sources(self.model_dump()))


def _check_schema_version(raw: dict, origin: str) -> None:
    version = raw.get("schema_version")
    if version is None:
        raise PlanError(f"{origin} has no 'schema_version' field; is it a Chronos plan?")
    if version != SCHEMA_VERSION:
        raise PlanError(
            f"{origin} has plan schema version {version}, but this Chronos reads version "
            f"{SCHEMA_VERSION}",
            hint="recompile the spec with `chronos compile SPEC -o PLAN`",
        )


def _format_validation(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"  unknown field '{field}'")
        elif item["type"] == "missing":
            lines.append(f"  missing field '{field}'")
        else:
            lines.append(f"  field '{field}': {item['msg']}")
    return "\n".join(lines)


def _strip_sources(value):
    if isinstance(value, dict):
        return {key: (None if key in ("source", "import_root") else _strip_sources(item)) for key, item in value.items()}
    if isinstance(value, list):
        return [_strip_sources(item) for item in value]
    return value
