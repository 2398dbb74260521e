"""mnist-varres: the builder's layout, bucketing, loader errors, and the varres experiments."""

from __future__ import annotations

import json
import signal
import time

import pytest
import torch
from PIL import Image

from convexp.config import VarresData
from convexp.data import Split
from convexp.errors import ConvexpError
from convexp.experiments.classification import classification_breakdown
from convexp.stats import confusion_matrix
from convexp.train import Evaluation
from convexp.varres import build_varres, load_varres, paste, resize_split
from tests.helpers import CliProcess, invoke, write_pngs


@pytest.fixture(scope="session")  # session: make test runs the slow tests first, apart from the others
def varres_root(tmp_path_factory):
    import os
    from pathlib import Path

    if not os.environ.get("CONVEXP_DATA"):
        pytest.skip("real-data test: set CONVEXP_DATA to the folder holding mnist-mini (e.g. ../shared/data)")
    out = tmp_path_factory.mktemp("varres") / "mnist-varres"
    counts = build_varres(Path(os.environ["CONVEXP_DATA"]) / "mnist-mini", out, seed=0)
    return out, counts


@pytest.mark.slow(seconds=3)
def test_the_courses_own_images_load_through_the_real_loader(course_varres):
    """A few hundred of the course's mnist-varres PNGs: every image in the bucket of its size,
    with its folder's label, and pixel for pixel what torchvision's own PIL reader decodes."""
    from torchvision.transforms.functional import pil_to_tensor

    train, val, test = load_varres(VarresData(root=str(course_varres)))
    assert (train.size, val.size, test.size) == (240, 60, 100)  # 30 + 10 a digit, a fifth of training held out
    assert test.resolutions == [32, 48, 64] and all(len(labels) for labels in test.labels)  # the course mixes all three
    expected: dict[int, list] = {}
    for png in sorted((course_varres / "test").glob("*/*.png")):
        with Image.open(png) as image:
            assert image.mode == "L"
            expected.setdefault(image.size[0], []).append((int(png.parent.name), pil_to_tensor(image)[0]))
    for size, images, labels in zip(test.resolutions, test.images, test.labels):
        assert images.shape[1:] == (1, size, size)
        loaded = sorted(((int(y), (x[0] * 255).round().to(torch.uint8)) for x, y in zip(images, labels)),
                        key=lambda pair: (pair[0], pair[1].flatten().tolist()))
        decoded = sorted(expected[size], key=lambda pair: (pair[0], pair[1].flatten().tolist()))
        assert [y for y, _ in loaded] == [y for y, _ in decoded]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(loaded, decoded))


def test_paste_keeps_the_digit_unscaled_on_black():
    digit = torch.randint(1, 256, (28, 28), dtype=torch.uint8)
    canvas = paste(digit, 48, torch.Generator().manual_seed(0), center=True)
    assert canvas.shape == (48, 48)
    assert torch.equal(canvas[10:38, 10:38], digit)
    assert int(canvas.sum()) == int(digit.sum())  # nothing else is drawn: the rest is black
    placed = paste(digit, 64, torch.Generator().manual_seed(1), center=False)
    assert int(placed.sum()) == int(digit.sum())


@pytest.mark.xdist_group("varres")  # one build of varres_root
def test_built_layout_counts_and_resolutions(varres_root):
    root, counts = varres_root
    for split, expected in (("train", 8000), ("test", 2000)):
        files = sorted((root / split).glob("*/*.png"))
        assert len(files) == expected == sum(counts[split].values())
        assert sorted(p.name for p in (root / split).iterdir()) == [str(d) for d in range(10)]
    sizes = {Image.open(p).size for p in list((root / "test").glob("*/*.png"))[:300]}
    assert sizes == {(32, 32), (48, 48), (64, 64)}
    assert Image.open(next((root / "train" / "0").glob("*.png"))).mode == "L"
    # per-class counts of mnist-mini's training set (../shared/data/README.txt)
    per_class = [sum(counts["train"][(d, s)] for s in (32, 48, 64)) for d in range(10)]
    assert per_class == [784, 908, 826, 808, 786, 714, 766, 822, 779, 807]


@pytest.mark.xdist_group("varres")  # one build of varres_root
def test_buckets_never_mix_sizes_and_cover_everything(varres_root):
    root, _ = varres_root
    train, val, test = load_varres(VarresData(root=str(root)))
    assert train.size + val.size == 8000 and test.size == 2000 and val.size == 1600
    for split in (train, val, test):
        assert split.resolutions == [32, 48, 64]
        for images, labels in zip(split.images, split.labels):
            assert images.shape[1:] == (1, images.shape[-1], images.shape[-1]) and len(images) == len(labels)
    resized = resize_split(test, merge=False)
    assert all(x.shape[-2:] == (28, 28) for x in resized.images) and resized.size == 2000
    assert float(resized.images[2].max()) <= 1.0


@pytest.mark.xdist_group("varres")  # one build of varres_root
def test_a_built_folder_is_in_the_disk_cache_as_decoding_would_give_it(varres_root):
    """build_varres stores what it wrote: reading it back decodes no PNG, with the same values."""
    import convexp.varres as varres
    from convexp import image_cache

    root, _ = varres_root
    folder = root / "test"
    cached = image_cache.load(str(folder.resolve()), varres.folder_listing(folder))
    assert cached is not None, "build_varres left no cache entry"
    images, labels = varres.decode_image_folder(str(folder.resolve()))
    assert torch.equal(cached[1], labels) and len(cached[0]) == len(images) == 2000
    assert all(torch.equal(x, y) for x, y in zip(cached[0], images))


def test_split_is_seeded(tmp_path):
    root = write_pngs(tmp_path / "v", [32, 48, 32, 64, 48])
    a = load_varres(VarresData(root=str(root), split_seed=1))[1]
    b = load_varres(VarresData(root=str(root), split_seed=1))[1]
    c = load_varres(VarresData(root=str(root), split_seed=2))[1]
    assert all(torch.equal(x, y) for x, y in zip(a.labels, b.labels))
    assert [y.tolist() for y in a.labels] != [y.tolist() for y in c.labels]


def test_corrupt_png_is_named(tmp_path):
    root = write_pngs(tmp_path / "v", [32, 48], corrupt="bad.png")
    with pytest.raises(ConvexpError, match=r"cannot read image .*train/3/bad.png .*corrupt"):
        load_varres(VarresData(root=str(root)))


def test_unexpected_size_is_an_error(tmp_path):
    root = write_pngs(tmp_path / "v", [32, 50])
    with pytest.raises(ConvexpError, match=r"is 50x50, not one of the resolutions 32x32, 48x48, 64x64"):
        load_varres(VarresData(root=str(root)))


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(ConvexpError, match="mnist-varres not found: .* build it with `convexp make-varres"):
        load_varres(VarresData(root=str(tmp_path / "none")))
    for split in ("train", "test"):
        for digit in range(10):
            (tmp_path / "empty" / split / str(digit)).mkdir(parents=True)
    with pytest.raises(ConvexpError, match="no images in"):
        load_varres(VarresData(root=str(tmp_path / "empty")))


def test_confusion_rows_sum_to_class_counts():
    labels = [torch.tensor([0, 1, 1, 2]), torch.tensor([2, 2, 9])]
    predictions = [torch.tensor([0, 1, 2, 2]), torch.tensor([2, 0, 9])]
    split = Split([torch.zeros(4, 1, 32, 32), torch.zeros(3, 1, 48, 48)], labels)
    breakdown = classification_breakdown(Evaluation(0.5, 5 / 7, predictions), split, [32, 48])
    matrix = breakdown["confusion_matrix"]
    counts = torch.bincount(torch.cat(labels), minlength=10).tolist()
    assert [sum(row) for row in matrix] == counts
    assert matrix[1][2] == 1 and matrix[2][0] == 1
    assert breakdown["accuracy_per_resolution"] == {"32": 0.75, "48": pytest.approx(2 / 3)}
    assert breakdown["accuracy_per_class"]["2"] == pytest.approx(2 / 3)
    capped = classification_breakdown(Evaluation(0.5, 0.6, [predictions[0][:2], predictions[1][:1]]), split, [32, 48])
    assert capped["confusion_matrix"] == confusion_matrix([0, 1, 2], [0, 1, 2])  # the images measured, no more
    assert capped["accuracy_per_resolution"] == {"32": 1.0, "48": 1.0}


@pytest.mark.slow(seconds=35)
@pytest.mark.xdist_group("varres")  # one build of varres_root
def test_varres_resize_and_pool_runs(tmp_path, varres_root):
    root, _ = varres_root
    # resize: what it writes, not how well it learns (a quarter epoch); pool: above chance in 250 batches
    result = invoke("varres-resize", "--set", f"data.root={root}", "--set", "train.epochs=1", "--set", "train.max_batches=100",
                    "--out", str(tmp_path / "r"), "-q")
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "r").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and set(summary["accuracy_per_resolution"]) == {"32", "48", "64"}
    assert [sum(row) for row in summary["confusion_matrix"]] == [196, 227, 206, 202, 196, 178, 192, 206, 195, 202]
    assert (run / "plots" / "confusion.png").is_file()

    result = invoke("varres-pool", "--set", f"data.root={root}", "--set", "train.epochs=1", "--set", "model.channels=16",
                    "--set", "train.max_batches=250", "--out", str(tmp_path / "p"), "-q")
    assert result.returncode == 0, result.stderr
    (run,) = (tmp_path / "p").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["results"]) == {"max", "mean"}
    assert summary["results"]["max"]["test_accuracy"]["mean"] > 0.75  # recorded 0.8295 (seed 0, 2026-11-30): a 0.08 margin
    for name in ("confusion-max.png", "confusion-mean.png", "accuracy_per_resolution.png", "val_accuracy.png"):
        assert (run / "plots" / name).is_file(), name
    assert json.loads((run / "max-seed0" / "summary.json").read_text())["parameters"] == 4810 + 299 * 16


def test_make_varres_cli_refuses_to_overwrite(tmp_path):
    (tmp_path / "exists").mkdir()
    result = invoke("make-varres", "--mnist-root", str(tmp_path), "--out", str(tmp_path / "exists"))
    assert result.returncode == 2 and "already exists" in result.stderr


def test_sixteen_bit_pngs_keep_their_grey_levels(tmp_path):
    """16-bit grey PNGs are read at their own depth, not clipped to black and white."""
    import numpy

    from convexp.varres import open_grey

    levels = numpy.array([[0, 30000], [65535, 1000]], dtype=numpy.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    Image.fromarray((levels // 257).astype(numpy.uint8)).save(tmp_path / "plain.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")  # really stored with 16 bits
    deep, plain = open_grey(str(tmp_path / "deep.png")), open_grey(str(tmp_path / "plain.png"))
    torch.testing.assert_close(deep, torch.tensor([[[0, 30000], [65535, 1000]]]) / 65535.0)
    torch.testing.assert_close(deep, plain, atol=1 / 255, rtol=0)  # the same picture as its 8-bit copy


def test_decoded_folders_come_back_from_the_disk_cache_bit_identical(tmp_path, monkeypatch):
    """A second process reads the decoded images from disk: the same values, no PNG decoded."""
    import convexp.varres as varres

    root = write_pngs(tmp_path / "v", [32, 48, 32, 64, 48])
    first = load_varres(VarresData(root=str(root)))
    varres.read_image_folder_once.cache_clear()  # as in a fresh process

    def no_decoding(folder):
        raise AssertionError(f"{folder} was decoded again instead of read from the cache")

    monkeypatch.setattr(varres, "decode_image_folder", no_decoding)
    again = load_varres(VarresData(root=str(root)))
    for a, b in zip(first, again):
        assert all(torch.equal(x, y) for x, y in zip(a.images + a.labels, b.images + b.labels))


def test_cache_entry_changes_when_the_folder_does(tmp_path):
    import convexp.varres as varres

    root = write_pngs(tmp_path / "v", [32, 48])
    train = root / "train"
    assert len(varres.read_image_folder(train)[1]) == 20  # two images of each digit
    Image.new("L", (32, 32)).save(train / "3" / "extra.png")
    varres.read_image_folder_once.cache_clear()
    assert len(varres.read_image_folder(train)[1]) == 21  # not the cached twenty


def test_a_torn_cache_entry_is_decoded_again(tmp_path):
    import convexp.varres as varres
    from convexp import image_cache

    root = write_pngs(tmp_path / "v", [32, 48])
    folder = root / "train"
    expected = varres.read_image_folder(folder)
    entries = list(image_cache.cache_dir().glob("images-*.pt"))
    for entry in entries:
        entry.write_bytes(b"torn")
    varres.read_image_folder_once.cache_clear()
    images, labels = varres.read_image_folder(folder)
    assert torch.equal(labels, expected[1]) and all(torch.equal(x, y) for x, y in zip(images, expected[0]))


def test_warming_fills_the_disk_cache_for_the_workers(tmp_path, monkeypatch):
    """What a study does before its workers start: afterwards no worker decodes a PNG."""
    import convexp.varres as varres

    root = write_pngs(tmp_path / "v", [32, 64])
    varres.read_image_folder_once.cache_clear()
    varres.warm_cache(root)
    assert varres.read_image_folder_once.cache_info().currsize == 0  # the parent keeps no images in memory

    def no_decoding(folder):
        raise AssertionError(f"{folder} was decoded again instead of read from the cache")

    monkeypatch.setattr(varres, "decode_image_folder", no_decoding)
    varres.read_image_folder_once.cache_clear()
    varres.warm_cache(root)  # already there: nothing to do
    train, _, test = load_varres(VarresData(root=str(root), val_fraction=0.5))
    assert train.size == 10 and test.size == 20


def test_a_cache_entry_that_is_whole_but_inconsistent_is_decoded_again(tmp_path):
    """Labels shorter than the images (a foreign or edited entry): never used, never a traceback."""
    import convexp.varres as varres
    from convexp import image_cache

    root = write_pngs(tmp_path / "v", [32, 48])
    folder = root / "train"
    expected = varres.read_image_folder(folder)
    name, listing = str(folder.resolve()), varres.folder_listing(folder)
    stored = torch.load(image_cache.entry(name, listing), weights_only=True)
    stored["labels"] = stored["labels"][:-3]
    torch.save(stored, image_cache.entry(name, listing))
    assert image_cache.load(name, listing) is None
    varres.read_image_folder_once.cache_clear()
    assert torch.equal(varres.read_image_folder(folder)[1], expected[1])


@pytest.mark.slow(seconds=5)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_make_varres_says_nothing_was_kept_and_how_to_go_on(tmp_path, mnist_root, sig):
    out = tmp_path / "v"
    build = CliProcess("make-varres", "--mnist-root", str(mnist_root), "--out", str(out), log=tmp_path / "log")
    deadline = time.monotonic() + 60
    while not list((tmp_path / "v.partial").glob("train/*/*.png")) and time.monotonic() < deadline:
        time.sleep(0.05)  # until it is writing images
    build.send_signal(sig)
    assert build.wait() == 130, build.output()
    lines = build.output().strip().splitlines()
    assert lines[-1] == (f"error: make-varres interrupted: {out} was not written and its partial files are removed "
                         "(a build cannot go on from where it stopped); run the same command again to build it")
    assert sorted(tmp_path.iterdir()) == [tmp_path / "log"]  # neither v nor v.partial


def test_a_resolution_with_no_images_in_a_split_is_said_in_the_banner(tmp_path):
    root = write_pngs(tmp_path / "v", [32, 48, 32, 48, 32, 48])
    for png in (root / "test").glob("*/[135].png"):  # the test split's 48 px images
        png.unlink()
    result = invoke("varres-pool", "--set", f"data.root={root}", "--set", "train.epochs=1", "--set", "model.channels=4",
                    "--set", "model.pooling=[max]", "--out", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr
    note = next(line for line in result.stdout.splitlines() if line.startswith("note: "))
    assert note == ("note: no 48x48 images in test: that bucket is left out there; no image is 64x64 (data.resolutions "
                    "lists it): nothing of that size trains or is measured")
