"""Versions and checkpoints: VersionTracker staleness and MetaState save and load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from chronos.core import LevelState, MetaState, VersionTracker
from chronos.errors import ChronosError


def test_version_starts_at_zero() -> None:
    assert VersionTracker().version("weights") == 0


def test_bump_returns_new_version() -> None:
    tracker = VersionTracker()
    tracker.bump("weights")
    assert tracker.bump("weights") == 2


def test_staleness_counts_missed_updates() -> None:
    tracker = VersionTracker()
    tracker.bump("weights")
    tracker.record_read("classifier", "weights")
    tracker.bump("weights")
    tracker.bump("weights")
    assert tracker.staleness("classifier", "weights") == 2


def test_staleness_zero_after_read() -> None:
    tracker = VersionTracker()
    tracker.bump("weights")
    tracker.record_read("classifier", "weights", 1)
    assert tracker.staleness("classifier", "weights") == 0


def test_staleness_requires_read() -> None:
    with pytest.raises(ChronosError, match="has not read group 'weights'"):
        VersionTracker().staleness("classifier", "weights")


def test_record_read_rejects_future_version() -> None:
    tracker = VersionTracker()
    with pytest.raises(ChronosError, match="versions run from 0 to 0"):
        tracker.record_read("classifier", "weights", 3)


def test_tracker_state_round_trip() -> None:
    tracker = VersionTracker()
    tracker.bump("weights")
    tracker.record_read("classifier", "weights")
    tracker.bump("weights")
    restored = VersionTracker()
    restored.load_state_dict(tracker.state_dict())
    assert restored.staleness("classifier", "weights") == 1


def _meta() -> MetaState:
    meta = MetaState()
    meta.levels["classifier"] = LevelState(
        params={"w": torch.randn(3, 2, dtype=torch.float64)},
        constants={"offset": torch.ones(())},
        optimizer_state={"step": 4, "mu": {"w": torch.randn(3, 2, dtype=torch.float64)}},
        version=4,
    )
    meta.versions.bump("classifier")
    meta.versions.record_read("weights", "classifier")
    return meta


def test_save_load_round_trip(tmp_path: Path) -> None:
    meta = _meta()
    path = tmp_path / "state.pt"
    meta.save(path)
    loaded = MetaState.load(path)
    level = loaded.levels["classifier"]
    assert torch.equal(level.params["w"], meta.levels["classifier"].params["w"])
    assert torch.equal(level.optimizer_state["mu"]["w"], meta.levels["classifier"].optimizer_state["mu"]["w"])
    assert level.optimizer_state["step"] == 4
    assert level.version == 4
    assert loaded.versions.version("classifier") == 1
    assert loaded.versions.staleness("weights", "classifier") == 0


def test_save_failure_leaves_no_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    _meta().save(path)
    before = path.read_bytes()
    broken = _meta()
    broken.levels["classifier"].optimizer_state["schedule"] = lambda step: step  # cannot be pickled
    with pytest.raises(ChronosError, match="could not write checkpoint"):
        broken.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ChronosError, match="not found"):
        MetaState.load(tmp_path / "absent.pt")


def test_load_rejects_other_format(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"format": 99}, path)
    with pytest.raises(ChronosError, match="unknown checkpoint format 99"):
        MetaState.load(path)


def test_load_rejects_incomplete_level() -> None:
    state = _meta().state_dict()
    del state["levels"]["classifier"]["params"]
    with pytest.raises(ChronosError, match="level 'classifier'.*params"):
        MetaState().load_state_dict(state)


def test_save_into_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ChronosError, match="could not write checkpoint"):
        _meta().save(tmp_path / "absent" / "state.pt")
