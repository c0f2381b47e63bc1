"""Small objectives and data for compiler and backend tests (importable as ``tests.toy``)."""

import torch
from torch import nn


def points():
    """Four 1-d inputs and targets, float64."""
    x = torch.tensor([[1.0], [2.0], [-1.0], [0.5]], dtype=torch.float64)
    return x, 3.0 * x[:, 0]


def quadratic(own, *others):
    """0.5 * ||own.x - 1||^2: reads no other level's variables."""
    return 0.5 * (own.x - 1.0).pow(2).sum()


def reads_upper(own, upper):
    return 0.5 * (own.x - upper.x).pow(2).sum()


def reads_lower(own, lower):
    return 0.5 * (lower.x - 2.0).pow(2).sum()


def two_args(own, a, b):
    """Pulled towards both other levels' variables."""
    return 0.5 * (own.x - a.x).pow(2).sum() + 0.5 * (own.x - b.x).pow(2).sum()


def vector_loss(own, *others):
    return own.x * 2.0


def raises(own, *others):
    raise ValueError("this objective always fails")


def make_linear():
    torch.manual_seed(0)
    return nn.Linear(1, 1).double()


def make_frozen_net():
    """A net with a frozen first layer and a buffer, to check both stay constant."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    net[0].weight.requires_grad_(False)
    net.register_buffer("offset", torch.tensor([0.25], dtype=torch.float64))
    return net


def fit_loss(own, upper, data):
    """Mean squared error of the lower module plus an L2 term whose strength the upper level sets."""
    x, y = data
    prediction = own(x)[:, 0] + own.offset
    penalty = torch.exp(upper.log_l2) * sum(p.pow(2).sum() for p in own.params.values())
    return (prediction - y).pow(2).mean() + penalty


def holdout_loss(own, lower, data):
    x, y = data
    return (lower(x)[:, 0] + lower.offset - y).pow(2).mean()


def not_a_module():
    return 3


def chain_bottom(own, mid):
    """Bottom of a three-level chain: pulled towards the middle level's variable."""
    return 0.5 * (own.x - mid.m).pow(2).sum() + 0.1 * own.x.pow(2).sum()


def chain_mid(own, bottom, top):
    """Middle: fit the bottom solution to a target, with an L2 strength the top level sets."""
    target = torch.tensor([1.0, -2.0], dtype=own.m.dtype)
    return 0.5 * (bottom.x - target).pow(2).sum() + 0.5 * top.a.reshape(()) * own.m.pow(2).sum()


def chain_mid_plain(own, bottom):
    target = torch.tensor([1.0, -2.0], dtype=own.m.dtype)
    return 0.5 * (bottom.x - target).pow(2).sum() + 0.05 * own.m.pow(2).sum()


def chain_top(own, bottom):
    """Top: reads only the bottom solution, so its variable matters only through the middle."""
    goal = torch.tensor([0.5, -0.5], dtype=bottom.x.dtype)
    return 0.5 * (bottom.x - goal).pow(2).sum()


def reads_upper_scaled(own, upper):
    return 0.5 * (own.x - upper.a * torch.tensor([1.0, 2.0], dtype=own.x.dtype)).pow(2).sum()


def wide_top(own, left, right):
    return (left.x - 1.0).pow(2).sum() + (right.x * own.a).sum()


def chain_bottom_reads_top(own, mid, top):
    """Bottom level reading both the middle level and the top level directly."""
    return 0.5 * (own.x - mid.m).pow(2).sum() + 0.5 * top.a.reshape(()) * own.x.pow(2).sum()


def maml_inner(own, meta):
    """Pull w towards a fixed task target; meta enters only as w's starting point."""
    target = torch.tensor([1.0, -1.0], dtype=own.w.dtype)
    return 0.5 * (own.w - target).pow(2).sum()


def maml_outer(own, task):
    goal = torch.tensor([0.0, 2.0], dtype=task.w.dtype)
    return 0.5 * (task.w - goal).pow(2).sum()
