"""Parse .chronos spec files into a ProblemSpec.

The grammar is chronos.lark next to this module, parsed with lark's LALR
parser. Every error is a ChronosError with the file, line and column: a
SpecSyntaxError when the text does not parse, a SpecError when it parses but
does not make sense. Lark's own exceptions never reach the caller.
"""

from __future__ import annotations

import functools
import importlib.resources
import logging
import os
from pathlib import Path
from typing import Union

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from chronos.errors import Location, SpecError
from chronos.spec import ProblemSpec

from .build import SpecBuilder
from chronos.gc_pause import collector_paused

from .source import SourceText
from .syntax_errors import syntax_error

__all__ = ["parse", "parse_file"]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = importlib.resources.files(__package__).joinpath("chronos.lark").read_text(encoding="utf-8")
    # The basic lexer (not the contextual one) keeps keywords reserved in every
    # state, so that 'level' inside an unclosed block is read as the keyword.
    return Lark(grammar, parser="lalr", lexer="basic", maybe_placeholders=True)


def parse(text: str, file: str = "<string>", *, check: bool = True) -> ProblemSpec:
    """Parse the text of a .chronos spec into a ProblemSpec.

    Args:
        text: the spec source.
        file: the name that error locations and spans report.
        check: also run ``ProblemSpec.validate_spec()`` (unknown names, steps
            that are not positive, unknown optimizers and the like).

    Raises:
        SpecSyntaxError: the text does not follow the grammar.
        SpecError: the text parses, but an entry or value is invalid.
    """
    source = SourceText(file, text)
    with collector_paused():
        spec = SpecBuilder(source).build(_parse_tree(source))
    logger.debug("parsed %s: %d levels, %d data sets", file, len(spec.levels), len(spec.data))
    if check:
        try:
            spec.validate_spec()
        except SpecError as error:
            raise _with_source_line(error, source) from None
    return spec


def parse_file(path: Union[str, os.PathLike[str]], *, check: bool = True) -> ProblemSpec:
    """Read a UTF-8 .chronos file and parse it; see :func:`parse`.

    Raises:
        SpecError: the file cannot be read or is not UTF-8, or its spec is invalid.
    """
    file = os.fspath(path)
    try:
        data = Path(file).read_bytes()
    except OSError as error:
        raise SpecError(f"cannot read spec file '{file}': {error.strerror or error}") from error
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SpecError(
            f"spec file '{file}' is not valid UTF-8 (byte 0x{data[error.start]:02x})",
            location=_byte_location(file, data, error.start),
            hint="save the file as UTF-8",
        ) from None
    return parse(text, file, check=check)


def _parse_tree(source: SourceText) -> Tree:
    try:
        return _lark().parse(source.text)
    except UnexpectedInput:
        pass
    # Parse again, keeping every token, so that the error can describe the
    # blocks and parentheses left open. Valid specs skip this slower path.
    return _parse_tree_with_history(source)


def _parse_tree_with_history(source: SourceText) -> Tree:
    parser = _lark().parse_interactive(source.text)
    history: list[Token] = []
    try:
        for token in parser.iter_parse():
            history.append(token)
        return parser.feed_eof(history[-1] if history else None)
    except UnexpectedInput as error:
        # iter_parse yields a token before feeding it, so a rejected token is last.
        if history and getattr(error, "token", None) is history[-1]:
            history.pop()
        accepts = _accepts(parser, error)
        terminals = {terminal.name: terminal for terminal in _lark().terminals}
        raise syntax_error(error, source, history, accepts, terminals) from None


def _accepts(parser, error: UnexpectedInput) -> set[str]:
    accepts = parser.accepts()
    return accepts if accepts else set(getattr(error, "expected", None) or ())


def _with_source_line(error: SpecError, source: SourceText) -> SpecError:
    """Return ``error`` with its location's line taken from the parsed text.

    The semantic checks see spans only, and the text may not be in a file.
    """
    location = error.location
    if location is None or location.source_line is not None or type(error) is not SpecError:
        return error
    located = source.location(location.line, location.column)
    return SpecError(error.message, location=located, level=error.level, edge=error.edge, hint=error.hint)


def _byte_location(file: str, data: bytes, offset: int) -> Location:
    before = data[:offset].decode("utf-8", errors="replace")
    line = before.count("\n") + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    text = data.split(b"\n")[line - 1].decode("utf-8", errors="replace")
    return Location(file, line, column, text)
