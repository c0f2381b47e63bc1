"""The hyper-cleaning example: its data split, objectives, metrics, spec and a short run of each path."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from chronos.errors import ChronosError
from examples import _hyperclean_data as data
from examples import hyperclean
from examples._hyperclean_model import (
    INNER_LR,
    INNER_STEPS,
    OUTER_EPS,
    OUTER_LR,
    OUTER_STEPS,
    make_classifier,
    train_classifier,
)
from examples._hyperclean_report import gap_closed, weight_auroc

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "examples" / "hyperclean.chronos"


@pytest.fixture(autouse=True)
def _default_settings(monkeypatch):
    """Run every test on the default noise ratio and seed, whatever the environment sets."""
    monkeypatch.setattr(data, "_overrides", {})
    monkeypatch.delenv(data.NOISE_VARIABLE, raising=False)
    monkeypatch.delenv(data.SEED_VARIABLE, raising=False)
    monkeypatch.chdir(REPO)


def uncached_split(noise_ratio=0.4, seed=0):
    return data.load_split.__wrapped__(noise_ratio, seed)


def test_split_deterministic():
    first, second = uncached_split(), uncached_split()
    assert torch.equal(first.noisy_train.x, second.noisy_train.x)
    assert torch.equal(first.noisy_train.y, second.noisy_train.y)
    assert torch.equal(first.noisy_train.is_clean, second.noisy_train.is_clean)
    assert torch.equal(first.test.y, second.test.y)


def test_split_seed_changes_split():
    assert not torch.equal(uncached_split(seed=0).noisy_train.y, uncached_split(seed=1).noisy_train.y)


def test_split_sizes_and_dtypes():
    train, val, test = hyperclean.noisy_train(), hyperclean.clean_val(), hyperclean.test_set()
    assert (len(train), len(val), len(test)) == (1000, 200, 597)
    assert train.x.shape == (1000, 64)
    assert train.x.dtype == torch.float32
    assert train.y.dtype == torch.int64
    assert train.is_clean.dtype == torch.bool
    assert val.is_clean is None


def test_split_standardized_on_train():
    train = hyperclean.noisy_train()
    # Float32 mean of 1,000 standardized values: 1e-5 is far above round-off and far below any shift.
    assert train.x.mean(dim=0).abs().max() < 1e-5
    spread = train.x.std(dim=0, unbiased=False)
    varying = spread > 0
    torch.testing.assert_close(spread[varying], torch.ones(int(varying.sum())), rtol=1e-4, atol=0.0)


@pytest.mark.parametrize("noise_ratio, corrupted", [(0.4, 400), (0.25, 250), (0.0, 0)])
def test_corruption_ratio_exact(noise_ratio, corrupted):
    split = uncached_split(noise_ratio)
    assert int((~split.noisy_train.is_clean).sum()) == corrupted


def test_corrupted_labels_differ():
    split = uncached_split()
    clean = split.noisy_train.is_clean
    assert bool((split.noisy_train.y[~clean] != split.true_train_labels[~clean]).all())
    assert torch.equal(split.noisy_train.y[clean], split.true_train_labels[clean])


def test_data_cached():
    assert hyperclean.noisy_train() is hyperclean.noisy_train()


def test_noise_from_environment(monkeypatch):
    monkeypatch.setenv(data.NOISE_VARIABLE, "0.2")
    assert int((~hyperclean.noisy_train().is_clean).sum()) == 200


def test_noise_environment_invalid(monkeypatch):
    monkeypatch.setenv(data.NOISE_VARIABLE, "forty")
    with pytest.raises(ChronosError, match="CHRONOS_HYPERCLEAN_NOISE='forty' is not a valid float"):
        hyperclean.noisy_train()


def test_configure_overrides_environment(monkeypatch):
    monkeypatch.setenv(data.NOISE_VARIABLE, "0.2")
    hyperclean.configure(noise_ratio=0.1, seed=3)
    assert data.current_settings() == (0.1, 3)


@pytest.mark.parametrize("value", [1.0, -0.1, "0.4"])
def test_configure_rejects_noise(value):
    with pytest.raises(ChronosError, match=r"invalid noise ratio .* expected a number in \[0, 1\)"):
        hyperclean.configure(noise_ratio=value)


def test_classifier_init_fixed():
    torch.manual_seed(123)
    first = make_classifier().state_dict()
    torch.manual_seed(456)
    second = make_classifier().state_dict()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_objectives_finite_scalars():
    logits = SimpleNamespace(logits=torch.zeros(1000))
    train_loss = hyperclean.weighted_train_loss(make_classifier(), logits, hyperclean.noisy_train())
    val_loss = hyperclean.validation_loss(logits, make_classifier(), hyperclean.clean_val())
    for loss in (train_loss, val_loss):
        assert loss.dim() == 0
        assert bool(torch.isfinite(loss))


def test_train_loss_logit_gradient():
    """d loss / d logit_i = sigmoid'(logit_i) * CE_i / n, so it is largest for badly fit samples."""
    train = hyperclean.noisy_train()
    # A classifier fit to the noisy labels: the corrupted samples keep the higher losses.
    model = train_classifier(train.x, train.y, torch.ones(len(train)))
    logits = torch.zeros(len(train), requires_grad=True)
    loss = hyperclean.weighted_train_loss(model, SimpleNamespace(logits=logits), train)
    (gradient,) = torch.autograd.grad(loss, logits)
    with torch.no_grad():
        per_sample = torch.nn.functional.cross_entropy(model(train.x), train.y, reduction="none")
    # sigmoid'(0) = 1/4. Both sides are per-sample float32 products, so 1e-5 relative covers rounding.
    torch.testing.assert_close(gradient, 0.25 * per_sample / len(train), rtol=1e-5, atol=1e-9)
    clean = train.is_clean
    assert gradient[~clean].mean() > 2 * gradient[clean].mean()


def test_gap_closed_hand_case():
    assert gap_closed(0.80, 0.90, 0.88) == pytest.approx(0.8)
    assert gap_closed(0.80, 0.90, 0.80) == pytest.approx(0.0)
    assert math.isnan(gap_closed(0.90, 0.90, 0.95))


def test_auroc_hand_case():
    is_clean = torch.tensor([True, True, False, False])
    assert weight_auroc(torch.tensor([0.9, 0.8, 0.1, 0.2]), is_clean) == pytest.approx(1.0)
    # One of the four clean-corrupted pairs is ordered wrongly: 3/4.
    assert weight_auroc(torch.tensor([0.9, 0.15, 0.1, 0.2]), is_clean) == pytest.approx(0.75)
    assert math.isnan(weight_auroc(torch.tensor([0.5, 0.5]), torch.tensor([True, True])))


def test_spec_matches_constants():
    from chronos.compiler.compile import compile_file

    plan = compile_file(SPEC)
    weights, classifier = plan.level("weights"), plan.level("classifier")
    assert weights.steps == OUTER_STEPS
    assert weights.optimizer.hyperparameters["lr"].value == OUTER_LR
    assert weights.optimizer.hyperparameters["eps"].value == OUTER_EPS
    assert classifier.steps == INNER_STEPS
    assert classifier.optimizer.hyperparameters["lr"].value == INNER_LR
    assert plan.report == "examples.hyperclean:report"


def test_report_requires_logits():
    with pytest.raises(ChronosError, match="no variable 'logits' in level 'weights'"):
        hyperclean.report(SimpleNamespace(variables={}, history={}), None)


def test_script_short_run(tmp_path, capsys):
    assert hyperclean.main(["--outer-steps", "2", "--output", str(tmp_path), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["outer_steps"] == 2
    assert set(metrics["test_accuracy"]) >= {"noisy", "clean_only", "learned_weights"}
    assert 0.5 < metrics["weight_auroc"] <= 1.0
    assert (tmp_path / "hyperclean.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "AUROC of the weights" in capsys.readouterr().out


def test_script_invalid_noise(tmp_path, capsys):
    assert hyperclean.main(["--noise-ratio", "1.5", "--output", str(tmp_path), "--no-progress"]) == 2
    assert "invalid noise ratio 1.5" in capsys.readouterr().err


def test_compiled_short_run(tmp_path):
    from chronos.backends.local import LocalExecutor
    from chronos.compiler.compile import compile_file

    executor = LocalExecutor(compile_file(SPEC))
    executor.macro_step()
    metrics = hyperclean.report(executor.result(), tmp_path)
    assert metrics["outer_steps"] == 1
    assert (tmp_path / "metrics.json").exists()
    assert (tmp_path / "hyperclean.png").exists()
