"""The chronos command: compile, run, explain, and errors as messages with exit status 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chronos.cli import main
from chronos.compiler.plan import Plan

REPO = Path(__file__).resolve().parents[1]
RIDGE = REPO / "examples" / "ridge.chronos"


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


def test_compile_writes_plan(tmp_path, capsys):
    assert main(["-q", "compile", str(RIDGE), "-o", str(tmp_path / "plan.json")]) == 0
    plan = Plan.load(tmp_path / "plan.json")
    assert plan.problem == "ridge"
    assert "wrote plan" in capsys.readouterr().out


def test_explain_spec_and_graph(tmp_path, capsys):
    assert main(["-q", "explain", str(RIDGE), "--graph", str(tmp_path / "graph.dot")]) == 0
    out = capsys.readouterr().out
    assert "regularizer -> weights: implicit(cg, iters = 20)" in out
    assert "reason:" in out
    assert (tmp_path / "graph.dot").read_text().startswith("digraph")


def test_run_plan_file(tmp_path, capsys):
    main(["-q", "compile", str(RIDGE), "-o", str(tmp_path / "plan.json")])
    assert main(["-q", "run", str(tmp_path / "plan.json"), "--no-progress", "--output", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "result.json").read_text())
    assert summary["versions"]["regularizer"] == 40
    assert "regularizer: final objective" in capsys.readouterr().out


def test_spec_error_exit_two(tmp_path, capsys):
    bad = tmp_path / "bad.chronos"
    bad.write_text("problem bad\nlevel a {\n    steps = \n}\n")
    assert main(["compile", str(bad), "-o", str(tmp_path / "plan.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert f"{bad}:3:" in err
    assert "^" in err
    assert not (tmp_path / "plan.json").exists()


def test_bad_plan_exit_two(tmp_path, capsys):
    broken = tmp_path / "plan.json"
    broken.write_text('{"schema_version": 1, "problem": "x", "levelz": []}')
    assert main(["explain", str(broken)]) == 2
    assert "unknown field 'levelz'" in capsys.readouterr().err


def test_console_entry_point(tmp_path):
    # The real process entry point, as `chronos` runs it.
    completed = subprocess.run(
        [sys.executable, "-m", "chronos.cli", "-q", "explain", str(RIDGE)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert completed.returncode == 0, completed.stderr
    assert "schedule (one macro step):" in completed.stdout


def test_run_checkpoint_and_resume(tmp_path):
    checkpoint = tmp_path / "ridge.ckpt"
    assert main(["-q", "run", str(RIDGE), "--no-progress", "--checkpoint", str(checkpoint)]) == 0
    assert checkpoint.exists()
    assert main(["-q", "run", str(RIDGE), "--no-progress", "--checkpoint", str(checkpoint), "--resume"]) == 0


def test_resume_needs_checkpoint(capsys):
    assert main(["run", str(RIDGE), "--no-progress", "--resume"]) == 2
    assert "--resume needs --checkpoint" in capsys.readouterr().err


def test_plan_runs_from_other_directory(tmp_path, monkeypatch):
    plan_path = tmp_path / "ridge.json"
    assert main(["-q", "compile", str(RIDGE), "-o", str(plan_path)]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # examples.ridge resolves only through the compile's working directory recorded in the plan.
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry not in ("", str(REPO))])
    for name in [module for module in sys.modules if module == "examples" or module.startswith("examples.")]:
        monkeypatch.delitem(sys.modules, name)
    assert main(["-q", "run", str(plan_path), "--no-progress"]) == 0
