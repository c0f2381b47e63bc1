"""Convert expression subtrees of a .chronos parse tree to spec nodes, and locate tokens.

Expressions are numbers, strings, booleans, names, ``name.attr`` and calls with
positional and keyword arguments. A keyword argument's value carries the span
of its keyword, so that an error about ``lrr = 0.1`` points at ``lrr``.
"""

from __future__ import annotations

import math
import re
from typing import Optional, Union

from lark import Token, Tree

from chronos.errors import Location, SpecError, SpecSyntaxError
from chronos.spec import Bool, Call, Expr, Name, Number, SourceSpan, String

from .source import SourceText

__all__ = ["ExpressionBuilder", "Node"]

_INTEGER = re.compile(r"[+-]?\d+")
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}

Node = Union[Tree, Token]


class ExpressionBuilder:
    """Convert expressions of one spec's parse tree, raising SpecError at the offending token."""

    def __init__(self, source: SourceText) -> None:
        self.source = source

    def _integer(self, entry: str, value: Node, level: str) -> Number:
        if value.data == "number":
            number = self._number(value.children[0])
            if isinstance(number.value, int):
                return number
        raise self._wrong_kind(entry, "an integer", value, level)

    def _plain_value(self, value: Expr, context: str) -> Union[int, float, str, bool]:
        """Return a number, string or boolean as is and a bare name as its text."""
        if isinstance(value, (Number, String, Bool)):
            return value.value
        if isinstance(value, Name) and value.attr is None:
            return value.name
        raise SpecError(
            f"{context} must be a number, a string, true, false or a name, found a {value.kind}",
            location=self._expr_location(value),
        )

    def _expr(self, node: Tree) -> Expr:
        kind = node.data
        token = node.children[0]
        if kind == "number":
            return self._number(token)
        if kind == "string":
            return String(value=self._unquote(token), span=self._span(token))
        if kind == "boolean":
            return Bool(value=str(token) == "true", span=self._span(token))
        if kind == "name":
            return Name(name=str(token), span=self._span(token))
        if kind == "attribute":
            return Name(name=str(token), attr=str(node.children[1]), span=self._span(token))
        return self._call(node)

    def _call(self, node: Tree) -> Call:
        callee, arguments = node.children
        func = self._unquote(callee) if callee.type == "STRING" else str(callee)
        args: list[Expr] = []
        kwargs: dict[str, Expr] = {}
        for argument in arguments.children:
            if argument is None:
                continue
            if argument.data != "keyword":
                if kwargs:
                    raise SpecSyntaxError(
                        "a positional argument follows a keyword argument",
                        location=self._node_location(argument),
                        hint="put positional arguments before keyword arguments",
                    )
                args.append(self._expr(argument))
                continue
            key, value = argument.children
            if str(key) in kwargs:
                raise SpecError(f"keyword '{key}' is given twice", location=self._location(key))
            kwargs[str(key)] = self._expr(value).model_copy(update={"span": self._span(key)})
        return Call(func=func, args=args, kwargs=kwargs, span=self._span(callee))

    def _number(self, token: Token) -> Number:
        text = str(token)
        try:
            value: Union[int, float] = int(text) if _INTEGER.fullmatch(text) else float(text)
        except ValueError:
            # int() rejects integers of more than sys.get_int_max_str_digits() digits.
            value = math.inf
        if isinstance(value, float) and not math.isfinite(value):
            abbreviated = text if len(text) <= 24 else f"{text[:20]}..."
            raise SpecError(f"number {abbreviated} is too large", location=self._location(token))
        return Number(value=value, span=self._span(token))

    def _unquote(self, token: Token) -> str:
        def replace(match: re.Match[str]) -> str:
            escaped = match.group(1)
            if escaped not in _ESCAPES:
                raise SpecSyntaxError(
                    f"invalid escape '\\{escaped}' in a string",
                    location=self.source.location(token.line, token.column + 1 + match.start()),
                    hint='the escapes are \\", \\\\, \\n, \\t and \\r',
                )
            return _ESCAPES[escaped]

        return _ESCAPE.sub(replace, str(token)[1:-1])

    # Locations and descriptions.

    def _span(self, token: Token) -> SourceSpan:
        return self.source.span(token.line, token.column)

    def _location(self, token: Token) -> Location:
        return self.source.location(token.line, token.column)

    def _node_location(self, node: Node) -> Location:
        while isinstance(node, Tree):
            node = node.children[0]
        return self._location(node)

    def _expr_location(self, expr: Expr) -> Optional[Location]:
        span = expr.span
        return None if span is None else self.source.location(span.line, span.column)

    def _describe(self, node: Tree) -> str:
        token = node.children[0]
        if node.data == "number":
            return f"the number {token}"
        if node.data == "string":
            return f"the string {token}"
        if node.data == "boolean":
            return f"'{token}'"
        if node.data == "name":
            return f"the name '{token}'"
        if node.data == "attribute":
            return f"'{token}.{node.children[1]}'"
        return f"the call {token}(...)"

    def _wrong_kind(self, entry: str, expected: str, value: Tree, level: Optional[str]) -> SpecError:
        return SpecError(
            f"{entry} must be {expected}, found {self._describe(value)}",
            location=self._node_location(value),
            level=level,
        )
