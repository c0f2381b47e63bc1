"""The classifier of the hyper-cleaning example and its training settings.

The settings below are the ones in ``examples/hyperclean.chronos``. The report
trains its comparison classifiers with them, and a test checks that the spec
and these constants agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from examples._hyperclean_data import NUM_CLASSES, NUM_FEATURES

__all__ = [
    "HIDDEN_UNITS",
    "INIT_SEED",
    "INNER_LR",
    "INNER_STEPS",
    "OUTER_EPS",
    "OUTER_LR",
    "OUTER_STEPS",
    "accuracy",
    "make_classifier",
    "train_classifier",
    "weighted_cross_entropy",
]

HIDDEN_UNITS = 32
INIT_SEED = 0
INNER_STEPS = 100  # full-batch gradient steps per outer step
INNER_LR = 0.5
OUTER_STEPS = 30
OUTER_LR = 0.3
# Adam's eps is at the upper end of the per-sample hypergradients (median
# 4e-4, 90th percentile 1e-3 at the first outer step, seed 0). Samples with a
# small hypergradient therefore move less than with the default 1e-8, which
# makes Adam a sign update. In a plain-torch prototype of this loop (seeds 0-3)
# the mean AUROC of the weights rose from 0.93 with eps = 1e-8 to 0.96.
OUTER_EPS = 1e-3


def make_classifier() -> nn.Module:
    """Build the classifier 64 -> 32 (tanh) -> 10 with a fixed initialization.

    The weights and biases are drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    the ``nn.Linear`` default, with a generator seeded by ``INIT_SEED``, so
    every call returns the same initial parameters whatever the global seed.
    In a plain-torch prototype (seeds 0-4) this network closed 91% of the
    accuracy gap on average, against 80% for logistic regression (seeds 0-3).
    """
    model = nn.Sequential(
        nn.Linear(NUM_FEATURES, HIDDEN_UNITS),
        nn.Tanh(),
        nn.Linear(HIDDEN_UNITS, NUM_CLASSES),
    )
    generator = torch.Generator().manual_seed(INIT_SEED)
    with torch.no_grad():
        for layer in (model[0], model[2]):
            bound = 1.0 / math.sqrt(layer.in_features)
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
    return model


def weighted_cross_entropy(scores: torch.Tensor, labels: torch.Tensor, sample_weights: torch.Tensor) -> torch.Tensor:
    """Return mean_i w_i * CE_i for class scores [n, 10], labels [n] and weights [n], as a 0-d tensor.

    The mean divides by n, not by the sum of the weights, so lowering every
    weight also shortens the inner steps. Dividing by the sum measured worse in
    a plain-torch prototype (gap closed 0.61 against 0.87 with a linear
    classifier, seed 0).
    """
    losses = F.cross_entropy(scores, labels, reduction="none")
    return (sample_weights * losses).mean()


def train_classifier(
    x: torch.Tensor,
    y: torch.Tensor,
    sample_weights: torch.Tensor,
    *,
    steps: int = INNER_STEPS,
    lr: float = INNER_LR,
) -> nn.Module:
    """Train a fresh classifier by full-batch gradient descent on the weighted cross entropy.

    These are the inner settings of the bilevel problem (plain SGD from the
    fixed initialization), so the report compares classifiers trained the same way.
    """
    model = make_classifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    weights = sample_weights.detach()
    for _ in range(steps):
        optimizer.zero_grad()
        weighted_cross_entropy(model(x), y, weights).backward()
        optimizer.step()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Return the fraction of samples whose highest-scoring class is the label."""
    return float((model(x).argmax(dim=1) == y).float().mean())
