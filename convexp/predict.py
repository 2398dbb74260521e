"""`convexp predict`: a trained run's network applied to image files of any size.

A run folder keeps a state_dict (model.pt) and the config it was trained with (config.yaml);
`load_trained` rebuilds the network from the two, and `prepare` puts an image into the form the
network was trained on: grey in [0, 1] as the varres loader reads it (varres.open_grey), resized
to 28x28 as varres-resize does for MNISTConvNet (kept as is for the global-pooling network), and
normalised only if the run's config says so. `convexp export` reads runs through the same code.
"""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from convexp.errors import ConvexpError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FIXED_SIZE = 28  # MNISTConvNet's input: what varres-resize resizes every image to
MAX_TABLE_ROWS = 50  # the terminal shows the first ones; predictions.csv holds them all


class SomeImagesFailed(ConvexpError):
    """Some images of a folder could not be predicted; the others were, and are written (exit 1)."""

    exit_code = 1


# -- the trained run ------------------------------------------------------------------------------


@dataclass
class TrainedModel:
    """A run's network in eval mode, with what its inputs must look like."""

    path: Path  # the run folder holding model.pt
    network: nn.Module  # the class it was trained as (hand-written conv included)
    config: object  # its config.yaml, loaded through its experiment's Config
    experiment: object  # its spec (convexp.spec.Experiment)
    fixed_size: int | None  # 28 for MNISTConvNet; None: any size (global pooling)
    smallest: int  # the smallest side the network takes, in px
    normalization: tuple[float, float] | None  # (mean, std) subtracted and divided, or None

    @property
    def global_pooling(self) -> bool:
        return self.fixed_size is None


def build_network(experiment, config) -> nn.Module | None:
    """The network `experiment` trains for `config` (fresh weights), or None if it trains none."""
    from convexp.experiments.train_mnist import TrainMnistConfig
    from convexp.models import MNISTConvNet
    from convexp.spec import POOLING

    if experiment.network == POOLING:  # the experiment's own builder: one child's network
        from convexp.experiments.varres_pool import network

        return network(config)
    if isinstance(config, TrainMnistConfig):  # train-mnist, sweep-batch, augment, varres-resize
        return MNISTConvNet(config.model.conv)
    return None


def normalization(config) -> tuple[float, float] | None:
    """(mean, std) if the run's data section normalised its images (data.normalize), else None."""
    from convexp.data import MNIST_MEAN, MNIST_STD

    return (MNIST_MEAN, MNIST_STD) if getattr(getattr(config, "data", None), "normalize", False) else None


def trained_runs(folder: Path) -> list[Path]:
    """Every run folder under `folder` (itself included) that holds a model.pt: a run, or the
    trained children of a study (a sweep's points may themselves be studies)."""
    if (folder / "model.pt").is_file():
        return [folder]
    return [run for child in sorted(folder.iterdir()) if child.is_dir() and (child / "summary.json").is_file()
            for run in trained_runs(child)]


def find_trained(run_dir: Path, child: str | None = None) -> Path:
    """The one trained run `run_dir` names: itself, its only trained child, or `child`."""
    from convexp.experiments import spec
    from convexp.record import RunRecord

    record = RunRecord.read(run_dir) if run_dir.is_dir() else None
    if record is None or not record.summary:
        raise ConvexpError(f"{run_dir} is not a run folder (no summary.json): pass a folder that `convexp runs` lists")
    runs = trained_runs(run_dir)
    if not runs:
        experiment = spec(record.command)
        if not experiment.study and build_network(experiment, load_run_config(run_dir, experiment)) is None:
            raise ConvexpError(f"{run_dir} is a run of {record.command}, which trains no model: "
                               "pass a run of train-mnist, augment, varres-resize, varres-pool or a study of them")
        raise ConvexpError(f"{run_dir} holds no model.pt (status: {record.status or 'unknown'}): it did not finish "
                           f"training; `convexp resume {run_dir}` finishes it, or pass a completed run")
    names = {run.relative_to(run_dir).as_posix(): run for run in runs}
    if child is None:
        if len(runs) == 1:
            return runs[0]
        raise ConvexpError(f"{run_dir} holds {len(runs)} trained runs: choose one with --child NAME ({', '.join(names)})")
    matches = [run for name, run in names.items() if child in (name, run.name)]
    if len(matches) != 1:
        which = "no" if not matches else "more than one"
        raise ConvexpError(f"--child {child} matches {which} trained run of {run_dir}: one of {', '.join(names)}")
    return matches[0]


def load_run_config(path: Path, experiment):
    from convexp.config import load_config

    return load_config(experiment.config, path / "config.yaml")


def load_trained(path: Path, device: torch.device) -> TrainedModel:
    """The network of the run at `path` with its trained weights, on `device`, in eval mode."""
    from convexp.experiments import spec
    from convexp.models import VariableInputNet, to_device
    from convexp.record import RunRecord

    experiment = spec(RunRecord.read(path).command)
    config = load_run_config(path, experiment)
    network = build_network(experiment, config)
    if network is None:
        raise ConvexpError(f"{path} is a run of {experiment.name}, which trains no model")
    network.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    pooling = isinstance(network, VariableInputNet)
    smallest = 2 ** network.features.depth if pooling else 2  # each block halves the size once
    return TrainedModel(path, to_device(network, device).eval(), config, experiment,
                        None if pooling else FIXED_SIZE, smallest, normalization(config))


# -- images ---------------------------------------------------------------------------------------


def image_files(paths: Iterable[Path]) -> list[Path]:
    """The PNG and JPEG files that `paths` name: files as given, folders searched recursively."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise ConvexpError(f"no PNG or JPEG images under {path}: pass a folder that holds some")
            files += found
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise ConvexpError(f"{path} is not an image (PNG or JPEG by its name): pass image files or folders")
            files.append(path)
        else:
            raise ConvexpError(f"{path} does not exist: pass image files or folders of them")
    return files


def read_image(path: Path, trained: TrainedModel) -> torch.Tensor:
    """(1, h, w) float32 in [0, 1], as the training data was read; too small an image is refused."""
    from convexp.varres import open_grey

    image = open_grey(str(path))
    h, w = image.shape[-2:]
    if min(h, w) < trained.smallest:
        why = (f"smaller than the smallest input of this network ({trained.smallest}x{trained.smallest} px: "
               f"each of its {trained.network.features.depth} blocks halves the size)") if trained.global_pooling \
            else "too small to hold a digit"
        raise ConvexpError(f"{path} is {h}x{w} px, {why}")
    return image


def prepare(images: torch.Tensor, trained: TrainedModel) -> torch.Tensor:
    """(n, 1, h, w) in [0, 1] -> the network's input: resized to 28x28 for MNISTConvNet (bilinear,
    antialiased, as varres-resize), then normalised as the run's config says."""
    from convexp.data import Split
    from convexp.varres import resize_split

    if trained.fixed_size is not None and images.shape[-2:] != (trained.fixed_size, trained.fixed_size):
        labels = torch.zeros(len(images), dtype=torch.long)  # resize_split carries labels; none here
        images = resize_split(Split([images], [labels]), trained.fixed_size, merge=False).images[0]
    if trained.normalization is not None:
        mean, std = trained.normalization
        images = (images - mean) / std
    return images


def classify(trained: TrainedModel, images: list[torch.Tensor], batch_size: int) -> torch.Tensor:
    """Softmax probabilities (n, 10) of images [(1, h_i, w_i)], in their order. Images of one size
    go through together, `batch_size` at a time: the global-pooling net takes each at its own size."""
    device = next(trained.network.parameters()).device
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        by_size.setdefault(tuple(image.shape[-2:]), []).append(i)
    probabilities = torch.empty(len(images), 10)
    with torch.inference_mode():
        for indices in by_size.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                batch = prepare(torch.stack([images[i] for i in chunk]), trained).to(device)
                probabilities[chunk] = trained.network(batch).softmax(dim=1).float().cpu()
    return probabilities


# -- the command ----------------------------------------------------------------------------------


def predictions_csv(files: list[Path], probabilities: torch.Tensor) -> bytes:
    """path,label,probability,p0..p9: one row per image."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "label", "probability", *(f"p{k}" for k in range(10))])
    for path, p in zip(files, probabilities.tolist()):
        label = max(range(10), key=p.__getitem__)
        writer.writerow([str(path), label, f"{p[label]:.6f}", *(f"{v:.6f}" for v in p)])
    return text.getvalue().encode()


def table_rows(files: list[Path], probabilities: torch.Tensor) -> list[list[str]]:
    """file, label, probability, and the next two classes with theirs."""
    top = probabilities.topk(3, dim=1)
    return [[str(path), str(k[0]), f"{p[0]:.4f}", f"{k[1]} ({p[1]:.4f})", f"{k[2]} ({p[2]:.4f})"]
            for path, k, p in zip(files, top.indices.tolist(), top.values.tolist())]


def predict(run_dir: Path, paths: list[Path], out: Path, device: str = "auto", batch_size: int = 256,
            child: str | None = None) -> Path:
    """Predict every image under `paths` with the run's network; write `out` (CSV) and show a table.

    Unreadable or too-small images of a folder are reported and skipped (SomeImagesFailed, exit 1,
    after writing the others); if no image is left, nothing is written (ConvexpError, exit 2).
    """
    from convexp.application import resolve_device
    from convexp.console import Reporter, print_table
    from convexp.runs import require_writable_file, write_atomic

    if batch_size < 1:
        raise ConvexpError(f"--batch-size must be at least 1; got {batch_size}")
    require_writable_file(Path(out), "predictions.csv")
    trained = load_trained(find_trained(Path(run_dir), child), resolve_device(device))
    files = image_files(paths)
    images, good, failures = [], [], []
    for path in files:
        try:
            images.append(read_image(path, trained))
            good.append(path)
        except ConvexpError as exc:
            failures.append(str(exc))
    if not images:
        raise ConvexpError(failures[0] if len(failures) == 1 else f"none of the {len(files)} images could be predicted: {failures[0]}")
    started = time.perf_counter()
    probabilities = classify(trained, images, batch_size)
    seconds = time.perf_counter() - started
    write_atomic(Path(out), predictions_csv(good, probabilities))
    reporter = Reporter()
    rows = table_rows(good, probabilities)
    print_table(reporter.console, f"{trained.path}: {len(good)} image(s)", ["file", "label", "probability", "next", "then"],
                rows[:MAX_TABLE_ROWS])
    if len(rows) > MAX_TABLE_ROWS:
        print(f"... and {len(rows) - MAX_TABLE_ROWS} more in {out}")
    print(f"predictions: {out} ({len(good)} images, {len(good) / seconds:,.0f} images/s on {device_name(trained)})")
    if failures:
        for failure in failures:
            print(f"skipped: {failure}", file=sys.stderr)
        raise SomeImagesFailed(f"{len(failures)} of {len(files)} images could not be predicted (skipped, listed above); "
                               f"the other {len(good)} are in {out}")
    return Path(out)


def device_name(trained: TrainedModel) -> str:
    return str(next(trained.network.parameters()).device)
