"""Three-level data hyper-cleaning: sample weights and an L2 strength above the classifier.

Levels, top to bottom (``examples/hyperclean_l2.chronos``):

* ``l2``: ``log_l2``, the log of the classifier's L2 strength, tuned on the
  clean validation set;
* ``weights``: one logit per training sample, tuned on the same set and
  kept across ``l2`` steps (``warm_start``);
* ``classifier``: trained from its fixed initialization on the weighted
  noisy training loss plus ``exp(log_l2) / 2 * ||theta||^2``.

The same problem written with decorators is :func:`compile_decorated`. The
hypergradient of ``log_l2`` is the total derivative through the classifier
and through the weights' own trajectory; a test checks it against central
finite differences.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch

import chronos
from examples import hyperclean
from examples._hyperclean_report import write_report

__all__ = ["compile_decorated", "regularized_train_loss", "report"]


def regularized_train_loss(classifier: Any, weights: Any, l2: Any, noisy_train: Any) -> torch.Tensor:
    """Weighted cross entropy of the noisy training set plus exp(l2.log_l2) / 2 * ||theta||^2."""
    data_term = hyperclean.weighted_train_loss(classifier, weights, noisy_train)
    squared_norm = sum(value.pow(2).sum() for value in classifier.params.values())
    return data_term + 0.5 * torch.exp(l2.log_l2).reshape(()) * squared_norm


def report(result: Any, output_dir: Optional[Union[str, Path]]) -> dict[str, Any]:
    """Report as the two-level job does, plus the learned L2 strength; write ``metrics.json`` and a PNG."""
    log_l2 = float(result.variables["l2"]["log_l2"])
    print(f"learned L2 strength: exp({log_l2:.3f}) = {torch.exp(torch.tensor(log_l2)):.4g}")
    metrics = write_report(
        result.variables["weights"]["logits"],
        result.history.get("weights", []),
        result.variables.get("classifier"),
        output_dir,
    )
    metrics["log_l2"] = log_l2
    return metrics


@chronos.level(name="l2", params={"log_l2": chronos.full(-6.0)}, optimizer=chronos.adam(lr=0.3), steps=3)
def l2_validation_loss(own, classifier, clean_val):
    """Top objective: validation cross entropy of the trained classifier."""
    return hyperclean.validation_loss(own, classifier, clean_val)


@chronos.level(
    name="weights",
    params={"logits": chronos.zeros("noisy_train.size")},
    optimizer=chronos.adam(lr=0.3, eps=0.001),
    steps=6,
    under="l2",
    warm_start=True,
)
def weights_validation_loss(own, classifier, clean_val):
    """Middle objective: the same validation cross entropy, with respect to the sample weights."""
    return hyperclean.validation_loss(own, classifier, clean_val)


@chronos.level(
    name="classifier",
    module="examples.hyperclean:make_classifier",
    optimizer=chronos.sgd(lr=0.5),
    steps=40,
    under="weights",
)
def classifier_loss(own, weights, l2, noisy_train):
    """Bottom objective: the regularized weighted training loss."""
    return regularized_train_loss(own, weights, l2, noisy_train)


def compile_decorated() -> chronos.Plan:
    """Compile the decorated form of the three-level problem."""
    return chronos.compile(
        [l2_validation_loss, weights_validation_loss, classifier_loss],
        data={"noisy_train": hyperclean.noisy_train, "clean_val": hyperclean.clean_val},
        name="hyperclean_l2",
        report=report,
    )
