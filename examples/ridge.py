"""Ridge regression with a learned L2 strength: the smallest bilevel problem with a closed form.

Inner (level ``weights``):   w*(lambda) = argmin_w 1/2 ||X w - y||^2 + 1/2 lambda ||w||^2
                                        = (X^T X + lambda I)^-1 X^T y
Outer (level ``regularizer``): min over log_lambda of 1/2 ||X_v w*(lambda) - y_v||^2

with lambda = exp(log_lambda). The hypergradient with respect to lambda is
-g_v^T (X^T X + lambda I)^-1 w* with g_v = X_v^T (X_v w* - y_v), which
:func:`closed_form_hypergradient` computes; chain rule by lambda for log_lambda.

The same problem is written as a spec in ``examples/ridge.chronos`` and as the
decorated functions below; both compile to the same plan.
"""

from __future__ import annotations

import functools

import torch

import chronos

FEATURES = 5
TRAIN_SIZE = 40
VAL_SIZE = 20


@functools.lru_cache(maxsize=None)
def _data(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    w_true = torch.randn(FEATURES, generator=generator, dtype=torch.float64)

    def sample(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Scaled by 1/sqrt(count) so that X^T X is near the identity and plain
        # gradient descent with step 0.5 is stable.
        x = torch.randn(count, FEATURES, generator=generator, dtype=torch.float64) / count**0.5
        noise = 0.5 * torch.randn(count, generator=generator, dtype=torch.float64) / count**0.5
        return x, x @ w_true + noise

    return {"train": sample(TRAIN_SIZE), "val": sample(VAL_SIZE)}


def train_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Training inputs [40, 5] and targets [40], float64."""
    return _data()["train"]


def val_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Validation inputs [20, 5] and targets [20], float64."""
    return _data()["val"]


def inner_objective(w: torch.Tensor, log_lambda: torch.Tensor, train) -> torch.Tensor:
    x, y = train
    residual = x @ w - y
    return 0.5 * residual.pow(2).sum() + 0.5 * torch.exp(log_lambda).reshape(()) * w.pow(2).sum()


def outer_objective(w: torch.Tensor, val) -> torch.Tensor:
    x, y = val
    return 0.5 * (x @ w - y).pow(2).sum()


def closed_form_solution(log_lambda: float) -> torch.Tensor:
    x, y = train_data()
    lam = torch.exp(torch.tensor(log_lambda, dtype=torch.float64))
    return torch.linalg.solve(x.T @ x + lam * torch.eye(FEATURES, dtype=torch.float64), x.T @ y)


def closed_form_hypergradient(log_lambda: float) -> torch.Tensor:
    """d outer / d log_lambda = lambda * (-g_v^T (X^T X + lambda I)^-1 w*)."""
    x, _ = train_data()
    xv, yv = val_data()
    lam = torch.exp(torch.tensor(log_lambda, dtype=torch.float64))
    w_star = closed_form_solution(log_lambda)
    g_v = xv.T @ (xv @ w_star - yv)
    hessian = x.T @ x + lam * torch.eye(FEATURES, dtype=torch.float64)
    return lam * (-g_v @ torch.linalg.solve(hessian, w_star))


@chronos.level(
    name="regularizer",
    params={"log_lambda": chronos.zeros(dtype="float64")},
    optimizer=chronos.adam(lr=0.05),
    steps=40,
)
def validation_loss(own, weights, val):
    """Outer objective: squared validation error of the inner solution."""
    return outer_objective(weights.w, val)


@chronos.level(
    name="weights",
    params={"w": chronos.zeros(FEATURES, dtype="float64")},
    optimizer=chronos.sgd(lr=0.5),
    steps=200,
    under="regularizer",
    hypergradient=chronos.implicit(solver="cg", iters=20),
)
def train_loss(own, regularizer, train):
    """Inner objective: ridge loss with strength exp(regularizer.log_lambda)."""
    return inner_objective(own.w, regularizer.log_lambda, train)


def compile_decorated() -> chronos.Plan:
    """Compile the decorated form of the problem."""
    return chronos.compile(
        [validation_loss, train_loss],
        data={"train": train_data, "val": val_data},
        name="ridge",
    )
