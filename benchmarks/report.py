"""Markdown tables and PNG plots from a results document of :mod:`benchmarks.run`.

Times are the median and the minimum over every timed outer step of every
round. A ratio divides by the reference's value on the same case from the same
run. On a loaded machine the minimum is the less disturbed of the two.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

__all__ = ["markdown", "plot", "write_report"]

logger = logging.getLogger(__name__)

_MIB = 2**20


def _cell_status(record: dict[str, Any]) -> Optional[str]:
    status = record.get("status")
    if status == "ok":
        return None
    return f"{status}: {record.get('reason', '')}".replace("|", "/").replace("\n", " ")


def _ratio(record: dict[str, Any], reference: dict[str, Any], key: str) -> str:
    if record.get("status") != "ok" or reference.get("status") != "ok":
        return ""
    return f"{record[key] / reference[key]:.2f}x"


def _case_rows(name: str, entry: dict[str, Any]) -> list[str]:
    systems = entry["systems"]
    reference = systems.get("reference", {})
    rows = []
    for system, record in systems.items():
        status = _cell_status(record)
        if status is not None:
            rows.append(f"| {name} | {system} | {status} | | | | | | |")
            continue
        cosine = f"{record['cosine']:.6f}" if "cosine" in record else "(reference)"
        metric = "" if record.get("metric") is None else f"{record['metric']:.3f}"
        rows.append(
            f"| {name} | {system} | {record['seconds_median'] * 1e3:.1f} | {_ratio(record, reference, 'seconds_median')} "
            f"| {record['seconds_min'] * 1e3:.1f} | {_ratio(record, reference, 'seconds_min')} "
            f"| {record['peak_bytes'] / _MIB:.1f} | {cosine} | {metric} |"
        )
    return rows


def markdown(results: dict[str, Any]) -> str:
    """Return results.md: the machine, one table per case group, versions and skipped cases."""
    lines = _header_lines(results)
    groups: dict[str, list[str]] = {}
    for name, entry in results["cases"].items():
        groups.setdefault(entry["case"]["group"], []).extend(_case_rows(name, entry))
    for group, rows in groups.items():
        lines += [f"## {group}", "", *_TABLE_HEADER, *rows, ""]

    lines += ["## Versions", "", "| system | version |", "|---|---|"]
    for system, version in _versions(results).items():
        lines.append(f"| {system} | {version} |")
    lines.append("")

    if results.get("skipped"):
        lines += ["## Skipped", ""] + [f"- {name}: {reason}" for name, reason in results["skipped"].items()] + [""]
    lines += _compile_time_lines(results.get("compile_time"))
    return "\n".join(lines)


_TABLE_HEADER = (
    "| case | system | median ms per outer step | vs reference | min ms | vs reference | peak MiB "
    "| cosine vs reference | test accuracy |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
)


def _header_lines(results: dict[str, Any]) -> list[str]:
    machine = results["machine"]
    load_end = machine.get("load_average_end", [float("nan")])[0]
    return [
        "# Benchmark results",
        "",
        f"Date {machine['date']}; CPU {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
        f"torch {machine['torch']} with {results.get('threads', 1)} thread(s) per worker; Python {machine['python']}; "
        f"load average at start {machine['load_average'][0]:.2f}, at end {load_end:.2f}; "
        f"{results['rounds']} round(s) of {results['repeat']} timed outer steps; "
        f"wall time {results.get('wall_seconds', 0):.0f} s.",
        "",
    ]


def _compile_time_lines(compile_time: Optional[dict[str, Any]]) -> list[str]:
    """Return the compile-time section: benchmarks.compile_time's own report, headings one level down."""
    if compile_time is None:
        return []
    lines = ["## Compile time (Chronos alone)", ""]
    if compile_time["status"] != "ok" or not compile_time.get("report"):
        return lines + [f"{compile_time['status']}: {compile_time.get('reason') or compile_time.get('output')}", ""]
    for line in compile_time["report"].splitlines():
        lines.append("##" + line if line.startswith("#") else line)
    return lines + [""]


def _versions(results: dict[str, Any]) -> dict[str, str]:
    versions: dict[str, str] = {}
    for entry in results["cases"].values():
        for system, record in entry["systems"].items():
            if "version" in record:
                versions.setdefault(system, record["version"])
            elif record.get("status") == "not available":
                versions.setdefault(system, f"not available: {record.get('reason', '')}")
    return versions


def _series(results: dict[str, Any], group: str, method: str, key: str) -> dict[str, tuple[list[float], list[float]]]:
    """Return system -> (x, y) over the cases of ``group`` with ``method``; x is ``key`` of the case."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for entry in results["cases"].values():
        case = entry["case"]
        if case["group"] != group or case["method"] != method:
            continue
        for system, record in entry["systems"].items():
            if record.get("status") != "ok":
                continue
            xs, ys = series.setdefault(system, ([], []))
            xs.append(case[key])
            ys.append(record["peak_bytes"] / _MIB if group == "memory" else record["seconds_median"] * 1e3)
    return series


def plot(results: dict[str, Any], output: Path, prefix: str = "peers_") -> list[Path]:
    """Write the memory-against-T and time-against-width plots; return the files written."""
    written = []
    for group, key, ylabel, xlabel in (
        ("memory", "inner_steps", "peak RSS increase (MiB)", "inner steps T"),
        ("scale", "width", "ms per outer step", "hidden width"),
    ):
        methods = sorted({e["case"]["method"] for e in results["cases"].values() if e["case"]["group"] == group})
        if not methods:
            continue
        # A shared y axis for memory shows the flat implicit curves against the
        # growing unrolled ones. Time spans three decades, so it is drawn on a log scale.
        figure, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), squeeze=False, sharey=group == "memory")
        for axis, method in zip(axes[0], methods):
            for system, (xs, ys) in sorted(_series(results, group, method, key).items()):
                order = sorted(range(len(xs)), key=xs.__getitem__)
                axis.plot([xs[i] for i in order], [ys[i] for i in order], marker="o", label=system)
            axis.set_xscale("log")
            if group == "scale":
                axis.set_yscale("log")
            axis.set_title(f"{group}: {method}")
            axis.set_xlabel(xlabel)
            axis.set_ylabel(ylabel)
            axis.legend(fontsize="small")
        figure.tight_layout()
        path = output / f"{prefix}{group}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def write_report(results: dict[str, Any], output: Path) -> None:
    """Write results.md and the plots into ``output``."""
    (output / "results.md").write_text(markdown(results))
    for path in plot(results, output):
        logger.info("wrote %s", path)
