"""The spec and the decorator front ends describe the same problem the same way."""

from pathlib import Path

import pytest

import chronos
from chronos.compiler.compile import compile_file
from chronos.errors import SpecError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


def test_spec_and_decorators_equal():
    from examples import ridge

    from_spec = compile_file(REPO / "examples" / "ridge.chronos")
    from_decorators = ridge.compile_decorated()
    assert from_spec.without_sources() == from_decorators.without_sources()


def test_sources_point_at_definitions():
    from examples import ridge

    plan = ridge.compile_decorated()
    source = plan.level("weights").source
    assert source.file.endswith("ridge.py")
    assert source.line > 0


def test_decorated_level_still_callable():
    from examples import ridge

    import torch

    own = type("View", (), {"w": torch.zeros(5, dtype=torch.float64)})()
    value = ridge.validation_loss(own, own, ridge.val_data())
    assert value.dim() == 0


def test_local_function_rejected():
    def make():
        return None

    with pytest.raises(SpecError, match="cannot be named as 'module:function'"):
        chronos.level(module=make, optimizer=chronos.sgd(lr=0.1), steps=1)(lambda own: own)


def objective(own):
    return own.x.sum()


def test_optimizer_type_checked():
    with pytest.raises(SpecError, match="chronos.sgd"):
        chronos.level(optimizer="sgd", steps=1)(objective)


def test_outer_ref_needs_level():
    with pytest.raises(SpecError, match="level.variable"):
        chronos.level(optimizer=chronos.sgd(lr=chronos.outer("lr")), steps=1)(objective)


def no_arguments():
    return None


def test_objective_needs_own_argument():
    with pytest.raises(SpecError, match="first argument receives the level itself"):
        chronos.level(optimizer=chronos.sgd(lr=0.1), steps=1)(no_arguments)


def test_level_name_must_be_spec_name():
    with pytest.raises(SpecError, match="level name 'per' is not a valid name"):
        chronos.level(name="per", optimizer=chronos.sgd(lr=0.1), steps=1)(objective)


def test_compile_rejects_plain_functions():
    with pytest.raises(SpecError, match="takes @chronos.level functions"):
        chronos.compile([test_compile_rejects_plain_functions])


def test_steps_type_checked():
    with pytest.raises(SpecError, match="steps must be a positive int, got 2.5"):
        chronos.level(optimizer=chronos.sgd(lr=0.1), steps=2.5)


def test_param_must_be_initializer():
    import torch

    with pytest.raises(SpecError, match="param 'w' must be an initializer"):
        chronos.level(optimizer=chronos.sgd(lr=0.1), steps=2, params={"w": torch.zeros(5)})


def test_main_module_rejected():
    fake = type(objective)(objective.__code__, {"__name__": "__main__"}, "script_loss")
    fake.__module__ = "__main__"
    with pytest.raises(SpecError, match="defined in the script being run"):
        chronos.level(optimizer=chronos.sgd(lr=0.1), steps=1)(fake)


def test_unknown_run_option():
    from examples import ridge

    with pytest.raises(SpecError, match="unknown run option\\(s\\) \\['checkpont'\\] \\(did you mean 'checkpoint'\\?\\)"):
        chronos.run(ridge.compile_decorated(), checkpont="x.pt")
