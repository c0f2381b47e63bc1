"""The result of a run: final variables, per-level histories and hypergradient norms."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import torch

__all__ = ["RunResult"]


@dataclass
class RunResult:
    """The outcome of executing a plan.

    Attributes:
        problem: the problem name from the spec.
        variables: level -> variable -> final tensor (detached; module levels
            hold their parameters and buffers under ``state_dict`` names).
        history: level -> objective value after each of that level's
            recorded steps. A root level records one value per macro step;
            a lower level records its final inner objective per solve.
        hypergradient_norms: ``"upper->lower"`` -> L2 norm of the
            hypergradient per macro step.
        versions: level -> number of updates applied.
        seconds: wall time of the run.
    """

    problem: str
    variables: dict[str, dict[str, torch.Tensor]]
    history: dict[str, list[float]] = field(default_factory=dict)
    hypergradient_norms: dict[str, list[float]] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict:
        """Return a JSON-ready summary: last objective values, versions and time."""
        return {
            "problem": self.problem,
            "final_objective": {level: values[-1] for level, values in self.history.items() if values},
            "versions": dict(self.versions),
            "seconds": round(self.seconds, 3),
        }

    def save_summary(self, path: Union[str, Path]) -> Path:
        """Write the summary, histories and norms as JSON, atomically (a temporary file, then a rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {**self.summary(), "history": self.history, "hypergradient_norms": self.hypergradient_norms}
        temporary = path.with_name(f".{path.name}.tmp")
        try:
            temporary.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        return path
