"""The one training and evaluation loop every experiment uses, with checkpoint and resume.

A "training unit" is one model trained on one set of splits into one run folder. It writes
metrics.csv, batches.csv and a checkpoint after each epoch, and on completion model.pt, plots
and the final numbers in summary.json. Called on a folder that already holds a checkpoint, it
carries on from the last completed epoch; on a completed folder it only reads the results back.
It never sets the run's status: that is lifecycle.open_run's, around it.
"""

from __future__ import annotations

import copy
import csv
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from convexp import plots
from convexp.callbacks import Callback, EpochEnd, watchers
from convexp.config import Train
from convexp.console import Reporter
from convexp.data import Split, Splits
from convexp.errors import Diverged, UnusableCheckpoint
from convexp.interrupts import raise_if_interrupted
from convexp.models import count_parameters
from convexp.precision import autocast
from convexp.precision import resolve as resolve_precision
from convexp.record import read_metrics
from convexp.runs import RunFolder

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
CHECKPOINT = "checkpoint.pt"


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    predictions: list[torch.Tensor]  # predicted class per bucket, (n_i,) on the CPU: its first n_i images


@dataclass
class History:
    rows: list[dict[str, float]] = field(default_factory=list)  # one per epoch: metrics.csv
    batch_losses: list[list[float]] = field(default_factory=list)  # [epoch][batch]
    epoch_seconds: list[float] = field(default_factory=list)  # training time, evaluation excluded

    def state(self) -> dict:
        return {"rows": self.rows, "batch_losses": self.batch_losses, "epoch_seconds": self.epoch_seconds}

    def best(self, key: str = "val_accuracy") -> dict[str, float]:
        return max(self.rows, key=lambda row: row[key])


@dataclass
class TrainResult:
    model: nn.Module
    history: History
    test: Evaluation | None  # None when train.test is off (a sweep's runs, until their point is chosen)
    summary: dict


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:  # numpy is optional for convexp itself
        pass


# -- evaluation ---------------------------------------------------------------------------------


def evaluate(model: nn.Module, split: Split, batch_size: int, max_batches: int = 0,
             precision: torch.dtype | None = None) -> Evaluation:
    """Mean cross-entropy and accuracy over a whole split (or the first max_batches batches of
    each bucket: a smoke run's), in eval mode, one sync at the end; the forward under autocast
    to `precision` (None: float32)."""
    model.eval()
    device = split.labels[0].device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    predictions = []
    with torch.inference_mode(), autocast(precision, device):
        for images, labels in zip(split.images, split.labels):
            starts = range(0, len(labels), batch_size)
            bucket_predictions = []
            for start in starts[:max_batches] if max_batches else starts:
                logits = model(images[start : start + batch_size])
                targets = labels[start : start + batch_size]
                loss_sum += F.cross_entropy(logits, targets, reduction="sum")
                predicted = logits.argmax(dim=1)
                correct += (predicted == targets).sum()
                bucket_predictions.append(predicted)
            predictions.append(torch.cat(bucket_predictions).cpu())
    total = sum(len(p) for p in predictions)
    return Evaluation(loss_sum.item() / total, correct.item() / total, predictions)


# -- one epoch ----------------------------------------------------------------------------------


def batch_order(split: Split, batch_size: int, generator: torch.Generator) -> list[tuple[int, torch.Tensor]]:
    """(bucket, indices) per batch: shuffled within each bucket; buckets interleaved at random."""
    batches = []
    for bucket, labels in enumerate(split.labels):
        permutation = torch.randperm(len(labels), generator=generator).to(labels.device)
        batches += [(bucket, indices) for indices in permutation.split(batch_size)]
    if len(split.labels) > 1:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    split: Split,
    batch_size: int,
    generators: dict[str, torch.Generator],
    augment: Augmentation | None,
    advance: Callable[[], None],
    max_batches: int = 0,
    learning_rate: Callable[[int], float] | None = None,
    first_step: int = 0,
    label_smoothing: float = 0.0,
    on_batch_end: Callable[[int, torch.Tensor], None] = lambda batch, loss: None,
    precision: torch.dtype | None = None,
) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
    """One pass over `split` (or its first max_batches batches): the loss of every batch, on
    device, and the batches as (bucket, indices).

    `learning_rate(step)`, where given, sets the rate before each batch; steps count every batch
    of training from 0, this epoch's first being `first_step`. `on_batch_end(batch, loss)` after
    each batch (from 1), the loss still on the device. The forward pass and the loss run under
    autocast to `precision` (None: float32); the backward follows the forward's dtypes, and the
    optimizer updates the float32 weights.
    """
    model.train()
    order = batch_order(split, batch_size, generators["shuffle"])
    if max_batches:
        order = order[:max_batches]
    losses = torch.empty(len(order), device=split.labels[0].device)
    for i, (bucket, indices) in enumerate(order):
        images, labels = split.images[bucket][indices], split.labels[bucket][indices]
        if augment is not None:
            images = augment(images, generators["augment"])
        if learning_rate is not None:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(first_step + i)
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision, images.device):
            loss = F.cross_entropy(model(images), labels, label_smoothing=label_smoothing)
        loss.backward()
        optimizer.step()
        losses[i] = loss.detach()  # no .item(): no device sync per batch
        advance()
        on_batch_end(i + 1, losses[i])
        raise_if_interrupted()  # a Ctrl-C whose KeyboardInterrupt Python dropped (convexp/interrupts.py)
    return losses, order


def trained_on(split: Split, order: list[tuple[int, torch.Tensor]]) -> Split:
    """The images of `split` that the batches in `order` hold, bucket by bucket."""
    buckets = sorted({bucket for bucket, _ in order})
    rows = {b: torch.cat([indices for bucket, indices in order if bucket == b]).sort().values for b in buckets}
    return Split([split.images[b][rows[b]] for b in buckets], [split.labels[b][rows[b]] for b in buckets])


def check_finite(losses: list[float], epoch: int, lr: float) -> None:
    for batch, loss in enumerate(losses, start=1):
        if not math.isfinite(loss):
            raise Diverged(
                f"training loss became {loss} at epoch {epoch}, batch {batch}: the learning rate "
                f"train.lr={lr:g} is probably too high; lower it (e.g. --set train.lr={lr / 10:g})"
            )


# -- optimizer and learning-rate schedule -------------------------------------------------------


def make_optimizer(model: nn.Module, cfg: Train, device: torch.device) -> torch.optim.Optimizer:
    # fused on a GPU: one kernel for every parameter's update instead of several per tensor, where
    # launches, not arithmetic, bound a small network's step (the CPU keeps PyTorch's default).
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")


def schedule(cfg: Train, batches_per_epoch: int) -> Callable[[int], float] | None:
    """The learning rate at each step (batch) of the whole training, or None for a constant train.lr.

    A pure function of the step, so a resumed run continues the same curve with no state saved.
    """
    if cfg.schedule == "constant" and not cfg.warmup_epochs:
        return None
    total = cfg.epochs * batches_per_epoch
    warmup = round(cfg.warmup_epochs * batches_per_epoch)

    def learning_rate(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        if cfg.schedule == "constant":
            return cfg.lr
        progress = (step - warmup) / max(1, total - warmup)  # 0 at the end of warm-up, 1 after the last batch
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))

    return learning_rate


# -- the training unit --------------------------------------------------------------------------


def make_generators(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    shuffle = torch.Generator().manual_seed(seed)
    augment = torch.Generator(device=device).manual_seed(seed + 1)
    return {"shuffle": shuffle, "augment": augment}


def rng_state(generators: dict[str, torch.Generator]) -> dict:
    state = {name: g.get_state() for name, g in generators.items()}
    state["torch"] = torch.get_rng_state()
    state["python"] = random.getstate()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict, generators: dict[str, torch.Generator]) -> None:
    for name, g in generators.items():
        g.set_state(state[name])
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_unit(
    run: RunFolder,
    model: nn.Module,
    splits: Splits,
    cfg: Train,
    *,
    seed: int,
    device: torch.device,
    reporter: Reporter,
    augment: Augmentation | None = None,
    label: str = "",
    callbacks: tuple[Callback, ...] = (),
) -> TrainResult:
    """Train `model` (already on `device`) into `run`, or resume it, or read back a finished run.
    `callbacks` watch it (convexp/callbacks.py), after those set around it with `watching`."""
    callbacks = (*callbacks, *watchers())
    optimizer = make_optimizer(model, cfg, device)
    generators = make_generators(seed, device)
    history = History()
    if run.status == "completed":
        return read_completed(run, model, splits, cfg)
    start_epoch = 0
    if (run.path / CHECKPOINT).exists():  # a folder or other non-file there is refused by read_checkpoint
        start_epoch = load_checkpoint(run, model, optimizer, generators, history)
        reporter.line(f"{label}resuming after epoch {start_epoch} of {cfg.epochs}")
    elif (run.path / "metrics.csv").is_file():  # epochs were done, but their checkpoint is gone
        reporter.line(f"{label}no {CHECKPOINT} in {run.path} though epochs were done before: training again from epoch 1")
    precision, why = resolve_precision(cfg.precision, device)
    run.update_summary(seed=seed, device=str(device), parameters=count_parameters(model), data=splits.record(),
                       precision="bf16" if precision is not None else "fp32", precision_reason=why)
    snapshot = None
    prefix = f"{label}epoch"
    all_batches = sum(math.ceil(len(y) / cfg.batch_size) for y in splits.train.labels)
    n_batches = min(all_batches, cfg.max_batches or all_batches)
    learning_rate = schedule(cfg, n_batches)
    try:
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            started = time.perf_counter()
            def batch_end(batch: int, loss: torch.Tensor, epoch: int = epoch) -> None:
                for callback in callbacks:
                    callback.on_batch_end(run, epoch, batch, loss)

            with reporter.bar(f"{prefix} {epoch}/{cfg.epochs}", n_batches) as advance:
                losses, order = train_epoch(model, optimizer, splits.train, cfg.batch_size, generators, augment, advance,
                                            cfg.max_batches, learning_rate, (epoch - 1) * n_batches, cfg.label_smoothing,
                                            batch_end, precision)
                losses = losses.tolist()  # the epoch's one device sync
            history.epoch_seconds.append(round(time.perf_counter() - started, 3))
            check_finite(losses, epoch, cfg.lr)
            history.batch_losses.append(losses)
            # A smoke run (max_batches) measures its train metrics on what it trained on: the whole
            # training set would cost it many times its training.
            trained = trained_on(splits.train, order) if n_batches < all_batches else splits.train
            history.rows.append(epoch_metrics(model, splits, cfg, epoch, trained, eval_precision(precision)))
            event = EpochEnd(run, epoch, cfg.epochs, history.rows[-1], history.epoch_seconds[-1], losses,
                             (epoch - 1) * n_batches, optimizer.param_groups[0]["lr"])
            # The epoch's snapshot before its metrics show in metrics.csv: a Ctrl-C from then on
            # saves this epoch, so resume repeats no work. Then the watchers, after metrics.csv:
            # one that stops the run (a pruned trial) leaves the epoch it stopped at written.
            snapshot = make_snapshot(epoch, model, optimizer, generators, history)
            write_progress(run, history)
            for callback in callbacks:
                callback.on_epoch_end(event)
            if epoch % cfg.checkpoint_every == 0:
                run.save_torch(CHECKPOINT, snapshot)
            reporter.line(" | ".join([format_epoch(prefix, epoch, cfg.epochs, history), *event.notes]))
    except KeyboardInterrupt:
        if snapshot is not None:  # the last completed epoch, so resume repeats no work
            run.save_torch(CHECKPOINT, snapshot)
        raise  # the run's status is lifecycle.open_run's to set
    result = finish(run, model, splits, cfg, history)
    for callback in callbacks:
        callback.on_run_end(run, result)
    return result


def eval_precision(training: torch.dtype | None) -> torch.dtype | None:
    """Evaluation runs in the training's precision (see README, Mixed precision, for the measurement)."""
    return training


def epoch_metrics(model: nn.Module, splits: Splits, cfg: Train, epoch: int, train: Split,
                  precision: torch.dtype | None = None) -> dict[str, float]:
    """Loss and accuracy on `train` (the training images measured), validation, and test if asked."""
    row: dict[str, float] = {"epoch": epoch}
    measured = {"train": train, "val": splits.val, "test": splits.test}
    names = ["train", "val"] + (["test"] if cfg.test_each_epoch else [])
    for name in names:
        result = evaluate(model, measured[name], cfg.eval_batch_size, cfg.max_eval_batches, precision)
        row[f"{name}_loss"] = result.loss
        row[f"{name}_accuracy"] = result.accuracy
    return row


def format_epoch(prefix: str, epoch: int, epochs: int, history: History) -> str:
    row = history.rows[-1]
    parts = [f"{prefix} {epoch}/{epochs}"]
    for name in ("train", "val", "test"):
        if f"{name}_loss" in row:
            parts.append(f"{name} loss {row[f'{name}_loss']:.4f} acc {row[f'{name}_accuracy']:.4f}")
    parts.append(f"{history.epoch_seconds[-1]:.1f}s")
    return " | ".join(parts)


def make_snapshot(epoch, model, optimizer, generators, history) -> dict:
    return {
        "epoch": epoch,
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "rng": rng_state(generators),
        "history": copy.deepcopy(history.state()),
    }


CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "rng", "history")  # make_snapshot's
HISTORY_KEYS = ("rows", "batch_losses", "epoch_seconds")  # History.state()'s


def load_checkpoint(run, model, optimizer, generators, history: History) -> int:
    state = read_checkpoint(run)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"], generators)
        epoch = int(state["epoch"])
    except Exception as exc:  # torch's messages run over many lines: the first names the mismatch
        raise unusable(run, f"does not fit this run ({type(exc).__name__}: {first_line(exc)})") from None
    history.rows, history.batch_losses, history.epoch_seconds = (state["history"][key] for key in HISTORY_KEYS)
    return epoch


def read_checkpoint(run) -> dict:
    """checkpoint.pt's mapping, with every key make_snapshot writes, or UnusableCheckpoint saying what is wrong."""
    path = run.path / CHECKPOINT
    if not path.is_file():
        raise unusable(run, "is not a file")
    size = path.stat().st_size
    if size == 0:
        raise unusable(run, "is empty (0 bytes)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise unusable(run, f"is truncated or not a checkpoint ({size:,} bytes; {type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(state, dict):
        raise unusable(run, f"holds a {type(state).__name__}, not a checkpoint's mapping")
    history = state.get("history")
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    missing += [f"history.{key}" for key in HISTORY_KEYS if isinstance(history, dict) and key not in history]
    if missing or not isinstance(history, dict):
        raise unusable(run, f"is incomplete (no {', '.join(missing or ['history mapping'])})")
    return state


def unusable(run, what: str) -> UnusableCheckpoint:
    path = run.path / CHECKPOINT
    return UnusableCheckpoint(f"checkpoint {path} {what}: move it aside (mv {path} {path}.bad) to train that run "
                              f"again from epoch 1, then `convexp resume {run.resume_folder()}`")


def first_line(exc: BaseException, limit: int = 200) -> str:
    line = (str(exc).strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[:limit] + "..."


def write_progress(run: RunFolder, history: History) -> None:
    run.write_csv("metrics.csv", history.rows)
    run.write_csv(
        "batches.csv",
        [
            {"epoch": e, "batch": b, "loss": loss}
            for e, losses in enumerate(history.batch_losses, start=1)
            for b, loss in enumerate(losses, start=1)
        ],
    )


def finish(run: RunFolder, model: nn.Module, splits: Splits, cfg: Train, history: History) -> TrainResult:
    precision = eval_precision(resolve_precision(cfg.precision, splits.test.labels[0].device)[0])
    test = evaluate(model, splits.test, cfg.eval_batch_size, cfg.max_eval_batches, precision) if cfg.test else None
    run.save_torch("model.pt", model.state_dict())
    plots.training_curves(history.rows, history.batch_losses[0], run.plots)
    best = history.best()
    last = history.rows[-1]
    summary = run.update_summary(
        epochs=len(history.rows),
        final={k: v for k, v in last.items() if k != "epoch"},
        best_val_accuracy=best["val_accuracy"],
        best_epoch=int(best["epoch"]),
        **({"test_loss": test.loss, "test_accuracy": test.accuracy} if test is not None else {}),
        seconds_per_epoch=round(sum(history.epoch_seconds) / len(history.epoch_seconds), 3),
        epoch_seconds=history.epoch_seconds,
    )
    return TrainResult(model, history, test, summary)


def read_completed(run: RunFolder, model: nn.Module, splits: Splits, cfg: Train) -> TrainResult:
    """A finished unit met again on resume: its numbers come from its files, not from training."""
    model.load_state_dict(torch.load(run.path / "model.pt", map_location="cpu", weights_only=True))
    summary = run.read_summary()
    history = History(
        rows=read_metrics(run.path),
        epoch_seconds=summary.get("epoch_seconds", []),
    )
    for row in read_csv(run, "batches.csv"):
        epoch = int(row["epoch"])
        while len(history.batch_losses) < epoch:
            history.batch_losses.append([])
        history.batch_losses[epoch - 1].append(float(row["loss"]))
    test = None
    if cfg.test:  # a sweep's chosen point, tested only now: its summary gains the numbers
        precision = eval_precision(resolve_precision(cfg.precision, splits.test.labels[0].device)[0])
        test = evaluate(model, splits.test, cfg.eval_batch_size, cfg.max_eval_batches, precision)
        if "test_accuracy" not in summary:
            summary = run.update_summary(test_loss=test.loss, test_accuracy=test.accuracy)
    return TrainResult(model, history, test, summary)


def test_cell(result: TrainResult) -> str | float:
    """Test accuracy for a result table, or why there is none."""
    return result.test.accuracy if result.test is not None else "not tested (train.test=false)"


def read_csv(run: RunFolder, relative: str) -> list[dict[str, str]]:
    with (run.path / relative).open() as f:
        return list(csv.DictReader(f))
