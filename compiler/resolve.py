"""Import ``module:function`` references, once each, with errors at the spec location.

References resolve against ``sys.path`` plus the current working directory and
the directory of the spec file, so ``"examples.hyperclean:noisy_train"`` works
from the repository root the way ``python -m`` would.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence

from chronos.errors import CompileError, Location, did_you_mean

__all__ = ["check_arity", "import_ref", "search_path"]

logger = logging.getLogger(__name__)


@contextmanager
def search_path(extra: Sequence[str]) -> Iterator[None]:
    """Put ``extra`` directories (and the working directory) on ``sys.path`` for the block."""
    added = []
    for directory in [os.getcwd(), *extra]:
        directory = os.path.abspath(directory)
        if directory not in sys.path:
            sys.path.insert(0, directory)
            added.append(directory)
    try:
        yield
    finally:
        for directory in added:
            if directory in sys.path:
                sys.path.remove(directory)


def import_ref(ref: str, *, location: Optional[Location] = None, role: str = "function") -> Any:
    """Import ``module:qualname`` and return the object; raise CompileError saying why it failed."""
    module_name, sep, qualname = ref.partition(":")
    if not sep or not module_name or not qualname:
        raise CompileError(
            f"invalid reference \"{ref}\": expected \"module:function\"",
            location=location,
            hint='write the module path, a colon, then the name, e.g. "examples.ridge:inner_loss"',
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or module_name
        raise CompileError(
            f"cannot import module '{module_name}' for {role} \"{ref}\": no module named '{missing}'",
            location=location,
            hint="run from the directory that contains the package, or install it",
        ) from error
    except Exception as error:  # the user's module raised while importing
        raise CompileError(
            f"importing module '{module_name}' for {role} \"{ref}\" raised "
            f"{type(error).__name__}: {error}",
            location=location,
        ) from error
    target: Any = module
    for part in qualname.split("."):
        if not hasattr(target, part):
            names = [name for name in dir(target) if not name.startswith("_")]
            raise CompileError(
                f"module '{module_name}' has no attribute '{qualname}'{did_you_mean(part, names)}",
                location=location,
            )
        target = getattr(target, part)
    logger.debug("resolved %s", ref)
    return target


def check_arity(
    function: Callable[..., Any],
    count: int,
    *,
    ref: str,
    described: str,
    location: Optional[Location] = None,
) -> None:
    """Raise CompileError unless ``function`` accepts ``count`` positional arguments.

    ``described`` lists the arguments in words for the message, e.g.
    "the level itself, classifier, clean_val".
    """
    if not callable(function):
        raise CompileError(f"\"{ref}\" is not callable", location=location)
    try:
        signature = _signature(function)
    except (TypeError, ValueError):
        return  # builtins and C functions: nothing to check before the call
    try:
        signature.bind(*range(count))
    except TypeError:
        raise CompileError(
            f"\"{ref}\" has signature {signature} but is called with {count} argument(s): {described}",
            location=location,
            hint="make the function take exactly these arguments, in this order",
        ) from None


def _signature(function: Callable[..., Any]) -> inspect.Signature:
    # A large spec checks the same few functions once per level, and
    # inspect.signature costs tens of microseconds a call.
    try:
        hash(function)
    except TypeError:
        return inspect.signature(function)
    return _cached_signature(function)


# NOTE: a function whose __signature__, __wrapped__ or __code__ is replaced
# after its first check keeps the signature seen first.
@functools.lru_cache(maxsize=1024)
def _cached_signature(function: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(function)
