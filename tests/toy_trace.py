"""Objectives for the dependency tracing tests (importable as ``tests.toy_trace``)."""

import torch


def ignores_upper(own, upper):
    """Takes the upper level but reads none of its variables."""
    return 0.5 * (own.x - 1.0).pow(2).sum()


def ignores_lower(own, lower):
    """Takes the lower level but reads none of its variables."""
    return own.x.pow(2).sum()


def ignores_top(own, mid, top):
    """Bottom of a chain: takes the top level too but reads only the middle one."""
    return 0.5 * (own.x - mid.m).pow(2).sum()


def branches(own, upper):
    """Branches in Python on a variable's value, which tracing cannot follow."""
    if own.x.sum() > 0:
        return (own.x * upper.x).sum()
    return own.x.pow(2).sum()


def calls_item(own, upper):
    return own.x.sum() * upper.x.sum().item()


def branches_on_data(own, upper, data):
    """Branches on a value computed from data alone."""
    _, y = data
    if y.sum() > 0:
        return (own.x - upper.x).pow(2).sum()
    return own.x.pow(2).sum()


def scalar_pull(own, upper):
    """Own and upper variables are both 0-d."""
    return (own.s - upper.s).pow(2)


def writes_slice(own, upper):
    """Writes the upper variable into a view and reads the base tensor afterwards."""
    out = torch.zeros(3, 2, dtype=own.x.dtype)
    out[:, 0] = upper.x
    return out.sum() + own.x.pow(2).sum()


def shape_only(own, upper):
    """Uses only the shape of the upper variable, through zeros_like."""
    return (own.x - torch.zeros_like(upper.x)).pow(2).sum()


def gradient_penalty(own, upper):
    """Calls torch.autograd.grad inside the objective, on a trainable variable."""
    inner = (own.x * upper.x).pow(2).sum()
    (gradient,) = torch.autograd.grad(inner, own.x, create_graph=True)
    return gradient.pow(2).sum()


def reads_only_upper(own, upper):
    """Reads the upper level only: the level's own variables never matter."""
    return upper.x.pow(2).sum()
