"""The text of a spec being parsed, and locations in it for error messages."""

from __future__ import annotations

from dataclasses import dataclass, field

from chronos.errors import Location
from chronos.spec import SourceSpan


@dataclass(frozen=True)
class SourceText:
    """A spec's text and the file name its locations report."""

    file: str
    text: str
    lines: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # Split on "\n" only, as lark counts lines; str.splitlines also splits on
        # form feeds and other separators that the grammar treats as spaces.
        lines = [line.removesuffix("\r") for line in self.text.split("\n")]
        object.__setattr__(self, "lines", lines)

    def line(self, number: int) -> str | None:
        """Return line ``number`` (1-based), or None past the end."""
        if 1 <= number <= len(self.lines):
            return self.lines[number - 1]
        return None

    def location(self, line: int, column: int) -> Location:
        """Return the location of a 1-based line and column, with the line for the caret."""
        return Location(self.file, line, column, self.line(line))

    def span(self, line: int, column: int) -> SourceSpan:
        return SourceSpan(file=self.file, line=line, column=column)

    def end(self) -> tuple[int, int]:
        """Return the line and column just after the last non-blank character."""
        for number in range(len(self.lines), 0, -1):
            stripped = self.lines[number - 1].rstrip()
            if stripped:
                return number, len(stripped) + 1
        return 1, 1
