"""Checkpoints: a run stopped and resumed ends where an uninterrupted run ends."""

from pathlib import Path

import pytest
import torch

from chronos.backends.local import LocalExecutor
from chronos.backends.nested import NestedExecutor
from chronos.compiler.compile import compile_spec
from chronos.dsl import parse
from chronos.errors import BackendError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


def ridge_plan(steps: int = 6):
    text = (REPO / "examples" / "ridge.chronos").read_text().replace("steps = 40", f"steps = {steps}")
    text = text.replace("sgd(lr = 0.5)", "sgd(lr = 0.5, momentum = 0.5)\n    warm_start = true")
    return compile_spec(parse(text, file="ridge.chronos"))


def chain_plan():
    from test_nested import CHAIN

    return compile_spec(parse(CHAIN.replace("steps = 2\n", "steps = 4\n").replace("steps = 4 per mid", "steps = 4 per mid\n    warm_start = true")))


class Stop(Exception):
    pass


def interrupted_then_resumed(executor_class, plan, path, stop_after: int):
    def stop(index, executor):
        if index + 1 == stop_after:
            raise Stop

    with pytest.raises(Stop):
        executor_class(plan).run(progress=False, checkpoint=path, callback=stop)
    return executor_class(plan).run(progress=False, checkpoint=path, resume=True)


@pytest.mark.parametrize("executor_class, make_plan", [(LocalExecutor, ridge_plan), (NestedExecutor, chain_plan)])
def test_resume_equals_uninterrupted(executor_class, make_plan, tmp_path):
    plan = make_plan()
    whole = executor_class(plan).run(progress=False)
    resumed = interrupted_then_resumed(executor_class, plan, tmp_path / "run.ckpt", stop_after=2)
    for level, variables in whole.variables.items():
        for name, value in variables.items():
            # Same operations in the same order after an exact reload: bitwise equal.
            torch.testing.assert_close(resumed.variables[level][name], value, rtol=0, atol=0)
    assert resumed.history == whole.history
    assert resumed.versions == whole.versions


def test_checkpoint_every_two(tmp_path):
    plan = ridge_plan(steps=5)
    path = tmp_path / "run.ckpt"
    seen = []
    LocalExecutor(plan).run(
        progress=False, checkpoint=path, checkpoint_every=2, callback=lambda i, e: seen.append(path.exists())
    )
    # Saved after steps 2 and 4 and at the end; the callback runs before the save.
    assert seen == [False, False, True, True, True]


def test_resume_rejects_other_plan(tmp_path):
    path = tmp_path / "run.ckpt"
    LocalExecutor(ridge_plan(steps=2)).run(progress=False, checkpoint=path)
    with pytest.raises(BackendError, match="written for a different plan"):
        LocalExecutor(ridge_plan(steps=3)).run(progress=False, checkpoint=path, resume=True)


def test_resume_rejects_garbage(tmp_path):
    path = tmp_path / "run.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(BackendError, match="cannot resume"):
        LocalExecutor(ridge_plan(steps=2)).run(progress=False, checkpoint=path, resume=True)


def test_resume_without_file_starts_fresh(tmp_path):
    result = LocalExecutor(ridge_plan(steps=2)).run(progress=False, checkpoint=tmp_path / "new.ckpt", resume=True)
    assert result.versions["regularizer"] == 2


def test_resume_rejects_wrong_shape(tmp_path):
    from chronos.core import MetaState

    path = tmp_path / "run.ckpt"
    plan = ridge_plan(steps=2)
    LocalExecutor(plan).run(progress=False, checkpoint=path)
    meta = MetaState.load(path)
    meta.levels["weights"].params["w"] = torch.zeros(7, dtype=torch.float64)
    meta.save(path)
    with pytest.raises(BackendError, match="contains 'w' as \\(7,\\) torch.float64, but the plan declares \\(5,\\) float64"):
        LocalExecutor(plan).run(progress=False, checkpoint=path, resume=True)


def test_lower_version_counts_steps():
    result = LocalExecutor(ridge_plan(steps=2)).run(progress=False)
    assert result.versions["weights"] == 2 * 200
