"""The report of the hyper-cleaning example: three retrained classifiers, metrics, a table and a figure."""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from examples._hyperclean_data import current_settings, load_split
from examples._hyperclean_model import accuracy, make_classifier, train_classifier

__all__ = [
    "METRICS_FILE",
    "PLOT_FILE",
    "baseline_accuracies",
    "compute_metrics",
    "format_table",
    "gap_closed",
    "plot",
    "weight_auroc",
    "write_report",
]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PLOT_FILE = "hyperclean.png"


def gap_closed(noisy: float, clean_only: float, weighted: float) -> float:
    """Return (weighted - noisy) / (clean_only - noisy): the share of the accuracy gap closed.

    1.0 means the learned weights match training on the clean samples only,
    0.0 means they do no better than the unweighted noisy labels. Returns NaN
    when clean_only is not above noisy, because there is then no gap to close.
    """
    gap = clean_only - noisy
    if gap <= 0.0:
        return math.nan
    return (weighted - noisy) / gap


def weight_auroc(weights: torch.Tensor, is_clean: torch.Tensor) -> float:
    """Return the area under the ROC curve of ``weights`` as a score for "the label is clean".

    Returns NaN when every sample is clean or every one is corrupted.
    """
    from sklearn.metrics import roc_auc_score

    labels = is_clean.detach().cpu().numpy().astype(bool)
    if labels.all() or not labels.any():
        return math.nan
    return float(roc_auc_score(labels, weights.detach().cpu().double().numpy()))


@functools.lru_cache(maxsize=4)
def baseline_accuracies(noise_ratio: float, seed: int) -> tuple[float, float]:
    """Return the test accuracies of (a) the unweighted noisy labels and (b) the clean samples only.

    Neither depends on the learned weights, so they are computed once per split.
    """
    split = load_split(noise_ratio, seed)
    train, test = split.noisy_train, split.test
    clean = train.is_clean
    noisy_model = train_classifier(train.x, train.y, torch.ones(len(train)))
    # The clean-only classifier is trained on the clean samples alone, averaging over them.
    clean_model = train_classifier(train.x[clean], train.y[clean], torch.ones(int(clean.sum())))
    return accuracy(noisy_model, test.x, test.y), accuracy(clean_model, test.x, test.y)


def compute_metrics(
    logits: torch.Tensor,
    outer_losses: Sequence[float],
    classifier_state: Optional[dict[str, torch.Tensor]] = None,
) -> dict[str, Any]:
    """Train a classifier on the learned weights, compare it with the two baselines and return JSON-ready metrics.

    ``logits`` [n_train] are the learned weight logits; the sample weights are
    their sigmoid. ``classifier_state`` is the bilevel run's final inner
    classifier, whose test accuracy is reported too. The split is the one of
    the current settings (see ``configure``).
    """
    noise_ratio, seed = current_settings()
    split = load_split(noise_ratio, seed)
    train, test = split.noisy_train, split.test
    weights = torch.sigmoid(logits.detach().float())
    clean = train.is_clean

    noisy, clean_only = baseline_accuracies(noise_ratio, seed)
    weighted_model = train_classifier(train.x, train.y, weights)
    accuracies = {
        "noisy": noisy,
        "clean_only": clean_only,
        "learned_weights": accuracy(weighted_model, test.x, test.y),
    }
    if classifier_state is not None:
        final = make_classifier()
        final.load_state_dict(classifier_state)
        accuracies["bilevel_final_classifier"] = accuracy(final, test.x, test.y)

    return {
        "noise_ratio": noise_ratio,
        "seed": seed,
        "sizes": {"train": len(train), "val": len(split.clean_val), "test": len(test)},
        "test_accuracy": accuracies,
        "gap_closed": gap_closed(accuracies["noisy"], accuracies["clean_only"], accuracies["learned_weights"]),
        "weight_auroc": weight_auroc(weights, clean),
        "mean_weight": {
            "clean": float(weights[clean].mean()) if clean.any() else math.nan,
            "corrupted": float(weights[~clean].mean()) if (~clean).any() else math.nan,
        },
        "outer_steps": len(outer_losses),
        "outer_loss": [float(value) for value in outer_losses],
    }


def format_table(metrics: dict[str, Any]) -> str:
    """Format the metrics as the short text table the report prints."""
    sizes = metrics["sizes"]
    accuracies = metrics["test_accuracy"]
    rows = [
        f"hyperclean: {metrics['noise_ratio']:.0%} of labels corrupted, seed {metrics['seed']}, "
        f"{sizes['train']} train / {sizes['val']} val / {sizes['test']} test samples",
        f"{'classifier trained on':<40} test accuracy",
        f"{'(a) noisy labels, unweighted':<40} {accuracies['noisy']:.4f}",
        f"{'(b) clean samples only':<40} {accuracies['clean_only']:.4f}",
        f"{'(c) noisy labels, learned weights':<40} {accuracies['learned_weights']:.4f}",
    ]
    if "bilevel_final_classifier" in accuracies:
        rows.append(f"{'    final classifier of the bilevel run':<40} {accuracies['bilevel_final_classifier']:.4f}")
    rows.append(f"gap (a) -> (b) closed by (c): {metrics['gap_closed']:.1%}")
    rows.append(f"AUROC of the weights, clean vs corrupted: {metrics['weight_auroc']:.4f}")
    return "\n".join(rows)


def plot(metrics: dict[str, Any], weights: torch.Tensor, is_clean: torch.Tensor, path: Path) -> Path:
    """Draw the outer loss per outer step and the histograms of the learned weights into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, weight_axes) = plt.subplots(1, 2, figsize=(10, 4))
    losses = metrics["outer_loss"]
    loss_axes.plot(range(1, len(losses) + 1), losses, marker=".")
    loss_axes.set_xlabel("outer step")
    loss_axes.set_ylabel("validation cross entropy")
    loss_axes.set_title("outer loss")
    values = weights.detach().numpy()
    clean = is_clean.numpy()
    bins = [i / 40 for i in range(41)]
    weight_axes.hist(values[clean], bins=bins, alpha=0.6, label="clean label")
    weight_axes.hist(values[~clean], bins=bins, alpha=0.6, label="corrupted label")
    weight_axes.set_xlabel("learned weight sigmoid(logit)")
    weight_axes.set_ylabel("training samples")
    weight_axes.set_title(f"learned weights (AUROC {metrics['weight_auroc']:.3f})")
    weight_axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_report(
    logits: torch.Tensor,
    outer_losses: Sequence[float],
    classifier_state: Optional[dict[str, torch.Tensor]],
    output_dir: Optional[Union[str, Path]],
) -> dict[str, Any]:
    """Compute the metrics, print the table and, unless ``output_dir`` is None, write the JSON and the PNG."""
    metrics = compute_metrics(logits, outer_losses, classifier_state)
    table = format_table(metrics)
    print(table)
    logger.info(
        "hyperclean report: accuracies %s, gap closed %.3f, AUROC %.4f",
        metrics["test_accuracy"],
        metrics["gap_closed"],
        metrics["weight_auroc"],
    )
    if output_dir is None:
        logger.info("no output directory given: %s and %s not written", METRICS_FILE, PLOT_FILE)
        return metrics

    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    metrics_path = directory / METRICS_FILE
    # NaN (no gap to close, or one class of samples only) is written as null, which JSON allows.
    metrics_path.write_text(json.dumps(_nan_to_none(metrics), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    noise_ratio, seed = current_settings()
    is_clean = load_split(noise_ratio, seed).noisy_train.is_clean
    plot_path = plot(metrics, torch.sigmoid(logits.detach().float()), is_clean, directory / PLOT_FILE)
    logger.info("wrote %s and %s", metrics_path, plot_path)
    return metrics


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(item) for item in value]
    return value
