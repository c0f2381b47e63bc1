"""Pause Python's cyclic garbage collector around allocation-heavy work."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

__all__ = ["collector_paused"]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Turn off Python's cyclic garbage collector for the block, unless it is off already.

    Parsing and compiling allocate many small objects that stay alive and
    form few reference cycles. With the collector on, each full collection
    rescans every live object (over 150,000 once torch is imported), and a
    spec of 10,000 levels triggers several, which took about half of its
    parse time. Cycles created in the block are collected by the next
    collection after it.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
