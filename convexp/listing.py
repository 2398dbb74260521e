"""`convexp runs`: the run folders under runs/, a line each."""

from __future__ import annotations

from pathlib import Path

from convexp.errors import ConvexpError
from convexp.experiments import NAMES, spec
from convexp.runs import is_alive, read_summary


def key_metric(summary: dict) -> str:
    """A run's key number: its test accuracy, else what its experiment's spec picks, else its error."""
    if "test_accuracy" in summary:
        return f"test acc {summary['test_accuracy']:.4f}"
    picked = None
    if summary.get("command") in NAMES:
        key_metric = spec(summary["command"]).key_metric
        picked = key_metric(summary) if key_metric is not None else None
    if picked:
        return picked
    return summary.get("error", "-")[:60] if summary.get("status") == "failed" else "-"


def data_sizes(summary: dict) -> str:
    """'mnist 50000/10000/10000': the data folder's name and its train/val/test sizes."""
    data = summary.get("data")
    if not data:
        return "-"
    return f"{Path(data['root']).name} {data['train']}/{data['val']}/{data['test']}"


def list_runs(out: Path) -> list[list[str]]:
    if not out.is_dir():
        what = "is a file" if out.exists() else "does not exist"
        raise ConvexpError(f"--out {out} {what}: pass the folder that holds the run folders (default: runs)")
    rows = []
    for path in sorted(out.glob("*/summary.json")):
        try:
            summary = read_summary(path.parent)
        except ConvexpError:
            rows.append([path.parent.name, "?", "unreadable summary.json", "-", "-", "-"])
            continue
        status = summary.get("status", "?")
        if status == "running" and not is_alive(path.parent):
            status = "dead (killed while running; `convexp resume` it)"
        rows.append([path.parent.name, summary.get("command", "?"), status,
                     key_metric(summary), data_sizes(summary), summary.get("started_at", "-")])
    return rows
