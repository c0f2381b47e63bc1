"""Float64 slices of the hyper-cleaning data and classifier, for finite-difference tests."""

from examples import hyperclean
from examples._hyperclean_data import Digits

SAMPLES = 120


def _float64(digits: Digits, count: int) -> Digits:
    clean = None if digits.is_clean is None else digits.is_clean[:count]
    return Digits(x=digits.x[:count].double(), y=digits.y[:count], is_clean=clean)


def noisy_train64() -> Digits:
    return _float64(hyperclean.noisy_train(), SAMPLES)


def clean_val64() -> Digits:
    return _float64(hyperclean.clean_val(), 60)


def make_classifier64():
    return hyperclean.make_classifier().double()
