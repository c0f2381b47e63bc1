"""Build a ProblemSpec from the lark parse tree of a .chronos file.

The grammar accepts any ``NAME = value`` entry inside a level. This module
checks the entry names and the kinds of their values (an integer for steps, a
call for the optimizer), because the IR's fields are typed. Checks that need
the whole spec, such as known names and positive steps, are in
chronos.spec_checks.

A node's span is where its value starts (the string of a loss, the name of an
optimizer), and a level's span is its name.
"""

from __future__ import annotations

from typing import Any, Callable, Union

from lark import Token, Tree

from chronos.errors import SpecError, did_you_mean
from chronos.spec import (
    BackendSpec,
    DataSpec,
    Expr,
    HypergradientSpec,
    LevelSpec,
    LossSpec,
    Name,
    Number,
    OptimizerSpec,
    ParamSpec,
    ProblemSpec,
)

from .expressions import ExpressionBuilder, Node

__all__ = ["LEVEL_ENTRIES", "SpecBuilder"]

LEVEL_ENTRIES = ("param", "module", "loss", "optimizer", "steps", "hypergradient", "staleness", "warm_start")

# Shorthands for implicit differentiation with a given solver: neumann(iters = 20).
_SOLVER_SHORTHANDS = ("cg", "neumann")


class SpecBuilder(ExpressionBuilder):
    """Convert one parse tree to a ProblemSpec, raising SpecError at the offending token."""

    def build(self, tree: Tree) -> ProblemSpec:
        fields: dict[str, Any] = {"data": [], "levels": []}
        first_lines: dict[str, int] = {}
        for node in tree.children:
            kind = node.data
            if kind == "problem":
                fields["name"] = str(node.children[0])
            elif kind == "data":
                fields["data"].append(self._data(node))
            elif kind == "level":
                fields["levels"].append(self._level(node))
            elif kind == "report":
                token = node.children[0]
                self._set_once("report", token, first_lines)
                fields["report"] = self._unquote(token)
                fields["report_span"] = self._span(token)
            elif kind == "backend":
                self._set_once("backend", node.children[0], first_lines)
                fields["backend"] = self._backend(node)
        # A pseudo-file name such as "<string>" is not a path, so the spec records no source.
        file = self.source.file
        is_path = not (file.startswith("<") and file.endswith(">"))
        return ProblemSpec(source=file if is_path else None, **fields)

    # Top-level statements.

    def _set_once(self, statement: str, token: Token, first_lines: dict[str, int]) -> None:
        if statement in first_lines:
            raise SpecError(
                f"duplicate '{statement}' statement: {statement} is already set at line "
                f"{first_lines[statement]}",
                location=self._location(token),
                hint=f"keep one '{statement}' statement",
            )
        first_lines[statement] = token.line

    def _data(self, node: Tree) -> DataSpec:
        name, ref = node.children
        return DataSpec(name=str(name), ref=self._unquote(ref), span=self._span(name))

    def _backend(self, node: Tree) -> BackendSpec:
        name, arguments = node.children[0], (node.children[1] if len(node.children) > 1 else None)
        options: dict[str, Union[int, float, str, bool]] = {}
        if arguments is not None:
            call = self._call(Tree("call", [name, arguments]))
            if call.args:
                raise SpecError(
                    f"backend '{name}' takes keyword options only",
                    location=self._expr_location(call.args[0]),
                    hint="write backend torch(world_size = 2)",
                )
            for key, value in call.kwargs.items():
                options[key] = self._plain_value(value, f"backend option '{key}'")
        return BackendSpec(name=str(name), options=options, span=self._span(name))

    # Levels.

    def _level(self, node: Tree) -> LevelSpec:
        name_token, *entries = node.children
        level = str(name_token)
        fields: dict[str, Any] = {"name": level, "params": [], "span": self._span(name_token)}
        first_lines: dict[str, int] = {}
        for entry in entries:
            if entry.data == "param":
                fields["params"].append(self._param(entry, level))
                continue
            key_token, value = entry.children[0], entry.children[1]
            per = entry.children[2] if len(entry.children) > 2 else None
            key = self._entry_key(key_token, level, first_lines)
            if per is not None and key != "steps":
                raise SpecError(
                    f"'per' follows steps only, not {key}",
                    location=self._location(per.children[0]),
                    level=level,
                    hint="write steps = 10 per upper_level",
                )
            fields.update(_SETTERS[key](self, value, level))
            if per is not None:
                fields["per"] = str(per.children[0])
                fields["per_span"] = self._span(per.children[0])
        return LevelSpec(**fields)

    def _entry_key(self, token: Token, level: str, first_lines: dict[str, int]) -> str:
        key = str(token)
        if key not in _SETTERS:
            raise SpecError(
                f"unknown entry '{key}'{did_you_mean(key, LEVEL_ENTRIES)}",
                location=self._location(token),
                level=level,
                hint=f"a level takes the entries {', '.join(LEVEL_ENTRIES)}",
            )
        if key in first_lines:
            raise SpecError(
                f"duplicate entry '{key}': it is already set at line {first_lines[key]}",
                location=self._location(token),
                level=level,
                hint=f"keep one '{key}' entry",
            )
        first_lines[key] = token.line
        return key

    def _param(self, node: Tree, level: str) -> ParamSpec:
        name, value = node.children
        if value.data == "attribute":
            # param w = meta.w0: the level starts every solve from an upper level's variable.
            return ParamSpec(name=str(name), init=self._expr(value), span=self._span(name))
        if value.data != "call" or value.children[0].type != "NAME":
            raise SpecError(
                f"param '{name}' must be initialized by a call or an upper variable, found {self._describe(value)}",
                location=self._node_location(value),
                level=level,
                hint=f"write param {name} = zeros(10), with zeros, ones, randn or full(value, shape...), or UPPER.VARIABLE",
            )
        return ParamSpec(name=str(name), init=self._call(value), span=self._span(name))

    def _module(self, value: Node, level: str) -> dict[str, Any]:
        if value.data != "string":
            raise self._wrong_kind("module", 'a quoted "module:function" string', value, level)
        token = value.children[0]
        return {"module": self._unquote(token), "module_span": self._span(token)}

    def _loss(self, value: Node, level: str) -> dict[str, Any]:
        if value.data == "string":
            token, arguments = value.children[0], []
        elif value.data == "call" and value.children[0].type == "STRING":
            token, call = value.children[0], self._call(value)
            arguments = [self._loss_argument(arg, level) for arg in call.args]
            if call.kwargs:
                raise SpecError(
                    "loss takes level and data names as positional arguments, not keywords",
                    location=self._expr_location(next(iter(call.kwargs.values()))),
                    level=level,
                )
        else:
            raise self._wrong_kind("loss", 'a call of a quoted "module:function" string', value, level)
        return {"loss": LossSpec(ref=self._unquote(token), args=arguments, span=self._span(token))}

    def _loss_argument(self, argument: Expr, level: str) -> Name:
        if isinstance(argument, Name) and argument.attr is None:
            return argument
        found = f"'{argument.dotted()}'" if isinstance(argument, Name) else f"a {argument.kind}"
        raise SpecError(
            f"a loss argument must be a level or data name, found {found}",
            location=self._expr_location(argument),
            level=level,
            hint='write loss = "pkg.module:function"(upper_level, data_name)',
        )

    def _optimizer(self, value: Node, level: str) -> dict[str, Any]:
        if value.data == "name":
            token = value.children[0]
            return {"optimizer": OptimizerSpec(name=str(token), span=self._span(token))}
        if value.data != "call" or value.children[0].type != "NAME":
            raise self._wrong_kind("optimizer", "a call such as sgd(lr = 0.1)", value, level)
        call = self._call(value)
        if call.args:
            raise SpecError(
                f"optimizer '{call.func}' takes keyword arguments only",
                location=self._expr_location(call.args[0]),
                level=level,
                hint=f"write {call.func}(lr = 0.1)",
            )
        kwargs: dict[str, Union[Number, Name]] = {}
        for key, argument in call.kwargs.items():
            if not isinstance(argument, (Number, Name)):
                raise SpecError(
                    f"optimizer keyword '{key}' must be a number or a level.variable name, "
                    f"found a {argument.kind}",
                    location=self._expr_location(argument),
                    level=level,
                )
            kwargs[key] = argument
        return {"optimizer": OptimizerSpec(name=call.func, kwargs=kwargs, span=call.span)}

    def _steps(self, value: Node, level: str) -> dict[str, Any]:
        number = self._integer("steps", value, level)
        return {"steps": number.value, "steps_span": number.span}

    def _staleness(self, value: Node, level: str) -> dict[str, Any]:
        number = self._integer("staleness", value, level)
        return {"staleness": number.value, "staleness_span": number.span}

    def _warm_start(self, value: Node, level: str) -> dict[str, Any]:
        if value.data != "boolean":
            raise self._wrong_kind("warm_start", "true or false", value, level)
        return {"warm_start": str(value.children[0]) == "true"}

    def _hypergradient(self, value: Node, level: str) -> dict[str, Any]:
        if value.data == "name":
            token = value.children[0]
            method, positional, keywords, span = str(token), [], {}, self._span(token)
        elif value.data == "call" and value.children[0].type == "NAME":
            call = self._call(value)
            method, positional, keywords, span = call.func, call.args, call.kwargs, call.span
        else:
            raise self._wrong_kind("hypergradient", "a method such as implicit(cg, iters = 20)", value, level)

        options: dict[str, Union[int, float, str]] = {}
        if positional:
            options["solver"] = self._solver_argument(method, positional, level)
        if method in _SOLVER_SHORTHANDS:
            method, options["solver"] = "implicit", method
        for key, argument in keywords.items():
            if key in options:
                raise SpecError(
                    f"hypergradient option '{key}' is given twice",
                    location=self._expr_location(argument),
                    level=level,
                )
            options[key] = self._plain_value(argument, f"hypergradient option '{key}'")
        if method == "implicit":
            options.setdefault("solver", "cg")
        return {"hypergradient": HypergradientSpec(method=method, options=options, span=span)}

    def _solver_argument(self, method: str, positional: list[Expr], level: str) -> str:
        """Return the solver of implicit(cg, ...), the one positional argument a method takes."""
        if method != "implicit":
            offending = positional[0]
        elif len(positional) > 1:
            offending = positional[1]
        else:
            offending = positional[0]
            if isinstance(offending, Name) and offending.attr is None:
                return offending.name
        if method == "implicit":
            message = "implicit takes one positional argument, the solver name (cg or neumann)"
        else:
            message = f"hypergradient method '{method}' takes keyword options only"
        raise SpecError(
            message,
            location=self._expr_location(offending),
            level=level,
            hint="write implicit(cg, iters = 20) or unrolled(last = 10)",
        )


_SETTERS: dict[str, Callable[[SpecBuilder, Tree, str], dict[str, Any]]] = {
    "module": SpecBuilder._module,
    "loss": SpecBuilder._loss,
    "optimizer": SpecBuilder._optimizer,
    "steps": SpecBuilder._steps,
    "hypergradient": SpecBuilder._hypergradient,
    "staleness": SpecBuilder._staleness,
    "warm_start": SpecBuilder._warm_start,
}
