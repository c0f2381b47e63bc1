"""The systems under comparison, one module each, behind the interface of :mod:`benchmarks.systems.base`."""

from benchmarks.systems.base import SYSTEMS, MethodUnsupported, System, SystemUnavailable, load_system

__all__ = ["SYSTEMS", "MethodUnsupported", "System", "SystemUnavailable", "load_system"]
