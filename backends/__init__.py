"""Backends that execute a plan: ``local`` here; ``torch`` and ``horovod`` adapters."""

from __future__ import annotations

from typing import Callable

from chronos.errors import BackendError

__all__ = ["get_backend"]


def get_backend(name: str) -> Callable:
    """Return ``run(plan, progress=...) -> RunResult`` for the backend called ``name``."""
    if name == "local":
        from chronos.backends.local import run_local

        return run_local
    if name == "horovod":
        try:
            import horovod.torch  # noqa: F401
        except ImportError:
            raise BackendError(
                "backend 'horovod' needs the horovod package, which is not installed",
                hint="Horovod 0.28.1 does not build against torch 2.1 or newer; use 'backend torch' "
                "or 'backend local'",
            ) from None
    if name in ("torch", "horovod"):
        raise BackendError(
            f"backend '{name}' is not available in this version of Chronos",
            hint="use 'backend local'",
        )
    raise BackendError(f"unknown backend '{name}'", hint="use 'backend local'")
