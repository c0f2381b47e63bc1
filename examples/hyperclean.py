"""Data hyper-cleaning on scikit-learn's digits: learn one weight per training sample.

``noise_ratio`` (default 0.4) of the 1,000 training labels are replaced by a
wrong class. The upper level ``weights`` has one logit per training sample;
the lower level ``classifier`` is trained from the same initialization at every
outer step on the cross entropy weighted by sigmoid(logit). The outer objective
is the cross entropy of the trained classifier on 200 clean validation samples,
so samples whose labels hurt validation get low weights.

Two ways to run it:

* compiled: ``chronos run examples/hyperclean.chronos --output out/hyperclean``
  (noise ratio from ``CHRONOS_HYPERCLEAN_NOISE``, seed from
  ``CHRONOS_HYPERCLEAN_SEED``, or :func:`configure`);
* imperative, with chronos.core and chronos.solver:
  ``python examples/hyperclean.py --noise-ratio 0.4 --outer-steps 20 --output out/hyperclean-imperative``.

Both end in :func:`report`, which retrains three classifiers (noisy labels,
clean samples only, learned weights), prints their test accuracies, the share of
the accuracy gap that the weights close and the AUROC of the weights for telling
clean from corrupted samples, and writes ``metrics.json`` and ``hyperclean.png``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

if __package__ in (None, ""):
    # Run as a script: make the repository root importable for `examples.*`.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from chronos.errors import ChronosError
from examples._hyperclean_data import Digits, configure, current_settings, load_split
from examples._hyperclean_model import (
    INNER_LR,
    INNER_STEPS,
    OUTER_EPS,
    OUTER_LR,
    OUTER_STEPS,
    make_classifier,
    weighted_cross_entropy,
)
from examples._hyperclean_report import write_report

__all__ = [
    "Digits",
    "clean_val",
    "configure",
    "main",
    "make_classifier",
    "noisy_train",
    "report",
    "run_imperative",
    "test_set",
    "validation_loss",
    "weighted_train_loss",
]

logger = logging.getLogger(__name__)

METHODS = ("unrolled", "implicit")


def noisy_train() -> Digits:
    """Return the 1,000 training samples with corrupted labels and the ``is_clean`` mask."""
    return load_split(*current_settings()).noisy_train


def clean_val() -> Digits:
    """Return the 200 validation samples with their true labels."""
    return load_split(*current_settings()).clean_val


def test_set() -> Digits:
    """Return the 597 held-out test samples with their true labels."""
    return load_split(*current_settings()).test


def weighted_train_loss(classifier: Any, weights: Any, noisy_train: Digits) -> torch.Tensor:
    """Inner objective: mean over samples of sigmoid(weights.logits)_i * CE_i, a 0-d tensor.

    ``classifier`` is called on the inputs (a level view or an ``nn.Module``);
    ``weights.logits`` has one entry per training sample.
    """
    return weighted_cross_entropy(classifier(noisy_train.x), noisy_train.y, torch.sigmoid(weights.logits))


def validation_loss(weights: Any, classifier: Any, clean_val: Digits) -> torch.Tensor:
    """Outer objective: cross entropy of the classifier on the clean validation set, a 0-d tensor.

    ``weights`` is the level's own view, which the loss does not read: the
    weights reach it only through the trained classifier.
    """
    return F.cross_entropy(classifier(clean_val.x), clean_val.y)


def report(result: Any, output_dir: Optional[Union[str, Path]]) -> dict[str, Any]:
    """Evaluate a run, print the table and write ``metrics.json`` and ``hyperclean.png`` into ``output_dir``.

    ``result`` is a ``chronos.result.RunResult`` (or an object with the same
    ``variables`` and ``history``): ``variables["weights"]["logits"]`` are the
    learned logits, ``variables["classifier"]`` the final classifier's
    ``state_dict`` and ``history["weights"]`` the outer loss per outer step.
    With ``output_dir`` None, nothing is written. Returns the metrics.

    Raises:
        ChronosError: ``result`` lacks the weights or the classifier level.
    """
    variables = getattr(result, "variables", {})
    if "logits" not in variables.get("weights", {}):
        raise ChronosError(
            "the run result has no variable 'logits' in level 'weights'",
            level="weights",
            hint="report() reads the result of examples/hyperclean.chronos; check the level and variable names",
        )
    classifier_state = variables.get("classifier")
    outer_losses = getattr(result, "history", {}).get("weights", [])
    return write_report(variables["weights"]["logits"], outer_losses, classifier_state, output_dir)


def run_imperative(outer_steps: int = OUTER_STEPS, method: str = "unrolled", *, progress: bool = True):
    """Run the bilevel problem with chronos.core and chronos.solver and return a ``RunResult``.

    Each outer step trains the classifier from its fixed initialization for
    ``INNER_STEPS`` full-batch SGD steps. It then takes the hypergradient of the
    validation loss with respect to the logits and applies one Adam step, as
    the compiled plan does. ``method`` is "unrolled" (through every inner step)
    or "implicit" (20 terms of the Neumann series).

    Raises:
        ChronosError: ``outer_steps`` is not a positive int or ``method`` is unknown.
    """
    from chronos.core import InnerProblem, OuterOptimizer
    from chronos.functional import split_module
    from chronos.optim import adam, sgd
    from chronos.result import RunResult
    from chronos.views import LevelView

    if isinstance(outer_steps, bool) or not isinstance(outer_steps, int) or outer_steps < 1:
        raise ChronosError(f"outer_steps must be an int >= 1, got {outer_steps!r}", level="weights")
    train, val = noisy_train(), clean_val()
    module = make_classifier()
    init_params, constants = split_module(module)

    def classifier_view(params):
        return LevelView("classifier", params, constants, module)

    inner = InnerProblem(
        lambda params, outer_params, data: weighted_train_loss(
            classifier_view(params), LevelView("weights", outer_params), data
        ),
        sgd(lr=INNER_LR),
        name="classifier",
    )
    outer = OuterOptimizer(
        {"logits": torch.zeros(len(train))},
        adam(lr=OUTER_LR, eps=OUTER_EPS),
        lambda outer_params, params, data: validation_loss(
            LevelView("weights", outer_params), classifier_view(params), data
        ),
        data=val,
        name="weights",
    )
    engine = _make_engine(method, outer)

    started = time.perf_counter()
    outer_losses: list[float] = []
    inner_losses: list[float] = []
    final: dict[str, torch.Tensor] = init_params
    for _ in tqdm(range(outer_steps), desc="hyperclean", unit="step", disable=not progress):
        final, trajectory = inner.solve(
            outer.params, init_params, INNER_STEPS, itertools.repeat(train), track_last=engine.track_last
        )
        hypergradient = engine.compute_hypergradient(trajectory, inner)
        with torch.no_grad():
            detached = {key: value.detach() for key, value in final.items()}
            outer_losses.append(float(outer.evaluate(outer.params, detached)))
        inner_losses.append(trajectory.losses[-1])
        engine.step(hypergradient)
        logger.debug("outer step %d: validation loss %.4f", outer.version, outer_losses[-1])
    seconds = time.perf_counter() - started
    logger.info("hyperclean: %d outer steps (%s) in %.1f s", outer_steps, method, seconds)

    return RunResult(
        problem="hyperclean",
        variables={
            "weights": {"logits": outer.params["logits"].detach().clone()},
            "classifier": {key: value.detach().clone() for key, value in {**final, **constants}.items()},
        },
        history={"weights": outer_losses, "classifier": inner_losses},
        versions={"weights": outer.version, "classifier": outer.version},
        seconds=seconds,
    )


def _make_engine(method: str, outer):
    from chronos.solver import ImplicitDifferentiation, UnrolledDifferentiation

    if method == "unrolled":
        return UnrolledDifferentiation(outer)
    if method == "implicit":
        # NOTE: conjugate gradient stops at negative curvature, which the inner
        # Hessian of this small tanh network has after 100 steps (seed 0, first
        # outer step). The Neumann series with alpha = the inner learning rate
        # approximates unrolling the last 20 inner steps near the final point; it
        # gave an AUROC of 0.98 and 80% of the gap closed in 30 outer steps (seed 0).
        return ImplicitDifferentiation(outer, solver="neumann", iters=20, alpha=INNER_LR)
    raise ChronosError(
        f"unknown hypergradient method {method!r}; valid ones: {', '.join(METHODS)}",
        level="classifier",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Data hyper-cleaning on the digits data set with chronos.core.")
    parser.add_argument("--noise-ratio", type=float, default=0.4, help="fraction of training labels to corrupt, in [0, 1)")
    parser.add_argument("--outer-steps", type=int, default=OUTER_STEPS, help="number of outer (Adam) steps on the weights")
    parser.add_argument("--output", default="out/hyperclean-imperative", help="directory for metrics.json and hyperclean.png")
    parser.add_argument("--method", choices=METHODS, default="unrolled", help="hypergradient method of the edge")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of the label corruption")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the imperative example and its report; return the exit status (0 ok, 2 invalid input)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        configure(noise_ratio=args.noise_ratio, seed=args.seed)
        result = run_imperative(args.outer_steps, args.method, progress=not args.no_progress)
        report(result, args.output)
    except ChronosError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"finished in {result.seconds:.1f} s; wrote {Path(args.output) / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
