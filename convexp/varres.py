"""mnist-varres: digits at 32, 48 and 64 px as grayscale PNGs in ImageFolder layout.

    <root>/train/<digit>/<n>.png    <root>/test/<digit>/<n>.png

The course made it by pasting each unscaled 28x28 MNIST digit on a larger black canvas ("we
didn't blow up the digits, we just added extra black pixels"). `build_varres` does the same from
any MNIST root; `load_varres` reads such a folder (ours or the course's archive) into one tensor
per resolution, so batches never mix sizes.
"""

from __future__ import annotations

import functools
import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from convexp import image_cache
from convexp.config import VarresData
from convexp.data import Split, read_mnist
from convexp.data_roots import AUTO, DATA_SETS, resolve_root
from convexp.errors import ConvexpError
from convexp.runs import make_folder

if TYPE_CHECKING:
    from convexp.console import Reporter

CANVAS_SIZES = (32, 48, 64)
DIGIT_SIZE = 28


# -- building the data set from MNIST -------------------------------------------------------------


def build_varres(
    mnist_root: Path, out: Path, seed: int = 0, center: bool = False, sizes=CANVAS_SIZES, download: bool = False,
    root_option: str = "--mnist-root",
) -> dict[str, Counter]:
    """Write the data set under `out`; returns counts per split of (digit, size) pairs. `root_option`:
    the option that names mnist_root, for the message when its files are missing.

    Written into `<out>.partial` and renamed at the end, so an interrupted build leaves no
    folder that looks complete. The images it wrote go to the disk cache as well, so no process
    ever decodes these PNGs (for the course's size, 40 s of one core).
    """

    if out.exists():
        raise ConvexpError(f"{out} already exists: remove it or pick another --out")
    if any(s < DIGIT_SIZE for s in sizes):
        raise ConvexpError(f"canvas sizes {list(sizes)} must all be at least {DIGIT_SIZE}")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    make_folder(out.parent, f"mnist-varres ({out.name})")
    generator = torch.Generator().manual_seed(seed)
    try:
        counts, written = write_canvases(mnist_root, partial, generator, center, sizes, download, root_option)
    except KeyboardInterrupt:  # a build starts over anyway: what it wrote would only take up room
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(out)
    for split, images in written.items():
        images.sort(key=lambda image: image[:2])  # ImageFolder's order: class folder, then file name
        image_cache.store(str((out / split).resolve()), folder_listing(out / split),
                          [canvas.unsqueeze(0).float().div_(255) for _, _, canvas in images],  # as decoding gives
                          torch.tensor([label for label, _, _ in images]))
    return counts


def write_canvases(mnist_root: Path, partial: Path, generator: torch.Generator, center: bool, sizes,
                   download: bool, root_option: str) -> tuple[dict[str, Counter], dict[str, list]]:
    """Every MNIST digit on its canvas, as PNGs under `partial`: the counts per split of (digit,
    size), and per split what was written: (label, file name, canvas)."""
    from PIL import Image

    counts: dict[str, Counter] = {}
    written: dict[str, list[tuple[int, str, torch.Tensor]]] = {}
    for split, train in (("train", True), ("test", False)):
        images, labels = read_mnist(mnist_root, train=train, download=download, root_option=root_option)
        pixels = (images[:, 0] * 255).round().to(torch.uint8)  # (n, 28, 28), the original bytes
        size_index = torch.randint(len(sizes), (len(labels),), generator=generator)
        counts[split], written[split] = Counter(), []
        for digit in range(10):
            (partial / split / str(digit)).mkdir(parents=True, exist_ok=True)
        for n, (digit_pixels, label, k) in enumerate(zip(pixels, labels.tolist(), size_index.tolist())):
            size = sizes[k]
            canvas = paste(digit_pixels, size, generator, center)
            Image.fromarray(canvas.numpy(), mode="L").save(partial / split / str(label) / f"{n}.png")
            counts[split][(label, size)] += 1
            written[split].append((label, f"{n}.png", canvas))
    return counts, written


def paste(digit: torch.Tensor, size: int, generator: torch.Generator, center: bool) -> torch.Tensor:
    """(28, 28) uint8 digit on a black (size, size) canvas, at a random or central offset."""
    canvas = torch.zeros(size, size, dtype=torch.uint8)
    room = size - DIGIT_SIZE
    if center:
        top = left = room // 2
    else:
        top, left = torch.randint(room + 1, (2,), generator=generator).tolist()
    canvas[top : top + DIGIT_SIZE, left : left + DIGIT_SIZE] = digit
    return canvas


# -- loading --------------------------------------------------------------------------------------


def build_hint(root: Path) -> str:
    """How to get mnist-varres at `root`, as a command that works as printed: an --out that does
    not exist yet (make-varres refuses one that does, such as an MNIST folder given as data.root)
    and a real MNIST folder (`root` itself when it holds MNIST)."""
    mnist = root if (root / DATA_SETS["mnist"][0]).exists() else Path(resolve_root(AUTO, "mnist"))
    out = root if not root.exists() else next(
        place for place in (root.parent / ("mnist-varres" + (f"-{n}" if n > 1 else "")) for n in range(1, 1000)) if not place.exists())
    then = "" if out == root else f", then set data.root={out}"
    return (f"build it with `convexp make-varres --mnist-root {mnist} --out {out}`{then}; "
            "or point data.root (or data.url) at an existing one")


def load_varres(cfg: VarresData) -> tuple[Split, Split, Split]:
    """train, validation (random fraction, seeded) and test splits, bucketed by resolution."""
    root = Path(cfg.root)
    if not (root / "train").is_dir() and cfg.url:
        fetch_archive(cfg.url, root)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise ConvexpError(f"mnist-varres not found: {root / split} is missing; {build_hint(root)}")
    train_x, train_y = read_image_folder(root / "train")
    test_x, test_y = read_image_folder(root / "test")
    permutation = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(cfg.split_seed))
    n_val = round(cfg.val_fraction * len(train_y))
    if not 0 < n_val < len(train_y):
        raise ConvexpError(f"data.val_fraction={cfg.val_fraction} leaves no training or no validation images")
    val_ids, train_ids = permutation[:n_val].tolist(), permutation[n_val:].tolist()
    resolutions = cfg.resolutions
    return (
        bucket([train_x[i] for i in train_ids], train_y[train_ids], resolutions, root / "train"),
        bucket([train_x[i] for i in val_ids], train_y[val_ids], resolutions, root / "train"),
        bucket(test_x, test_y, resolutions, root / "test"),
    )


def say_empty_buckets(reporter: Reporter, resolutions: list[int], train: Split, val: Split, test: Split) -> None:
    """A note under the data banner when a resolution of data.resolutions has no images in some
    split: that split's bucket is left out, so for instance the per-resolution test accuracy of
    a size the test split lacks is not measured."""
    lacking = empty_buckets(resolutions, {"train": train, "validation": val, "test": test})
    if lacking:
        reporter.line(f"note: {lacking}")


def empty_buckets(resolutions: list[int], splits: dict[str, Split]) -> str:
    """What say_empty_buckets says ("" when every split has every resolution)."""
    notes = []
    for size in resolutions:
        lacking = [name for name, split in splits.items() if size not in split.resolutions]
        if len(lacking) == len(splits):
            notes.append(f"no image is {size}x{size} (data.resolutions lists it): nothing of that size trains or is measured")
        elif lacking:
            notes.append(f"no {size}x{size} images in {' or '.join(lacking)}: that bucket is left out there")
    return "; ".join(notes)


def warm_cache(root: Path) -> None:
    """Decode a varres folder here, once, before parallel workers start: each then reads it from
    the disk cache in a second instead of decoding it again at the same time as the others.
    Nothing is kept in this process's memory: its workers are the ones that train."""
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            continue
        name, listing = str(folder.resolve()), folder_listing(folder)
        if not image_cache.has(name, listing):
            image_cache.store(name, listing, *decode_image_folder(name))


def read_image_folder(folder: Path) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every image as (1, h, w) float32 in [0, 1], one grey channel, via torchvision's ImageFolder.

    Decoding the course's 70,000 PNGs takes about 40 s on 2 cores and a study reads the same
    folders for every step, so a folder is decoded once (until its listing changes): kept in
    memory for this process, and on disk for the next ones (convexp/image_cache.py).
    """
    return read_image_folder_once(str(folder.resolve()), folder_listing(folder))


def folder_listing(folder: Path) -> tuple:
    """What changes when an image is added or removed: the folder's and its class folders' mtimes."""
    return tuple(p.stat().st_mtime_ns for p in [folder, *sorted(folder.glob("*/"))]) if folder.is_dir() else ()


@functools.lru_cache(maxsize=2)  # a train and a test folder
def read_image_folder_once(folder: str, listing: tuple) -> tuple[list[torch.Tensor], torch.Tensor]:
    cached = image_cache.load(folder, listing)
    if cached is not None:
        return cached
    images, labels = decode_image_folder(folder)
    image_cache.store(folder, listing, images, labels)
    return images, labels


def decode_image_folder(folder: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    from torchvision.datasets import ImageFolder

    try:
        dataset = ImageFolder(str(folder), loader=open_grey)
    except FileNotFoundError as exc:
        raise ConvexpError(f"no images in {folder} ({exc}): it needs <digit>/<n>.png subfolders") from None
    if sorted(dataset.classes, key=str) != [str(d) for d in range(10)]:
        raise ConvexpError(f"{folder} must hold class folders 0..9; found {', '.join(dataset.classes)}")
    images = [open_grey(path) for path, _ in dataset.samples]
    labels = torch.tensor([int(dataset.classes[label]) for _, label in dataset.samples])
    return images, labels


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")  # how PIL opens 16-bit grey PNGs


def open_grey(path: str) -> torch.Tensor:
    """One image as (1, h, w) float32 in [0, 1], grey, whatever the file stored (8 or 16 bits, colour)."""
    import numpy
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.functional import pil_to_tensor

    try:
        with Image.open(path) as image:
            if image.mode in SIXTEEN_BIT_MODES:  # convert("L") would clip 16-bit values to black and white
                return torch.from_numpy(numpy.asarray(image, dtype=numpy.float32) / 65535.0).unsqueeze(0)
            return pil_to_tensor(image.convert("L")).float().div_(255)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ConvexpError(f"cannot read image {path} ({type(exc).__name__}): it is corrupt; delete or replace it") from None


def bucket(images: list[torch.Tensor], labels: torch.Tensor, resolutions: list[int], folder: Path) -> Split:
    """One (n, 1, s, s) tensor per resolution, in `resolutions` order (empty ones left out)."""
    by_size: dict[int, list[int]] = {s: [] for s in resolutions}
    for i, image in enumerate(images):
        h, w = image.shape[-2:]
        if h != w or h not in by_size:
            raise ConvexpError(
                f"an image under {folder} is {h}x{w}, not one of the resolutions "
                f"{', '.join(f'{s}x{s}' for s in resolutions)}: add its size to data.resolutions or remove it"
            )
        by_size[h].append(i)
    sizes = [s for s in resolutions if by_size[s]]
    return Split(
        [torch.stack([images[i] for i in by_size[s]]) for s in sizes],
        [labels[by_size[s]] for s in sizes],
    )


def resize_split(split: Split, size: int = DIGIT_SIZE, merge: bool = True) -> Split:
    """Every bucket resized to size x size (bilinear, antialiased, as torchvision's Resize).

    merge=True makes one bucket (training); False keeps one per source resolution (per-resolution
    test accuracy).
    """
    resized = [F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
               for x in split.images]
    if merge:
        return Split([torch.cat(resized)], [torch.cat(split.labels)])
    return Split(resized, list(split.labels))


def fetch_archive(url: str, root: Path) -> None:
    """Download and unpack the course archive (mnist-varres.tgz holds mnist-varres/{train,test})."""
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(url, download_root=str(root.parent), remove_finished=True)
    except Exception as exc:
        raise ConvexpError(f"could not download {url} ({type(exc).__name__}): check the address, or build the data with make-varres") from None
