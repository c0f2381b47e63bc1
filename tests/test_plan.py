"""Plan schema: JSON round trip, validation on load, schema versions, atomic save."""

import json
from pathlib import Path

import pytest

from chronos.compiler.compile import compile_file
from chronos.compiler.plan import SCHEMA_VERSION, Plan
from chronos.errors import PlanError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def plan(monkeypatch):
    monkeypatch.chdir(REPO)
    return compile_file(REPO / "examples" / "ridge.chronos")


def test_round_trip_equal(plan, tmp_path):
    path = plan.save(tmp_path / "plan.json")
    assert Plan.load(path) == plan


def test_json_is_stable(plan, tmp_path):
    first = plan.save(tmp_path / "a.json").read_bytes()
    second = Plan.load(tmp_path / "a.json").save(tmp_path / "b.json").read_bytes()
    assert first == second


def test_unknown_field_named(plan):
    raw = json.loads(plan.to_json())
    raw["levels"][0]["stepz"] = 3
    with pytest.raises(PlanError, match="unknown field 'levels.0.stepz'"):
        Plan.from_json(json.dumps(raw))


def test_missing_field_named(plan):
    raw = json.loads(plan.to_json())
    del raw["edges"][0]["method"]
    with pytest.raises(PlanError, match="missing field 'edges.0.method'"):
        Plan.from_json(json.dumps(raw))


def test_old_schema_rejected(plan):
    raw = json.loads(plan.to_json())
    raw["schema_version"] = SCHEMA_VERSION - 1
    with pytest.raises(PlanError, match="(?s)schema version 0.*recompile"):
        Plan.from_json(json.dumps(raw))


def test_not_json_rejected(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{ not json")
    with pytest.raises(PlanError, match="not valid JSON \\(line 1, column 3\\)"):
        Plan.load(path)


def test_missing_file_rejected(tmp_path):
    with pytest.raises(PlanError, match="cannot read plan file"):
        Plan.load(tmp_path / "absent.json")


def test_invariant_checked_on_load(plan):
    raw = json.loads(plan.to_json())
    raw["edges"][0]["lower"] = "ghost"
    with pytest.raises(PlanError, match="unknown level 'ghost'"):
        Plan.from_json(json.dumps(raw))


def test_bad_period_rejected(plan):
    raw = json.loads(plan.to_json())
    raw["levels"][1]["period"] = 0
    with pytest.raises(PlanError, match="periods must be positive"):
        Plan.from_json(json.dumps(raw))


def test_save_leaves_no_partial_file(plan, tmp_path, monkeypatch):
    target = tmp_path / "plan.json"
    target.write_text("old")

    def failing_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr("chronos.compiler.plan.os.replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        plan.save(target)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_plan_is_frozen(plan):
    with pytest.raises(Exception, match="frozen"):
        plan.macro_steps = 3


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda raw: raw["levels"][1]["variables"][0].update(dtype="foo"), "'foo' is not a torch dtype"),
        (lambda raw: raw["levels"][1]["variables"][0].update(shape=[-5]), "greater than or equal to 0"),
        (lambda raw: raw["levels"][1].update(steps=7), "period 1 x steps 7 must equal the period 200"),
        (lambda raw: raw["levels"][1].update(per="nosuch"), "timed per 'nosuch'"),
        (lambda raw: raw["levels"][0]["variables"][0]["init"].update(kind="full"), "needs a 'value'"),
    ],
)
def test_hand_edits_rejected(plan, edit, message):
    raw = json.loads(plan.to_json())
    edit(raw)
    with pytest.raises(PlanError, match=message):
        Plan.from_json(json.dumps(raw))


def test_edge_without_links_rejected(plan):
    raw = json.loads(plan.to_json())
    raw["levels"][0]["lowers"] = []
    with pytest.raises(PlanError, match="missing from the lowers of 'regularizer'"):
        Plan.from_json(json.dumps(raw))


def test_string_boolean_rejected(plan):
    raw = json.loads(plan.to_json())
    raw["levels"][1]["warm_start"] = "yes"
    with pytest.raises(PlanError, match="levels.1.warm_start"):
        Plan.from_json(json.dumps(raw))
