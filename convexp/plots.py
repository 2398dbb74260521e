"""Every figure convexp draws. matplotlib with the Agg backend: files only, no display needed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

if TYPE_CHECKING:
    import torch

SPLIT_COLOURS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}


# Margins of the curves per epoch or batch (6 x 4 in or so; at most 7-character tick labels),
# whose layout is always the same: tight_layout would measure it again with a whole extra draw,
# 40% of the cost of every run's three figures.
CURVE_MARGINS = {"left": 0.16, "right": 0.97, "bottom": 0.12, "top": 0.92}


def subplots(figsize: tuple[float, float]):
    """A figure with one axes, its title at a fixed height above it: matplotlib otherwise places a
    title by measuring every tick label of the axes again at each draw (a quarter of the time of
    drawing a curve), to clear ticks on top, and no figure here has ticks above a title."""
    with plt.rc_context({"axes.titley": 1.0}):
        return plt.subplots(figsize=figsize)


def save(fig, path: Path, margins: dict[str, float] | None = None) -> Path:
    """The figure as a PNG, written atomically like every run file: a kill never leaves half a PNG.
    Laid out by tight_layout, or with fixed `margins` (fractions of the figure)."""
    import io

    from convexp.runs import write_atomic

    if margins:
        fig.subplots_adjust(**margins)
    else:
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return write_atomic(path, buffer.getvalue())


def training_curves(rows: list[dict], first_epoch_losses: list[float], plots_dir: Path) -> None:
    """loss.png and accuracy.png per epoch (rows: metrics.csv's), batch_loss.png (first epoch)."""
    epochs = [int(row["epoch"]) for row in rows]
    for metric, ylabel in (("loss", "cross-entropy loss"), ("accuracy", "accuracy")):
        fig, ax = subplots(figsize=(6, 4))
        for split, colour in SPLIT_COLOURS.items():
            key = f"{split}_{metric}"
            if key in rows[0]:
                ax.plot(epochs, [row[key] for row in rows], marker="o", color=colour, label=split)
        ax.set(xlabel="epoch", ylabel=ylabel, title=f"{metric.capitalize()} per epoch")
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
        save(fig, plots_dir / f"{metric}.png", CURVE_MARGINS)
    batch_loss(first_epoch_losses, plots_dir / "batch_loss.png")


def batch_loss(losses: list[float], path: Path) -> None:
    fig, ax = subplots(figsize=(6, 4))
    steps = range(1, len(losses) + 1)
    ax.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=0.8, label="batch loss")
    window = max(1, len(losses) // 50)
    smooth = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1]) for i in range(len(losses))]
    ax.plot(steps, smooth, color="tab:blue", label=f"running mean ({window} batches)")
    ax.set(xlabel="batch", ylabel="training loss", title="Training loss per batch, first epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path, CURVE_MARGINS)


def mean_std_curves(
    curves: dict[str, list[list[float]]], ylabel: str, title: str, path: Path
) -> None:
    """One line per label: the mean over seeds, with a ±1 std band when there are several.

    curves[label] is a list (one per seed) of per-epoch values.
    """
    from convexp.stats import mean_std_per_epoch

    fig, ax = subplots(figsize=(6.5, 4.2))
    for label, runs in curves.items():
        means, stds = mean_std_per_epoch(runs)
        epochs = range(1, len(means) + 1)
        (line,) = ax.plot(epochs, means, marker="o", label=f"{label} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(epochs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)], color=line.get_color(), alpha=0.2)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path, CURVE_MARGINS)


def augmentation_grid(originals: torch.Tensor, draws: list[torch.Tensor], path: Path) -> None:
    """originals (n, 1, h, w); draws: one (n, 1, h, w) per augmented draw. Rows = digits.

    One image of the whole grid, not an axes per cell: 48 axes took 1.2 s to draw, this 0.2 s."""
    columns = [originals] + draws
    grid = image_grid(columns)
    width = originals.shape[-1]
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")  # the gaps
    fig, ax = subplots(figsize=(1.2 * len(columns), 1.2 * originals.shape[0]))
    ax.imshow(grid.numpy(), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([col * (width + GRID_GAP) + (width - 1) / 2 for col in range(len(columns))],
                  ["original"] + [f"draw {col}" for col in range(1, len(columns))], fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    fig.suptitle("Training augmentations: each row one digit", fontsize=10)
    save(fig, path)


GRID_GAP = 2  # pixels between the cells of image_grid


def image_grid(columns: list[torch.Tensor]) -> torch.Tensor:
    """(rows x columns) cells of (h, w) images in one 2-D tensor, NaN in the gaps between them.

    columns[c][r, 0] is the cell at row r, column c; all images share one size."""
    import torch

    n, h, w = columns[0].shape[0], columns[0].shape[-2], columns[0].shape[-1]
    grid = torch.full((n * (h + GRID_GAP) - GRID_GAP, len(columns) * (w + GRID_GAP) - GRID_GAP), float("nan"))
    for col, images in enumerate(columns):
        for row in range(n):
            top, left = row * (h + GRID_GAP), col * (w + GRID_GAP)
            grid[top : top + h, left : left + w] = images[row, 0].detach().float().cpu()
    return grid


def confusion_matrix(matrix: list[list[int]], title: str, path: Path) -> None:
    """Counts written in each cell; colour is the row-normalised rate (recall per true class)."""
    import numpy as np

    counts = np.array(matrix)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = subplots(figsize=(6.2, 5.4))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7, color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted digit", ylabel="true digit", title=title, xticks=range(10), yticks=range(10))
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    save(fig, path, {"left": 0.1, "right": 0.98, "bottom": 0.1, "top": 0.93})  # always this layout: see CURVE_MARGINS


def metric_against(points: list[tuple[object, float, float]], key: str, metric: str, path: Path) -> None:
    """One swept key on x (its values, in grid order), each point's mean ± std of `metric` on y."""
    labels = list(dict.fromkeys(str(x) for x, _, _ in points))
    fig, ax = subplots(figsize=(6, 4))
    for x, mean, std in points:
        ax.errorbar(labels.index(str(x)), mean, yerr=std, fmt="o", capsize=3, color="tab:blue", alpha=0.7)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel(key)
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.set_title(f"{metric} against {key}: each point of the sweep")
    ax.grid(alpha=0.3)
    save(fig, path)


def grouped_bars(groups: dict[str, dict[str, float]], ylabel: str, title: str, path: Path, ylim=None) -> None:
    """groups[series][category] = value: one bar group per category, one colour per series."""
    categories = list(next(iter(groups.values())))
    width = 0.8 / len(groups)
    fig, ax = subplots(figsize=(max(6, 1.2 * len(categories) * len(groups)), 4.2))
    for i, (series, values) in enumerate(groups.items()):
        xs = [c + (i - (len(groups) - 1) / 2) * width for c in range(len(categories))]
        bars = ax.bar(xs, [values[c] for c in categories], width, label=series)
        ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_xticks(range(len(categories)), categories)
    ax.set(ylabel=ylabel, title=title)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    save(fig, path)
