"""Data as in-memory tensors: MNIST with its train/validation split, and resolution buckets.

Every split is a list of buckets, one (images, labels) pair per input resolution: plain MNIST
has one bucket (28x28), mnist-varres one per size. Batches are cut from one bucket at a time,
so they never mix resolutions.
"""

from __future__ import annotations

import contextlib
import io
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from convexp.config import MnistData
from convexp.errors import ConvexpError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
IDX_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class Split:
    """images[i]: (n_i, 1, h_i, w_i) float32; labels[i]: (n_i,) int64; one entry per bucket."""

    images: list[torch.Tensor]
    labels: list[torch.Tensor]

    @property
    def size(self) -> int:
        return sum(len(y) for y in self.labels)

    @property
    def resolutions(self) -> list[int]:
        return [x.shape[-1] for x in self.images]

    def to(self, device: torch.device) -> Split:
        return Split([x.to(device) for x in self.images], [y.to(device) for y in self.labels])

    def all_labels(self) -> torch.Tensor:
        return torch.cat(self.labels)


@dataclass
class Splits:
    train: Split
    val: Split
    test: Split
    root: str = ""  # the folder the images came from

    def to(self, device: torch.device) -> Splits:
        return Splits(self.train.to(device), self.val.to(device), self.test.to(device), self.root)

    def record(self) -> dict:
        """What summary.json says of the data: a mini run and a full one differ at a glance."""
        return {"root": self.root, "train": self.train.size, "val": self.val.size, "test": self.test.size}


def load_mnist(cfg: MnistData) -> Splits:
    """MNIST through torchvision, scaled to [0, 1]; the last part of `train` is validation."""
    train_x, train_y = read_mnist(Path(cfg.root), train=True, download=cfg.download)
    test_x, test_y = read_mnist(Path(cfg.root), train=False, download=cfg.download)
    n_val = validation_count(cfg.val_split, len(train_y))
    n_train = len(train_y) - n_val
    if cfg.normalize:
        train_x = (train_x - MNIST_MEAN) / MNIST_STD
        test_x = (test_x - MNIST_MEAN) / MNIST_STD
    return Splits(
        train=Split([train_x[:n_train]], [train_y[:n_train]]),
        val=Split([train_x[n_train:]], [train_y[n_train:]]),
        test=Split([test_x], [test_y]),
        root=str(cfg.root),
    )


def validation_count(val_split: float, total: int) -> int:
    """val_split < 1 is a fraction of `total`; >= 1 a count of digits."""
    if val_split < 1:
        count = round(val_split * total)
    elif val_split == int(val_split):
        count = int(val_split)
    else:
        raise ConvexpError(f"data.val_split {val_split} must be a fraction below 1 or a whole count")
    if not 0 < count < total:
        raise ConvexpError(
            f"data.val_split={val_split:g} leaves {total - count} of {total} training digits for "
            "training: use a fraction such as 0.2 or a smaller count"
        )
    return count


# How a training command is pointed at another MNIST folder (make-varres and reproduce name their own).
DATA_ROOT_OPTION = "data.root (--set data.root=PATH)"


def read_mnist(root: Path, train: bool, download: bool,
               root_option: str = DATA_ROOT_OPTION) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 28, 28) float32 in [0, 1] and (n,) int64, via torchvision.datasets.MNIST. `root_option`:
    how the command at hand is pointed at another folder, for the message when files are missing."""
    from torchvision.datasets import MNIST

    raw = root / "MNIST" / "raw"
    names = IDX_FILES[train]
    if not all((raw / name).is_file() for name in names):
        if not download:
            raise missing_mnist(root, raw, False, root_option)
        fetch_mnist(root, raw, root_option)
    images_file, labels_file = raw / names[0], raw / names[1]
    image_dims = check_idx_file(images_file, "images", 3)
    label_dims = check_idx_file(labels_file, "labels", 1)
    if image_dims[1:] != (28, 28):
        raise ConvexpError(f"{images_file} holds {image_dims[1]}x{image_dims[2]} images, not MNIST's 28x28: "
                           "replace it with the original file")
    if image_dims[0] == 0:
        raise ConvexpError(f"{images_file} holds no images: replace it with the original file")
    if image_dims[0] != label_dims[0]:
        raise ConvexpError(f"{images_file} holds {image_dims[0]} images but {labels_file.name} {label_dims[0]} labels: "
                           "use the two files of one set, as distributed")
    dataset = MNIST(str(root), train=train, download=False)
    labels = dataset.targets.long()
    if labels.min() < 0 or labels.max() > 9:
        raise ConvexpError(f"{labels_file} has labels outside 0-9 (up to {labels.max().item()}): replace it with the original file")
    return dataset.data.unsqueeze(1).float().div_(255), labels


def fetch_mnist(root: Path, raw: Path, root_option: str) -> None:
    from torchvision.datasets import MNIST

    try:
        root.mkdir(parents=True, exist_ok=True)
        # torchvision prints each mirror it tries; the one line below says all that matters.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            MNIST(str(root), train=True, download=True)
    except Exception:
        raise missing_mnist(root, raw, tried_download=True, root_option=root_option) from None


def missing_mnist(root: Path, raw: Path, tried_download: bool, root_option: str) -> ConvexpError:
    files = ", ".join(IDX_FILES[True] + IDX_FILES[False])
    why = "could not be downloaded (offline?)" if tried_download else "are missing"
    return ConvexpError(
        f"MNIST files under {root} {why}: put {files} in {raw}/, "
        f"or point {root_option} at a folder holding MNIST/raw"
    )


def check_idx_file(path: Path, holds: str, ndim_expected: int) -> tuple[int, ...]:
    """The dimensions an IDX file's header gives; raise if it is not one of `ndim_expected`
    dimensions (images: 3, labels: 1) or its size disagrees (truncated or not an IDX file)."""
    data_size = path.stat().st_size
    with path.open("rb") as f:
        header = f.read(4)
        if len(header) < 4 or header[:2] != b"\x00\x00" or header[2] != 0x08:
            raise ConvexpError(f"{path} is not an MNIST IDX file of bytes: replace it with the original file")
        ndim = header[3]
        dims = struct.unpack(f">{ndim}I", f.read(4 * ndim)) if ndim else ()
    expected = 4 + 4 * ndim + math.prod(dims)
    if len(dims) != ndim or data_size != expected:
        raise ConvexpError(
            f"{path} is truncated or corrupt ({data_size} bytes, expected {expected}): "
            "download or copy it again"
        )
    if ndim != ndim_expected:
        other = "labels" if holds == "images" else "images"
        raise ConvexpError(f"{path} should hold {holds} but its header says {ndim}-D data, like a {other} file: "
                           "are the images and labels files swapped? Put each under its own name")
    return tuple(dims)
