"""Objectives, data and module factories that the generated compile-time specs reference.

The compile-time benchmark (benchmarks.compile_time) writes specs whose
``module:function`` references point here, so that every reference imports and
passes the compiler's arity check. Each objective returns a scalar computed
from the variables of the level itself and of the levels it takes, so that
tracing finds an edge's reads as it would in a real problem.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["chain_loss", "features", "inner_loss", "leaf_loss", "make_head", "root_loss", "targets"]

SAMPLES = 16
WIDTH = 4


def features() -> torch.Tensor:
    """Sixteen samples of four features, fixed by a seeded generator."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(SAMPLES, WIDTH, generator=generator)


def targets() -> torch.Tensor:
    """Sixteen targets, one per sample of :func:`features`."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn(SAMPLES, generator=generator)


def make_head() -> nn.Module:
    """A linear layer from the feature width to one output, for module levels."""
    return nn.Linear(WIDTH, 1)


def _mean_square(level) -> torch.Tensor:
    """Sum over a level's trainable variables (a module level's parameters too) of their mean square."""
    return sum(tensor.pow(2).mean() for tensor in level.params.values())


def root_loss(own, *lowers_and_data) -> torch.Tensor:
    """Top objective: fit the lower levels' variables to the root's, one term per lower level.

    The arguments are the lower levels, in the spec's order, then the data set;
    the spec fixes how many lower levels the root has.
    """
    *lowers, data = lowers_and_data
    fit = sum((own.x.mean() - _mean_square(lower)).pow(2) for lower in lowers)
    return fit + 1e-3 * data.pow(2).mean()


def inner_loss(own, upper, *lowers) -> torch.Tensor:
    """Middle objective: stay close to the upper level and pull each lower level towards zero."""
    return (own.x - upper.x.mean()).pow(2).mean() + sum(_mean_square(lower) for lower in lowers)


def leaf_loss(own, upper, data) -> torch.Tensor:
    """Bottom objective with a fixed arity: the level, its upper level and the targets."""
    return _mean_square(own) + (upper.x.mean() - data.mean()).pow(2)


def chain_loss(own, upper, lower) -> torch.Tensor:
    """Objective of a level in the middle of a chain: it reads the level above and the level below."""
    return (own.x - upper.x).pow(2).mean() + lower.x.pow(2).mean()
