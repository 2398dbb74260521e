"""MNIST loading: real IDX files, the configurable split, and clear errors for missing or bad files."""

from __future__ import annotations

import json
import shutil

import pytest

from convexp.config import MnistData
from convexp.data import IDX_FILES, load_mnist, validation_count
from convexp.errors import ConvexpError


def test_validation_count_fraction_or_count():
    assert validation_count(0.2, 8000) == 1600
    assert validation_count(10000, 60000) == 10000
    with pytest.raises(ConvexpError, match="leaves 0 of 8000"):
        validation_count(8000, 8000)
    with pytest.raises(ConvexpError, match="whole count"):
        validation_count(12.5, 8000)


def test_mnist_mini_split_and_range(mnist_root):
    splits = load_mnist(MnistData(root=str(mnist_root), download=False, val_split=0.2))
    assert (splits.train.size, splits.val.size, splits.test.size) == (6400, 1600, 2000)
    x = splits.train.images[0]
    assert x.shape == (6400, 1, 28, 28) and x.dtype.is_floating_point
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert sorted(splits.test.all_labels().unique().tolist()) == list(range(10))
    # deterministic: validation is the last part of the training file
    again = load_mnist(MnistData(root=str(mnist_root), download=False, val_split=1600))
    assert again.val.labels[0].equal(splits.val.labels[0])


def test_missing_files_without_download(tmp_path):
    with pytest.raises(ConvexpError, match=r"MNIST files under .* are missing: put train-images-idx3-ubyte"):
        load_mnist(MnistData(root=str(tmp_path), download=False))


def test_truncated_idx_file_is_named(tmp_path, mnist_root):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES[True] + IDX_FILES[False]:
        shutil.copy(mnist_root / "MNIST" / "raw" / name, raw / name)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    with pytest.raises(ConvexpError, match="train-images-idx3-ubyte is truncated or corrupt"):
        load_mnist(MnistData(root=str(tmp_path), download=False))


@pytest.mark.slow(seconds=40)
def test_one_epoch_on_full_mnist_at_the_reports_split(tmp_path):
    """`make train`'s data: the official 60,000 digits split 50,000 / 10,000, tested on 10,000."""
    from tests.helpers import data_dir, invoke

    root = data_dir() / "mnist" if data_dir() else None
    if root is None or not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip("real-data test: set CONVEXP_DATA to a folder holding mnist/ (full MNIST), e.g. ../shared/data")
    result = invoke("train-mnist", "--set", "train.epochs=1", "--set", "train.batch_size=64", "--out", str(tmp_path), "-q")
    assert result.returncode == 0, result.stderr
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"] == {"root": str(root), "train": 50_000, "val": 10_000, "test": 10_000}
    assert summary["final"]["val_accuracy"] > 0.97 and summary["test_accuracy"] > 0.97
