"""Aggregation over seeds: mean and sample standard deviation."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample (n - 1) standard deviation; the std of a single value is 0."""
    if not values:
        raise ValueError("mean_std of no values")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_std_per_epoch(runs: list[list[float]]) -> tuple[list[float], list[float]]:
    """runs[seed][epoch] -> (means, stds) per epoch, over the runs that reached that epoch."""
    length = max(len(run) for run in runs)
    pairs = [mean_std([run[e] for run in runs if len(run) > e]) for e in range(length)]
    return [m for m, _ in pairs], [s for _, s in pairs]


def confusion_matrix(labels: list[int], predictions: list[int], classes: int = 10) -> list[list[int]]:
    """matrix[true][predicted] = count; row t sums to the number of examples of class t."""
    import torch

    pairs = classes * torch.as_tensor(labels, dtype=torch.long) + torch.as_tensor(predictions, dtype=torch.long)
    return torch.bincount(pairs, minlength=classes * classes).view(classes, classes).tolist()


def accuracy(labels: list[int], predictions: list[int]) -> float:
    return sum(t == p for t, p in zip(labels, predictions)) / len(labels)


@dataclass(frozen=True)
class Spread:
    """Mean ± sample std over n seeds: the one way the project states a number over seeds."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        mean, std = mean_std(values)
        return cls(mean, std, len(values))

    def text(self, digits: int = 4) -> str:
        if self.n == 1:
            return f"{self.mean:.{digits}f} (1 seed)"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} (n={self.n})"

    def beyond(self, other: Spread) -> str:
        """'yes' when the mean ± std intervals do not overlap; needs two seeds on each side."""
        if self.n < 2 or other.n < 2:
            return "n/a (one seed)"
        return "yes" if abs(self.mean - other.mean) > self.std + other.std else "no"
