"""`convexp runs`: the run folders under runs/, a line each."""

from __future__ import annotations

from pathlib import Path

from convexp.errors import ConvexpError
from convexp.runs import is_alive, read_summary


def key_metric(summary: dict) -> str:
    command = summary.get("command")
    if "test_accuracy" in summary:
        return f"test acc {summary['test_accuracy']:.4f}"
    results = summary.get("results") or {}
    if command == "sweep-batch" and results:
        best = max(((b, e["best_val_accuracy"]["mean"]) for b, e in results.items() if "best_val_accuracy" in e),
                   key=lambda pair: pair[1], default=None)
        return f"best val acc {best[1]:.4f} (batch {best[0]})" if best else "-"
    if command == "varres-pool" and results:
        return ", ".join(f"{p} {e['test_accuracy']['mean']:.4f}" for p, e in results.items())
    if command == "count-params" and "parameters" in summary:
        return ", ".join(f"{k}: {v:,}" for k, v in summary["parameters"].items())
    if command == "bench" and "loop_ratio" in summary:
        return f"loop {summary['loop_ratio']:.3f}x bare"
    if command == "sweep" and summary.get("best"):
        best = summary["best"]
        return f"{best['point']}: {summary['select']} {best[summary['select']]:.4f}, test {best['test_accuracy']['mean']:.4f}"
    if command == "reproduce" and "steps" in summary:
        return f"{len(summary['steps'])} steps" + (" (fast dev run)" if summary.get("fast_dev_run") else "")
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
