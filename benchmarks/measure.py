"""Wall-clock timing and peak memory of one benchmark worker process.

Peak memory on the CPU is the increase of the process's resident set size
(RSS) over a baseline taken after the warm-up step. tracemalloc only tracks
allocations made through Python's allocator, and torch allocates tensor
storage with its own C++ allocator, so tracemalloc would miss almost every tensor. RSS counts
them. Each (system, case) runs in a fresh worker process (see
``benchmarks.worker``), so one system's freed-but-cached pages never count
against another.

Before the baseline, glibc's ``malloc_trim(0)`` hands freed heap pages back to
the system, so that memory freed during set-up and the warm-up step and still
cached by the allocator does not hide part of the measured steps' allocations.
Cached pages can still be reused: in the benchmark run, systems doing the same
work differed by up to about 1 MiB.

The baseline: Linux resets the RSS high-water mark (``VmHWM``) when "5" is
written to ``/proc/self/clear_refs``. After the reset the high-water mark is
the current RSS, and at the end ``VmHWM`` minus that baseline is the peak
increase caused by the measured steps alone. Where the reset is not allowed
the fallback is ``ru_maxrss`` at the end minus the RSS at the baseline, which
overstates the peak when set-up briefly used more memory than the steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

__all__ = ["PeakMemory", "Timing", "time_calls"]

logger = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_KIB = 1024


def _status_kib(field: str) -> Optional[int]:
    """Return a ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``) in KiB, None off Linux."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    library = ctypes.util.find_library("c")
    if library is None:
        return
    try:
        ctypes.CDLL(library).malloc_trim(0)
    except (OSError, AttributeError) as error:  # not glibc
        logger.debug("malloc_trim is not available: %s", error)


def _reset_high_water_mark() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError as error:
        logger.debug("could not reset the RSS high-water mark: %s", error)
        return False
    return True


class PeakMemory:
    """The peak RSS increase, in bytes, between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self.method = ""
        self._baseline_kib = 0
        self._reset = False

    def start(self) -> None:
        gc.collect()
        _trim_heap()
        self._reset = _reset_high_water_mark()
        self._baseline_kib = _status_kib("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def stop(self) -> int:
        """Return the peak increase in bytes (0 if RSS never rose above the baseline)."""
        if self._reset and (peak := _status_kib("VmHWM")) is not None:
            self.method = "VmHWM after clear_refs"
        else:
            # ru_maxrss is in KiB on Linux.
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.method = "ru_maxrss"
        return max(peak - self._baseline_kib, 0) * _KIB


@dataclass
class Timing:
    """Seconds per call of the timed repetitions."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def minimum(self) -> float:
        return min(self.seconds)


def time_calls(function: Callable[[], object], repeat: int) -> Timing:
    """Call ``function`` ``repeat`` times and return the wall-clock seconds of each call."""
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return Timing(seconds)
