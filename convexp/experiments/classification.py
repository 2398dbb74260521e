"""Test-set breakdowns the varres experiments share: per resolution, per class, confusion."""

from __future__ import annotations

from convexp import plots
from convexp.callbacks import Callback
from convexp.data import Split
from convexp.runs import RunFolder
from convexp.stats import accuracy, confusion_matrix
from convexp.train import Evaluation


def classification_breakdown(evaluation: Evaluation, split: Split, resolutions: list[int]) -> dict:
    """Accuracy overall, per source resolution (one bucket each) and per class, and the confusion.

    `resolutions[i]` names bucket i (the original size, also when images were resized to 28).
    """
    predictions = [p.tolist() for p in evaluation.predictions]
    labels = [y[: len(p)].tolist() for y, p in zip(split.labels, predictions)]  # all, unless train.max_eval_batches
    all_labels = [y for bucket in labels for y in bucket]
    all_predictions = [p for bucket in predictions for p in bucket]
    matrix = confusion_matrix(all_labels, all_predictions)
    return {
        "test_accuracy": evaluation.accuracy,
        "test_loss": evaluation.loss,
        "accuracy_per_resolution": {str(r): accuracy(y, p) for r, y, p in zip(resolutions, labels, predictions)},
        "accuracy_per_class": {str(c): matrix[c][c] / max(1, sum(matrix[c])) for c in range(10)},
        "confusion_matrix": matrix,
    }


def write_breakdown(run: RunFolder, breakdown: dict, title: str) -> None:
    run.update_summary(**breakdown)
    plots.confusion_matrix(breakdown["confusion_matrix"], title, run.plots / "confusion.png")


class BreakdownWriter(Callback):
    """A study's child gets its test breakdown (per resolution, per class, confusion matrix)
    written into its folder once it has trained and been tested, before it is marked completed."""

    def __init__(self, test: Split, title: str):
        self.test, self.title = test, title

    def on_run_end(self, run: RunFolder, result) -> None:
        if result.test is not None:  # a sweep's run is tested only if its point is chosen
            write_breakdown(run, classification_breakdown(result.test, self.test, self.test.resolutions), self.title)
