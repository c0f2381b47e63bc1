"""Differentiable optimizers: one contract suite, a differential test against torch.optim, errors."""

from __future__ import annotations

import pytest
import torch

from chronos.errors import ChronosError, SpecError
from chronos.optim import OPTIMIZERS, OuterRef, adam, make_optimizer, outer, sgd

CONFIGS = {
    "sgd": {"lr": 0.1},
    "sgd_momentum": {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
    "adam": {"lr": 0.1},
    "adam_decay": {"lr": 0.1, "b1": 0.8, "weight_decay": 0.01},
}


def _name(config: str) -> str:
    return config.split("_")[0]


def _params(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "scalar": torch.randn((), generator=generator).to(dtype),
        "matrix": torch.randn(3, 2, generator=generator).to(dtype),
    }


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_update_keeps_shape_and_dtype(config: str, dtype: torch.dtype) -> None:
    optimizer = make_optimizer(_name(config), **CONFIGS[config])
    params = _params(dtype)
    grads = {k: torch.ones_like(p) for k, p in params.items()}
    new_params, state = optimizer.update(params, grads, optimizer.init(params), optimizer.resolve(None))
    for key, param in params.items():
        assert new_params[key].shape == param.shape
        assert new_params[key].dtype == dtype
    assert state["step"] == 1


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_update_leaves_inputs_unchanged(config: str) -> None:
    optimizer = make_optimizer(_name(config), **CONFIGS[config])
    params = _params(torch.float64)
    before = {k: p.clone() for k, p in params.items()}
    grads = {k: torch.ones_like(p) for k, p in params.items()}
    state = optimizer.init(params)
    optimizer.update(params, grads, state, optimizer.resolve(None))
    for key in params:
        assert torch.equal(params[key], before[key])
    assert state["step"] == 0


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_update_descends_on_quadratic(config: str) -> None:
    optimizer = make_optimizer(_name(config), **CONFIGS[config])
    params = _params(torch.float64)
    state = optimizer.init(params)
    start = sum(float((p**2).sum()) for p in params.values())
    for _ in range(5):
        grads = {k: 2 * p for k, p in params.items()}
        params, state = optimizer.update(params, grads, state, optimizer.resolve(None))
    assert sum(float((p**2).sum()) for p in params.values()) < start


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_none_gradient_counts_as_zero(config: str) -> None:
    optimizer = make_optimizer(_name(config), **CONFIGS[config])
    params = {"w": torch.zeros(2, dtype=torch.float64)}
    new_params, _ = optimizer.update(params, {"w": None}, optimizer.init(params), optimizer.resolve(None))
    assert torch.equal(new_params["w"], params["w"])


def _torch_reference(config: str, params: dict, grads: list[dict]) -> list[dict]:
    """Run torch.optim on the same gradient sequence and return the params after each step."""
    hyper = dict(CONFIGS[config])
    leaves = {k: p.clone().requires_grad_(True) for k, p in params.items()}
    if _name(config) == "sgd":
        reference = torch.optim.SGD(leaves.values(), **hyper)
    else:
        betas = (hyper.pop("b1", 0.9), hyper.pop("b2", 0.999))
        reference = torch.optim.Adam(leaves.values(), betas=betas, **hyper)
    history = []
    for step_grads in grads:
        for key, leaf in leaves.items():
            leaf.grad = step_grads[key].clone()
        reference.step()
        history.append({k: v.detach().clone() for k, v in leaves.items()})
    return history


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_update_matches_torch_optim(config: str, dtype: torch.dtype) -> None:
    params = _params(dtype)
    generator = torch.Generator().manual_seed(1)
    grads = [{k: torch.randn(p.shape, generator=generator).to(dtype) for k, p in params.items()} for _ in range(6)]
    expected = _torch_reference(config, params, grads)
    optimizer = make_optimizer(_name(config), **CONFIGS[config])
    state = optimizer.init(params)
    current = params
    # float32 rounding over six steps of updates of size ~0.1 stays near 1e-7.
    # float64 agrees to rounding, because eps_root = 1e-16 shifts Adam's denominator
    # by eps_root / (2 sqrt(v_hat)), negligible for these standard normal gradients.
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    for step_grads, reference in zip(grads, expected):
        current, state = optimizer.update(current, step_grads, state, optimizer.resolve(None))
        for key in params:
            torch.testing.assert_close(current[key], reference[key], rtol=tolerance, atol=tolerance)


def test_outer_hyperparameter_is_differentiable() -> None:
    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    optimizer = sgd(lr=outer("lr"), momentum=0.5)
    params = {"w": torch.tensor([1.0, 2.0], dtype=torch.float64)}
    grads = {"w": torch.tensor([0.5, -1.0], dtype=torch.float64)}
    new_params, _ = optimizer.update(params, grads, optimizer.init(params), optimizer.resolve({"lr": lr}))
    (derivative,) = torch.autograd.grad(new_params["w"].sum(), lr)
    assert float(derivative) == pytest.approx(0.5)


def test_outer_hyperparameter_keeps_param_dtype() -> None:
    optimizer = adam(lr=outer("lr"))
    params = {"w": torch.zeros((), dtype=torch.float32)}
    hyper = optimizer.resolve({"lr": torch.tensor([0.1], dtype=torch.float64)})
    new_params, _ = optimizer.update(params, {"w": torch.ones(())}, optimizer.init(params), hyper)
    assert new_params["w"].dtype == torch.float32
    assert new_params["w"].shape == ()


def test_outer_keys_lists_references() -> None:
    assert adam(lr=outer("lr"), b1=outer("beta")).outer_keys() == {"lr", "beta"}


def test_outer_creates_reference() -> None:
    assert outer("lr") == OuterRef("lr")


def test_resolve_unknown_key_names_it() -> None:
    optimizer = sgd(lr=outer("lr"))
    with pytest.raises(ChronosError, match=r"'lr'.*available: lam"):
        optimizer.resolve({"lam": torch.tensor(1.0)})


def test_resolve_without_outer_params() -> None:
    with pytest.raises(ChronosError, match=r"reads the outer variable 'lr'.*available: none"):
        sgd(lr=outer("lr")).resolve(None)


def test_resolve_rejects_vector() -> None:
    with pytest.raises(ChronosError, match="one element"):
        sgd(lr=outer("lr")).resolve({"lr": torch.ones(3)})


def test_make_optimizer_unknown_name() -> None:
    with pytest.raises(SpecError, match=r"unknown optimizer 'adma'.*did you mean 'adam'.*adam, sgd"):
        make_optimizer("adma", lr=0.1)


def test_make_optimizer_unknown_hyperparameter() -> None:
    with pytest.raises(SpecError, match=r"unknown hyperparameter 'beta1'.*valid ones: b1, b2, eps"):
        make_optimizer("adam", lr=0.1, beta1=0.9)


@pytest.mark.parametrize(
    ("name", "hyper", "message"),
    [
        ("sgd", {"lr": 0.0}, "lr > 0"),
        ("sgd", {"lr": -1.0}, "lr > 0"),
        ("sgd", {"lr": 0.1, "momentum": 1.0}, "0 <= momentum < 1"),
        ("adam", {"lr": 0.1, "b1": 1.0}, "0 <= b1 < 1"),
        ("adam", {"lr": 0.1, "b2": -0.1}, "0 <= b2 < 1"),
        ("adam", {"lr": 0.1, "eps": -1e-8}, "eps >= 0"),
        ("adam", {"lr": float("nan")}, "lr > 0"),
    ],
)
def test_make_optimizer_invalid_value(name: str, hyper: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        make_optimizer(name, **hyper)


def test_make_optimizer_missing_lr() -> None:
    with pytest.raises(SpecError, match="needs the hyperparameter 'lr'"):
        make_optimizer("sgd")


def test_make_optimizer_rejects_string_value() -> None:
    with pytest.raises(SpecError, match=r"must be a number or outer"):
        make_optimizer("sgd", lr="0.1")


def test_optimizers_registry() -> None:
    assert sorted(OPTIMIZERS) == ["adam", "sgd"]
