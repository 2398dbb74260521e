"""Decoded image folders kept on disk, so a folder of PNGs is decoded once per machine, not per process.

Decoding the course's 70,000 mnist-varres PNGs takes about 40 s of one core. Every study step,
every parallel worker and every sweep child is a fresh process that would decode them again; a
sweep of 36 children on a GPU would spend more time decoding than training. The cache holds the
8-bit pixel values exactly as the PNGs store them (uint8), so images read back from it are
bit-identical to freshly decoded ones: results never depend on whether the cache was there.

Where: $CONVEXP_CACHE, else $XDG_CACHE_HOME/convexp, else ~/.cache/convexp. A folder's entry is
named by its absolute path and the modification times of it and its class folders (adding or
removing an image changes them; overwriting a PNG in place does not: delete the cache folder
then). An entry of the course's set is about 175 MB; nothing prunes them. An unreadable entry is
decoded again; a cache that cannot be written (read-only home, full disk) is skipped.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

from convexp.runs import write_atomic

VERSION = 1  # bump when the stored layout changes


def cache_dir() -> Path:
    if os.environ.get("CONVEXP_CACHE"):
        return Path(os.environ["CONVEXP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "convexp"


def entry(folder: str, listing: tuple) -> Path:
    key = hashlib.sha256(repr((VERSION, folder, listing)).encode()).hexdigest()[:24]
    return cache_dir() / f"images-{key}.pt"


def has(folder: str, listing: tuple) -> bool:
    return entry(folder, listing).is_file()


def load(folder: str, listing: tuple) -> tuple[list[torch.Tensor], torch.Tensor] | None:
    """The folder's images (1, h, w) float32 in [0, 1] and labels, or None when not cached."""
    path = entry(folder, listing)
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        pixels, shapes, labels = stored["pixels"], stored["shapes"], stored["labels"]
        flat = pixels.float().div_(255)  # the same arithmetic as decoding: bit-identical values
        sizes = (shapes[:, 0] * shapes[:, 1]).tolist()
        images = [x.view(1, h, w) for x, (h, w) in zip(flat.split(sizes), shapes.tolist())]
        if not (len(images) == len(labels) == len(shapes) and sum(sizes) == len(pixels)):
            return None  # well-formed but not whole: decode again
    except Exception:  # a torn or foreign file: decode again, and the entry is rewritten
        return None
    return images, labels


def store(folder: str, listing: tuple, images: list[torch.Tensor], labels: torch.Tensor) -> None:
    """Keep decoded images if they are 8-bit values (k / 255), which uint8 holds exactly."""
    if not images:
        return
    flat = torch.cat([x.reshape(-1) for x in images])
    pixels = (flat * 255).round_().to(torch.uint8)
    if not torch.equal(pixels.float().div_(255), flat):  # 16-bit PNGs: not worth a float32 copy on disk
        return
    shapes = torch.tensor([list(x.shape[-2:]) for x in images])
    buffer = io.BytesIO()
    torch.save({"pixels": pixels, "shapes": shapes, "labels": labels}, buffer)
    try:
        write_atomic(entry(folder, listing), buffer.getvalue())  # a reader never sees half a file
    except OSError:  # read-only or full: the cache only saves time
        pass
