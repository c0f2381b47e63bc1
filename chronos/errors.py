"""Exceptions raised by Chronos, one root with a subclass per pipeline stage.

Every error carries structured fields (the spec location, the level, the edge)
so that tools can act on them, and renders them into one readable message:
where the problem is, what was expected and how to fix it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

__all__ = [
    "BackendError",
    "ChronosError",
    "CompileError",
    "HypergradientError",
    "Location",
    "PlanError",
    "SpecError",
    "SpecSyntaxError",
    "did_you_mean",
]


@dataclass(frozen=True)
class Location:
    """A position in a spec file or Python source: 1-based line and column."""

    file: str
    line: int
    column: int
    source_line: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    def excerpt(self) -> str:
        """Return the source line with a caret under the column, or '' if unknown."""
        text = self.source_line
        if text is None:
            text = _read_line(self.file, self.line)
        if text is None:
            return ""
        text = text.rstrip("\n").expandtabs(1)
        return f"    {text}\n    {' ' * max(self.column - 1, 0)}^"


def _read_line(file: str, line: int) -> Optional[str]:
    try:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if 1 <= line <= len(lines):
        return lines[line - 1]
    return None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest candidate, or ''."""
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


class ChronosError(Exception):
    """Root of every error Chronos raises on purpose.

    Attributes:
        message: what failed, in one sentence.
        location: where in the spec (or Python source) the cause is, if known.
        level: the level involved, if any.
        edge: the ``(upper, lower)`` edge involved, if any.
        hint: what to do about it.
    """

    stage = "chronos"

    def __init__(
        self,
        message: str,
        *,
        location: Optional[Location] = None,
        level: Optional[str] = None,
        edge: Optional[tuple[str, str]] = None,
        hint: Optional[str] = None,
    ) -> None:
        self.message = message
        self.location = location
        self.level = level
        self.edge = edge
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        """Format the error as the user sees it: place, message, excerpt, hint."""
        head = f"{self.location}: " if self.location is not None else ""
        where = []
        if self.level is not None:
            where.append(f"level '{self.level}'")
        if self.edge is not None:
            where.append(f"edge {self.edge[0]} -> {self.edge[1]}")
        prefix = f"[{', '.join(where)}] " if where else ""
        parts = [f"{head}{prefix}{self.message}"]
        if self.location is not None:
            excerpt = self.location.excerpt()
            if excerpt:
                parts.append(excerpt)
        if self.hint:
            parts.append(f"hint: {self.hint}")
        return "\n".join(parts)


class SpecError(ChronosError):
    """A spec that parses but does not make sense: unknown names, bad values."""

    stage = "spec"


class SpecSyntaxError(SpecError):
    """A spec that does not parse. ``expected`` lists the tokens, in words."""

    def __init__(self, message: str, *, expected: Iterable[str] = (), **kwargs) -> None:
        self.expected = tuple(expected)
        super().__init__(message, **kwargs)


class CompileError(ChronosError):
    """A spec the compiler rejects: cycles, bad timescales, failed imports."""

    stage = "compile"


class PlanError(ChronosError):
    """A plan file that does not load or validate."""

    stage = "plan"


class BackendError(ChronosError):
    """A failure while executing a plan: the level and step are named."""

    stage = "backend"


class HypergradientError(ChronosError):
    """A hypergradient that cannot be computed: a diverging series, a bad shape."""

    stage = "hypergradient"
