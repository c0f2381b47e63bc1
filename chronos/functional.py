"""Functional module state: a module's variables as flat dicts of tensors.

Levels hold their variables outside the module and call it with
``torch.func.functional_call``, so an inner trajectory is a chain of new
tensors that autograd can differentiate, and the module itself is never
modified in place.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import Tensor, nn
from torch.func import functional_call

from chronos.errors import ChronosError

__all__ = ["call_module", "split_module"]


def split_module(module: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Split a module's state into ``(params, constants)``, keyed by qualified name.

    ``params`` are the parameters with ``requires_grad=True``: trainable
    variables, returned as detached copies that require grad. ``constants`` are
    the buffers and the frozen parameters (``requires_grad=False``), returned as
    detached copies that do not require grad. Levels pass constants through
    unchanged and never differentiate them. Because both are copies, updating a
    variable never changes the module. Tied parameters appear once, under their
    first name.
    """
    params: dict[str, Tensor] = {}
    constants: dict[str, Tensor] = {}
    for name, param in module.named_parameters():
        if param.requires_grad:
            params[name] = param.detach().clone().requires_grad_(True)
        else:
            constants[name] = param.detach().clone()
    for name, buffer in module.named_buffers():
        constants[name] = buffer.detach().clone()
    return params, constants


def call_module(
    module: nn.Module,
    params: Mapping[str, Tensor],
    constants: Mapping[str, Tensor],
    *args: Any,
    **kwargs: Any,
) -> Any:
    """Call ``module(*args, **kwargs)`` with its state replaced by ``params`` and ``constants``.

    Names missing from both dicts fall back to the module's own tensors.

    Raises:
        ChronosError: a name is in both ``params`` and ``constants``.
    """
    overlap = sorted(set(params) & set(constants))
    if overlap:
        raise ChronosError(
            f"variables {', '.join(overlap)} are given both as params and as constants of "
            f"{type(module).__name__}; pass each name in one dict only"
        )
    return functional_call(module, {**constants, **params}, args, kwargs)
