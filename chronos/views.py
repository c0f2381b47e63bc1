"""The view an objective receives for a level: its variables by name, and its module as a callable.

A compiled objective is called as ``loss(own, *args)``. Each level argument is
a :class:`LevelView`: ``view.logits`` is the tensor variable ``logits``,
``view(x)`` runs the level's module on ``x`` with the view's variables
(``torch.func.functional_call``), and ``view.params`` is the dict of trainable
variables. Views are rebuilt for every call, so an objective receives exactly the
tensors the hypergradient is taken through.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import nn

from chronos.errors import BackendError, did_you_mean

__all__ = ["LevelView"]


class LevelView:
    """Read-only view of one level's variables, optionally with its module.

    NOTE: the view returns the tensors themselves, not copies. An objective
    that changes one in place (``upper.x.mul_(2)`` under ``no_grad``, or the
    data it is given) changes the run without an error.
    """

    __slots__ = ("_level", "_params", "_constants", "_module", "_module_keys")

    def __init__(
        self,
        level: str,
        params: Mapping[str, torch.Tensor],
        constants: Optional[Mapping[str, torch.Tensor]] = None,
        module: Optional[nn.Module] = None,
        module_keys: Optional[frozenset[str]] = None,
    ) -> None:
        self._level = level
        self._params = params
        self._constants = constants or {}
        self._module = module
        # Variables of the module itself; other ``param`` variables of the level
        # are not passed to functional_call, which rejects unknown keys.
        self._module_keys = module_keys

    @property
    def params(self) -> Mapping[str, torch.Tensor]:
        return self._params

    @property
    def level(self) -> str:
        return self._level

    def __getattr__(self, name: str) -> torch.Tensor:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in self._params:
            return self._params[name]
        if name in self._constants:
            return self._constants[name]
        names = [*self._params, *self._constants]
        raise BackendError(
            f"level '{self._level}' has no variable '{name}'{did_you_mean(name, names)}; "
            f"its variables are {names}",
            level=self._level,
        )

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.__getattr__(name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._module is None:
            raise BackendError(
                f"level '{self._level}' has no module to call; its only variables are {list(self._params)}",
                level=self._level,
                hint="give the level a 'module = \"pkg.mod:factory\"' entry, or read its variables by name",
            )
        from chronos.functional import call_module

        params = self._params
        constants = self._constants
        if self._module_keys is not None:
            params = {key: value for key, value in params.items() if key in self._module_keys}
            constants = {key: value for key, value in constants.items() if key in self._module_keys}
        return call_module(self._module, params, constants, *args, **kwargs)

    def __repr__(self) -> str:
        shapes = {name: tuple(tensor.shape) for name, tensor in self._params.items()}
        return f"LevelView({self._level!r}, {shapes})"
