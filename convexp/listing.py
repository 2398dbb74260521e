"""`convexp runs`: the run folders under runs/, a line each."""

from __future__ import annotations

from pathlib import Path

from convexp.errors import ConvexpError
from convexp.experiments import NAMES, spec
from convexp.record import RunRecord
from convexp.runs import is_alive


def key_metric(record: RunRecord) -> str:
    """A run's key number: its test accuracy, else what its experiment's spec picks, else its error."""
    if record.test_accuracy is not None:
        return f"test acc {record.test_accuracy:.4f}"
    picked = None
    if record.command in NAMES:
        key_metric = spec(record.command).key_metric
        picked = key_metric(record.summary) if key_metric is not None else None
    if picked:
        return picked
    return record.summary.get("error", "-")[:60] if record.status == "failed" else "-"


def data_sizes(record: RunRecord) -> str:
    """'mnist 50000/10000/10000': the data folder's name and its train/val/test sizes."""
    data = record.data
    return f"{Path(data.root).name} {data.train}/{data.val}/{data.test}" if data else "-"


def list_runs(out: Path) -> list[list[str]]:
    if not out.is_dir():
        what = "is a file" if out.exists() else "does not exist"
        raise ConvexpError(f"--out {out} {what}: pass the folder that holds the run folders (default: runs)")
    rows = []
    for path in sorted(out.glob("*/summary.json")):
        try:
            record = RunRecord.read(path.parent)
        except ConvexpError:
            rows.append([path.parent.name, "?", "unreadable summary.json", "-", "-", "-"])
            continue
        status = record.status or "?"
        if status == "running" and not is_alive(path.parent):
            status = "dead (killed while running; `convexp resume` it)"
        mixed = f" ({record.summary['precision']})" if record.summary.get("precision", "fp32") != "fp32" else ""
        rows.append([path.parent.name, record.command or "?", status, key_metric(record) + mixed, data_sizes(record),
                     record.summary.get("started_at", "-")])
    return rows
