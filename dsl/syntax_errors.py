"""Turn lark's parse errors into SpecSyntaxError messages written in words.

A message names what was found, what was expected and the token before it,
for example ``expected '=' after the name 'steps', found the number 30``. An
unclosed level block also names the line of its opening '{'.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr, TerminalDef

from chronos.errors import SpecSyntaxError
from .source import SourceText

__all__ = ["syntax_error"]

# Messages list expected values first, then punctuation and keywords, then ends.
_VALUE_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": 'a quoted "module:function" string',
    "TRUE": "'true'",
    "FALSE": "'false'",
}
_END_WORDS = {"_NL": "end of line", "$END": "end of file"}

_KEYWORDS = {"PROBLEM", "DATA", "REPORT", "LEVEL", "BACKEND", "PARAM", "PER", "TRUE", "FALSE"}

# Keywords that start a top-level statement: meeting one inside a level block
# means that the block was not closed.
_STATEMENT_KEYWORDS = {"PROBLEM", "DATA", "REPORT", "LEVEL", "BACKEND"}

# Keywords followed by the name they declare, for "after the level name 'x'".
_DECLARING_KEYWORDS = {
    "PROBLEM": "problem",
    "DATA": "data",
    "LEVEL": "level",
    "PARAM": "param",
    "BACKEND": "backend",
}


def syntax_error(
    error: UnexpectedInput,
    source: SourceText,
    history: Sequence[Token],
    accepts: Iterable[str],
    terminals: dict[str, TerminalDef],
) -> SpecSyntaxError:
    """Return the SpecSyntaxError for a lark error.

    ``history`` contains the tokens the parser accepted before the error, and
    ``accepts`` the terminal names it would have accepted in their place.
    """
    accepts = set(accepts)
    expected = _expected_words(accepts, history, terminals)
    if isinstance(error, UnexpectedCharacters):
        return _unexpected_character(error, source, history, expected)
    token = error.token if isinstance(error, UnexpectedToken) else Token("$END", "")
    return _unexpected_token(token, source, history, accepts, expected)


def _unexpected_token(
    token: Token,
    source: SourceText,
    history: Sequence[Token],
    accepts: set[str],
    expected: list[str],
) -> SpecSyntaxError:
    if token.type == "$END":
        line, column = source.end()
    else:
        line, column = token.line, token.column
    location = source.location(line, column)
    found = _describe_token(token)
    blocks = _open_blocks(history)

    if blocks and (token.type == "$END" or token.type in _STATEMENT_KEYWORDS):
        name, brace_line = blocks[-1]
        message = (
            f"level '{name}' is not closed: the '{{' at line {brace_line} has no "
            f"matching '}}' before {found}"
        )
        hint = f"add '}}' after the last entry of level '{name}'"
        return SpecSyntaxError(message, location=location, expected=["'}'"], hint=hint)
    if token.type == "RBRACE" and not blocks:
        message = "unmatched '}': no level block is open here"
        return SpecSyntaxError(message, location=location, expected=expected)
    parenthesis = _open_parenthesis(history)
    if parenthesis is not None and token.type != "RPAR" and parenthesis.line < line:
        message = (
            f"the '(' at line {parenthesis.line}, column {parenthesis.column} has no matching ')' "
            f"before {found}"
        )
        return SpecSyntaxError(message, location=location, expected=expected, hint="add the missing ')'")
    hint = None
    if token.type in _KEYWORDS and "NAME" in accepts:
        hint = f"'{token}' is a keyword and cannot be used as a name"
    message = f"expected {_join(expected)} {_describe_context(history)}, found {found}"
    return SpecSyntaxError(message, location=location, expected=expected, hint=hint)


def _unexpected_character(
    error: UnexpectedCharacters,
    source: SourceText,
    history: Sequence[Token],
    expected: list[str],
) -> SpecSyntaxError:
    location = source.location(error.line, error.column)
    char = source.text[error.pos_in_stream]
    if char == '"':
        message = "unterminated string: the closing '\"' is missing on this line"
        hint = 'a string must end on the line where it starts, as in "pkg.module:function"'
        return SpecSyntaxError(message, location=location, expected=expected, hint=hint)
    message = f"unexpected character {char!r} {_describe_context(history)}"
    if expected:
        message += f", expected {_join(expected)}"
    hint = None
    if char.isalpha():
        hint = "names use the ASCII letters, digits and '_'"
    return SpecSyntaxError(message, location=location, expected=expected, hint=hint)


def _expected_words(
    accepts: Iterable[str],
    history: Sequence[Token],
    terminals: dict[str, TerminalDef],
) -> list[str]:
    names = set(accepts)
    # A blank line is always allowed at the start of a line, so listing it adds nothing.
    if not history or history[-1].type == "_NL":
        names.discard("_NL")
    values = [word for name, word in _VALUE_WORDS.items() if name in names]
    ends = [word for name, word in _END_WORDS.items() if name in names]
    others = names - _VALUE_WORDS.keys() - _END_WORDS.keys()
    return values + sorted(_terminal_word(name, terminals) for name in others) + ends


def _terminal_word(name: str, terminals: dict[str, TerminalDef]) -> str:
    terminal = terminals.get(name)
    if terminal is not None and isinstance(terminal.pattern, PatternStr):
        return f"'{terminal.pattern.value}'"
    return name.lower()


def _describe_token(token: Token) -> str:
    kind = token.type
    if kind == "$END":
        return "end of file"
    if kind == "_NL":
        return "end of line"
    if kind == "NAME":
        return f"the name '{token}'"
    if kind == "NUMBER":
        return f"the number {token}"
    if kind == "STRING":
        return f"the string {token}"
    return f"'{token}'"


def _describe_context(history: Sequence[Token]) -> str:
    if all(token.type == "_NL" for token in history):
        return "at the start of the spec"
    last = history[-1]
    if last.type == "_NL":
        return "at the start of the line"
    if last.type == "NAME" and len(history) >= 2 and history[-2].type in _DECLARING_KEYWORDS:
        return f"after the {_DECLARING_KEYWORDS[history[-2].type]} name '{last}'"
    return f"after {_describe_token(last)}"


def _open_blocks(history: Sequence[Token]) -> list[tuple[str, int]]:
    """Return (level name, line of its '{') for each block still open, innermost last."""
    blocks: list[tuple[str, int]] = []
    for index, token in enumerate(history):
        if token.type == "LBRACE":
            name = str(history[index - 1]) if index > 0 else "?"
            blocks.append((name, token.line))
        elif token.type == "RBRACE" and blocks:
            blocks.pop()
    return blocks


def _open_parenthesis(history: Sequence[Token]) -> Optional[Token]:
    """Return the innermost '(' that is still open, or None."""
    opened: list[Token] = []
    for token in history:
        if token.type == "LPAR":
            opened.append(token)
        elif token.type == "RPAR" and opened:
            opened.pop()
    return opened[-1] if opened else None


def _join(words: Sequence[str]) -> str:
    if not words:
        return "nothing more"
    if len(words) == 1:
        return words[0]
    return f"{', '.join(words[:-1])} or {words[-1]}"
