"""The benchmark runner end to end on one small case, for the reference and Chronos' compiled path only."""

from __future__ import annotations

import json

import pytest

from benchmarks.run import main
from benchmarks.worker import MIN_COSINE


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("bench")
    status = main(
        ["--output", str(output), "--quick", "--cases", "memory-unrolled-T10",
         "--systems", "reference", "chronos-plan", "--repeat", "1"]
    )
    return status, output


def test_runner_exit_status(quick_run):
    status, _ = quick_run
    assert status == 0


def test_runner_writes_json(quick_run):
    _, output = quick_run
    results = json.loads((output / "results.json").read_text())
    assert set(results["cases"]["memory-unrolled-T10"]["systems"]) == {"reference", "chronos-plan"}


def test_runner_writes_markdown(quick_run):
    _, output = quick_run
    assert "| memory-unrolled-T10 | chronos-plan |" in (output / "results.md").read_text()


def test_chronos_cosine_matches_reference(quick_run):
    _, output = quick_run
    record = json.loads((output / "results.json").read_text())["cases"]["memory-unrolled-T10"]["systems"]["chronos-plan"]
    # Both systems run the same float32 computation from the same start, so
    # their hypergradients differ by rounding only; MIN_COSINE is the bar every
    # system is held to.
    assert record["cosine"] > MIN_COSINE


def test_runner_unknown_case(tmp_path):
    assert main(["--output", str(tmp_path), "--cases", "no-such-case"]) == 2
