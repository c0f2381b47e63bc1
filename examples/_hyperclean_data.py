"""The data of the hyper-cleaning example: scikit-learn's digits, split, standardized and corrupted.

The split and the corruption are fixed by one seed (``numpy.random.default_rng``):
a random permutation gives the training, validation and test samples, then
exactly ``round(noise_ratio * TRAIN_SIZE)`` training samples get a label drawn
uniformly from the nine other classes. Features are standardized with the mean
and standard deviation of the training split only.

The noise ratio and the seed that the zero-argument data functions use come from
:func:`configure`, else from the environment variables ``CHRONOS_HYPERCLEAN_NOISE``
(default 0.4) and ``CHRONOS_HYPERCLEAN_SEED`` (default 0).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from chronos.errors import ChronosError

__all__ = [
    "DEFAULT_NOISE_RATIO",
    "DEFAULT_SEED",
    "NUM_CLASSES",
    "NUM_FEATURES",
    "TEST_SIZE",
    "TRAIN_SIZE",
    "VAL_SIZE",
    "Digits",
    "Split",
    "configure",
    "current_settings",
    "load_split",
]

NUM_FEATURES = 64
NUM_CLASSES = 10
TRAIN_SIZE = 1000
VAL_SIZE = 200
TEST_SIZE = 597  # the remaining samples of the 1,797 in load_digits()
DEFAULT_NOISE_RATIO = 0.4
DEFAULT_SEED = 0
NOISE_VARIABLE = "CHRONOS_HYPERCLEAN_NOISE"
SEED_VARIABLE = "CHRONOS_HYPERCLEAN_SEED"


@dataclass(frozen=True)
class Digits:
    """Labeled samples: ``x`` float32 [n, 64], ``y`` int64 [n], ``is_clean`` bool [n] or None.

    ``is_clean`` is set on the noisy training set only: True where the label is
    the true one. ``len()`` is the number of samples, which a spec reads as
    ``DATA.size``.
    """

    x: torch.Tensor
    y: torch.Tensor
    is_clean: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Split:
    """The three sets of one split, and the true labels of the training set."""

    noisy_train: Digits
    clean_val: Digits
    test: Digits
    true_train_labels: torch.Tensor


_overrides: dict[str, float] = {}


def configure(*, noise_ratio: Optional[float] = None, seed: Optional[int] = None) -> None:
    """Set the noise ratio and seed that ``noisy_train()`` and the other data functions use.

    A value left as None keeps the previous override, or falls back to the
    environment variable, or to the default.

    Raises:
        ChronosError: ``noise_ratio`` is outside [0, 1) or ``seed`` is not a non-negative int.
    """
    if noise_ratio is not None:
        _overrides["noise_ratio"] = _check_noise_ratio(noise_ratio, "configure(noise_ratio=...)")
    if seed is not None:
        _overrides["seed"] = _check_seed(seed, "configure(seed=...)")


def current_settings() -> tuple[float, int]:
    """Return ``(noise_ratio, seed)`` from :func:`configure`, the environment or the defaults.

    Raises:
        ChronosError: an environment variable is set to an invalid value.
    """
    noise_ratio = _overrides.get("noise_ratio")
    if noise_ratio is None:
        noise_ratio = _check_noise_ratio(_read_env(NOISE_VARIABLE, DEFAULT_NOISE_RATIO, float), NOISE_VARIABLE)
    seed = _overrides.get("seed")
    if seed is None:
        seed = _check_seed(_read_env(SEED_VARIABLE, DEFAULT_SEED, int), SEED_VARIABLE)
    return float(noise_ratio), int(seed)


def _read_env(name: str, default, kind):
    text = os.environ.get(name)
    if text is None or text.strip() == "":
        return default
    try:
        return kind(text)
    except ValueError:
        raise ChronosError(
            f"environment variable {name}={text!r} is not a valid {kind.__name__}",
            hint=f"unset {name} or set it to a number such as {default}",
        ) from None


def _check_noise_ratio(value, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ChronosError(
            f"invalid noise ratio {value!r} from {source}: expected a number in [0, 1)",
            hint="0.4 corrupts 40% of the training labels",
        )
    return float(value)


def _check_seed(value, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ChronosError(f"invalid seed {value!r} from {source}: expected an int >= 0")
    return value


@functools.lru_cache(maxsize=8)
def load_split(noise_ratio: float = DEFAULT_NOISE_RATIO, seed: int = DEFAULT_SEED) -> Split:
    """Build (once per setting, then from the cache) the split with ``noise_ratio`` of training labels corrupted.

    Raises:
        ChronosError: ``noise_ratio`` is outside [0, 1) or ``seed`` is not a non-negative int.
    """
    noise_ratio = _check_noise_ratio(noise_ratio, "load_split")
    seed = _check_seed(seed, "load_split")
    from sklearn.datasets import load_digits

    digits = load_digits()
    features = digits.data.astype(np.float32)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    train = order[:TRAIN_SIZE]
    val = order[TRAIN_SIZE : TRAIN_SIZE + VAL_SIZE]
    test = order[TRAIN_SIZE + VAL_SIZE :]

    mean = features[train].mean(axis=0)
    std = features[train].std(axis=0)
    # Some border pixels are 0 in every training image: keep them at 0 instead of dividing by 0.
    std[std == 0.0] = 1.0
    features = (features - mean) / std

    noisy_labels, is_clean = _corrupt(labels[train], noise_ratio, rng)
    return Split(
        noisy_train=_digits(features[train], noisy_labels, is_clean),
        clean_val=_digits(features[val], labels[val]),
        test=_digits(features[test], labels[test]),
        true_train_labels=torch.from_numpy(labels[train].copy()),
    )


def _corrupt(labels: np.ndarray, noise_ratio: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Give exactly ``round(noise_ratio * n)`` samples a label drawn from the other classes."""
    count = int(round(noise_ratio * len(labels)))
    chosen = rng.choice(len(labels), size=count, replace=False)
    noisy = labels.copy()
    # An offset in 1..9 modulo 10 is uniform over the nine wrong classes.
    noisy[chosen] = (noisy[chosen] + rng.integers(1, NUM_CLASSES, size=count)) % NUM_CLASSES
    is_clean = np.ones(len(labels), dtype=bool)
    is_clean[chosen] = False
    return noisy, is_clean


def _digits(x: np.ndarray, y: np.ndarray, is_clean: Optional[np.ndarray] = None) -> Digits:
    clean = None if is_clean is None else torch.from_numpy(is_clean.copy())
    return Digits(x=torch.from_numpy(np.ascontiguousarray(x)), y=torch.from_numpy(y.copy()), is_clean=clean)
