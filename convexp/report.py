"""`convexp report`: one page (report.html, self-contained, and report.md) from run folders.

Sections per experiment (config, headline numbers as mean ± std over seeds, plots) and a
table setting the seed report's headline results beside ours. A difference between two of our
settings counts as "beyond the seed spread" when their mean ± std intervals do not overlap.
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from convexp.errors import ConvexpError
from convexp.stats import mean_std


@dataclass
class RunInfo:
    path: Path
    summary: dict
    config: dict

    @property
    def command(self) -> str:
        return self.summary.get("command", "")


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    config: str = ""


# -- collecting ---------------------------------------------------------------------------------


def collect(run_dirs: list[Path]) -> list[RunInfo]:
    """The runs named, with a reproduce folder standing for its steps."""
    runs = []
    for run_dir in run_dirs:
        info = read_run(run_dir)
        if info.command == "reproduce":
            runs += [read_run(p) for p in sorted(run_dir.iterdir()) if (p / "summary.json").is_file()]
        else:
            runs.append(info)
    return runs


def read_run(path: Path) -> RunInfo:
    summary_file = path / "summary.json"
    if not summary_file.is_file():
        raise ConvexpError(f"{path} is not a convexp run folder (no summary.json): pass folders under runs/")
    config_file = path / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
    return RunInfo(path, json.loads(summary_file.read_text()), config or {})


def completed(runs: list[RunInfo], command: str) -> list[RunInfo]:
    return [r for r in runs if r.command == command and r.summary.get("status") == "completed"]


# -- numbers ------------------------------------------------------------------------------------


def spread(values: list[float]) -> dict | None:
    if not values:
        return None
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "n": len(values)}


def fmt(value: dict | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if value["n"] == 1:
        return f"{value['mean']:.{digits}f} (1 seed)"
    return f"{value['mean']:.{digits}f} ± {value['std']:.{digits}f} (n={value['n']})"


def beyond_spread(a: dict | None, b: dict | None) -> str:
    """'yes' when the mean ± std intervals do not overlap; needs two seeds on each side."""
    if a is None or b is None:
        return "-"
    if a["n"] < 2 or b["n"] < 2:
        return "n/a (one seed)"
    return "yes" if abs(a["mean"] - b["mean"]) > a["std"] + b["std"] else "no"


def from_results(entry: dict, n: int) -> dict:
    return {"mean": entry["mean"], "std": entry["std"], "n": n}


# -- sections -----------------------------------------------------------------------------------


def build(runs: list[RunInfo]) -> list[Section]:
    headline: list[list[str]] = []
    sections = [
        train_mnist_section(runs, headline),
        sweep_section(runs, headline),
        augment_section(runs, headline),
        count_params_section(runs, headline),
        varres_section(runs, headline),
        bench_section(runs),
    ]
    roots = sorted({str(r.config.get("data", {}).get("root")) for r in runs if r.config.get("data")})
    comparison = Section(
        "The seed report's results beside ours",
        [f"Ours are measured on the data these runs were given ({', '.join(roots) or 'see each config'}); "
         "the report trained on full MNIST (60,000 digits), so on a smaller set such as mnist-mini (8,000 "
         "training digits) lower absolute accuracies are expected. 'Beyond spread': the two settings' "
         "mean ± std intervals do not overlap.",
         "Runs with fewer epochs than the report (for example --fast-dev-run) check the pipeline, not the numbers."],
        [(["question", "the report", "ours", "beyond spread"], headline)],
    )
    return [comparison] + [s for s in sections if s is not None]


def settings(run: RunInfo, batch: bool = True) -> str:
    train = run.config.get("train", {})
    epochs = train.get("epochs", "?")
    text = f"{epochs} epoch{'' if epochs == 1 else 's'}"
    return text + (f", batch {train.get('batch_size', '?')}" if batch else "")


def images(run: RunInfo, *names: str) -> list[Path]:
    return [run.path / "plots" / n for n in names if (run.path / "plots" / n).is_file()]


def config_text(run: RunInfo) -> str:
    return yaml.safe_dump(run.config, sort_keys=False) if run.config else ""


def train_mnist_section(runs, headline) -> Section | None:
    done = completed(runs, "train-mnist")
    if not done:
        return None
    val = spread([r.summary["final"]["val_accuracy"] for r in done])
    test = spread([r.summary["test_accuracy"] for r in done])
    headline.append([f"Q7: MNISTConvNet, {settings(done[0])}", "validation accuracy > 98% after 3 epochs (batch 16)",
                     f"val {fmt(val)}, test {fmt(test)}", "-"])
    rows = [[r.path.name, f"{r.summary['final']['val_accuracy']:.4f}", f"{r.summary['test_accuracy']:.4f}",
             f"{r.summary['seconds_per_epoch']:.2f}", r.summary.get("device", "")] for r in done]
    return Section("Question 7: training MNISTConvNet", [f"{len(done)} run(s)."],
                   [(["run", "final val acc", "test acc", "s/epoch", "device"], rows)],
                   images(done[0], "loss.png", "accuracy.png", "batch_loss.png"), config_text(done[0]))


def sweep_section(runs, headline) -> Section | None:
    done = completed(runs, "sweep-batch")
    if not done:
        return None
    results = done[0].summary["results"]
    best = {b: from_results(e["best_val_accuracy"], e["runs"]) for b, e in results.items() if "best_val_accuracy" in e}
    rows = [[b, str(e["runs"]), str(e["failed"]), fmt(best.get(b)), fmt(from_results(e["final_val_loss"], e["runs"]) if "final_val_loss" in e else None),
             fmt(from_results(e["seconds_per_epoch"], e["runs"]), 2) if "seconds_per_epoch" in e else "-"]
            for b, e in results.items()]
    if best:
        top = max(best, key=lambda b: best[b]["mean"])
        low = min(best, key=lambda b: best[b]["mean"])
        headline.append([f"Q8: best validation accuracy by batch size, {settings(done[0], batch=False)}",
                         "≈ 99%, best at batch 32 (8 epochs, one seed)",
                         "; ".join(f"batch {b}: {fmt(v)}" for b, v in best.items()),
                         f"batch {top} vs {low}: {beyond_spread(best[top], best[low])}"])
    return Section("Question 8: batch size", [f"Sweep {done[0].path.name}: mean ± std over seeds."],
                   [(["batch size", "runs", "failed", "best val acc", "final val loss", "s/epoch"], rows)],
                   images(done[0], "val_accuracy.png", "val_loss.png"), config_text(done[0]))


def augment_section(runs, headline) -> Section | None:
    done = completed(runs, "augment")
    if not done:
        return None
    on = [r for r in done if r.summary.get("augmented")]
    off = [r for r in done if not r.summary.get("augmented")]
    test_on = spread([r.summary["test_accuracy"] for r in on])
    test_off = spread([r.summary["test_accuracy"] for r in off])
    time_on = spread([r.summary["seconds_per_epoch"] for r in on])
    time_off = spread([r.summary["seconds_per_epoch"] for r in off])
    headline.append([f"Q9: test accuracy with augmentation, {settings(done[0])}", "99% (8 epochs, batch 16)",
                     f"augmented {fmt(test_on)}; plain {fmt(test_off)}", beyond_spread(test_on, test_off)])
    rows = [["augmented", fmt(test_on), fmt(time_on, 2)], ["plain", fmt(test_off), fmt(time_off, 2)]]
    shown = on[0] if on else done[0]
    return Section("Question 9: data augmentation", [f"{len(on)} augmented and {len(off)} plain run(s)."],
                   [(["training data", "test accuracy", "s/epoch"], rows)],
                   images(shown, "augmentations.png", "accuracy.png"), config_text(shown))


def varres_section(runs, headline) -> Section | None:
    resize = completed(runs, "varres-resize")
    pool = completed(runs, "varres-pool")
    if not resize and not pool:
        return None
    tables, pictures, text = [], [], []
    resize_acc = spread([r.summary["test_accuracy"] for r in resize])
    pool_results = pool[0].summary.get("results", {}) if pool else {}
    pooled = {p: from_results(e["test_accuracy"], e["runs"]) for p, e in pool_results.items()}
    if resize:
        resolutions = list(resize[0].summary["accuracy_per_resolution"])
        per_res = {r: spread([run.summary["accuracy_per_resolution"][r] for run in resize]) for r in resolutions}
        tables.append((["varres-resize", "overall"] + [f"{r} px" for r in resolutions],
                       [["test accuracy", fmt(resize_acc)] + [fmt(per_res[r]) for r in resolutions]]))
        pictures += images(resize[0], "confusion.png")
    if pool_results:
        resolutions = list(next(iter(pool_results.values()))["accuracy_per_resolution"])
        tables.append((["varres-pool", "overall"] + [f"{r} px" for r in resolutions],
                       [[f"{p} pooling", fmt(pooled[p])] + [fmt(from_results(e["accuracy_per_resolution"][r], e["runs"])) for r in resolutions]
                        for p, e in pool_results.items()]))
        pictures += images(pool[0], "accuracy_per_resolution.png", "val_accuracy.png", "confusion-max.png", "confusion-mean.png")
        text.append(f"Variable-input net with N={pool[0].config.get('model', {}).get('channels')} "
                    f"({pool[0].summary.get('parameters')} parameters).")
    if "max" in pooled and "mean" in pooled:
        headline.append(["Q16: global max vs mean pooling", "max ≈ 98.X%, mean ≈ 95.X%",
                         f"max {fmt(pooled['max'])}; mean {fmt(pooled['mean'])}", beyond_spread(pooled["max"], pooled["mean"])])
    best_pool = max(pooled.values(), key=lambda v: v["mean"]) if pooled else None
    if resize_acc and best_pool:
        headline.append(["Q17: resize to 28 vs variable-resolution net (test)", "96.8% vs 98.89% (15 epochs, lr 0.0009)",
                         f"resize {fmt(resize_acc)}; pooling {fmt(best_pool)}", beyond_spread(resize_acc, best_pool)])
    return Section("Questions 12-17: variable-resolution MNIST", text, tables, pictures,
                   config_text(pool[0] if pool else resize[0]))


def count_params_section(runs, headline) -> Section | None:
    done = completed(runs, "count-params")
    if not done:
        return None
    data = json.loads((done[0].path / "params.json").read_text())
    counts = {name: t["parameters"] for name, t in data["networks"].items()}
    rows = [[name, f"{n:,}"] for name, n in counts.items()]
    match = data.get("match", [])
    rows += [[f"VariableInputNet(N={m['channels']})", f"{m['parameters']:,}"] for m in match]
    ours = ", ".join(f"{name}: {n:,}" for name, n in counts.items())
    if match:
        ours += "; nearest N: " + ", ".join(f"{m['channels']} ({m['parameters']:,})" for m in match)
    headline.append(["Q15: parameter counts", "29,066 base; 23,946 at N=64; nearest N=81 (29,029) and 82 (29,328)", ours, "-"])
    return Section("Questions 10 and 15: parameters", [], [(["network", "parameters"], rows)], [], config_text(done[0]))


def bench_section(runs) -> Section | None:
    done = completed(runs, "bench")
    if not done:
        return None
    from convexp.experiments.bench import STEP_FLOOR  # here, so reports without a bench never import torch

    data = json.loads((done[0].path / "bench.json").read_text())
    rows = [[str(r["threads"]), str(r["batch_size"]), r["conv"], r["what"], f"{r['ms']:.2f}", f"{r.get('ratio', 1):.2f}x"]
            for r in data["rows"] if r["what"] in ("training step", STEP_FLOOR)]
    text = [f"Device: {data['device']}.",
            f"'{STEP_FLOOR}': the step if each hand-written conv layer cost only its three matmuls."]
    return Section("Hand-written vs native convolution", text,
                   [(["threads", "batch", "conv", "what", "ms", "ratio to native step"], rows)], images(done[0], "training_step.png"))


# -- rendering ----------------------------------------------------------------------------------


def render_markdown(sections: list[Section], where: Path, sources: list[Path]) -> str:
    lines = ["# convexp report", "", "Runs: " + ", ".join(f"`{s}`" for s in sources), ""]
    for section in sections:
        lines += [f"## {section.title}", ""] + [t + "\n" for t in section.text]
        for header, rows in section.tables:
            lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
            lines.append("")
        lines += [f"![{image.stem}]({os.path.relpath(image, where)})" for image in section.images]
        if section.config:
            lines += ["", "<details><summary>config</summary>", "", "```yaml", section.config.rstrip(), "```", "", "</details>"]
        lines.append("")
    return "\n".join(lines)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #bbb; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.yes { background: #e3f4e3; font-weight: bold; }
.figures { display: flex; flex-wrap: wrap; gap: 10px; } .figures img { max-width: 520px; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 8px; font-size: 0.85em; }
"""


def render_html(sections: list[Section], sources: list[Path]) -> str:
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>convexp report</title>",
             f"<style>{STYLE}</style></head><body><h1>convexp report</h1>",
             "<p>Runs: " + ", ".join(f"<code>{html.escape(str(s))}</code>" for s in sources) + "</p>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(t)}</p>" for t in section.text]
        for header, rows in section.tables:
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
            for row in rows:
                parts.append("<tr>" + "".join(
                    f"<td class='{'yes' if cell == 'yes' else ''}'>{html.escape(cell)}</td>" for cell in row) + "</tr>")
            parts.append("</table>")
        if section.images:
            parts.append("<div class='figures'>" + "".join(
                f"<img alt='{html.escape(i.stem)}' src='data:image/png;base64,{base64.b64encode(i.read_bytes()).decode()}'>"
                for i in section.images) + "</div>")
        if section.config:
            parts.append(f"<details><summary>config</summary><pre>{html.escape(section.config)}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dirs: list[Path], out: Path | None) -> Path:
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise ConvexpError(f"{run_dir} is not a folder: pass run folders under runs/")
    runs = collect(run_dirs)
    if not any(r.summary.get("status") == "completed" for r in runs):
        raise ConvexpError("none of the runs given has completed: nothing to report")
    target = out or (run_dirs[0] if len(run_dirs) == 1 else run_dirs[0].parent)
    target.mkdir(parents=True, exist_ok=True)
    sections = build(runs)
    from convexp.runs import RunFolder

    folder = RunFolder(target)
    folder.write_text("report.md", render_markdown(sections, target, run_dirs))
    folder.write_text("report.html", render_html(sections, run_dirs))
    return target
