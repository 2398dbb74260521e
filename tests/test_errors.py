"""The bad-input catalogue: every case is one line on stderr naming problem and fix, exit 2,
no traceback, run through the real command line."""

from __future__ import annotations

import json
import math
import struct

import pytest
import torch

from tests.helpers import invoke, run_cli, write_pngs


def truncated_mnist(tmp):
    """MNIST/raw with headers that promise more bytes than the files hold."""
    raw = tmp / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", 10), ("t10k", 5)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">4I", 0x803, count, 28, 28) + b"\x00" * 100)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">2I", 0x801, count) + b"\x00" * count)
    return tmp / "mnist"


def mnist_files(tmp, images=(10, 28, 28), labels=(10,), label_value=0):
    """MNIST/raw under the usual names, whose headers give these dimensions (data filled to match)."""
    raw = tmp / "bad" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        for name, dims, fill in ((f"{prefix}-images-idx3-ubyte", images, 0), (f"{prefix}-labels-idx1-ubyte", labels, label_value)):
            header = struct.pack(f">{1 + len(dims)}I", 0x800 + len(dims), *dims)
            (raw / name).write_bytes(header + bytes([fill]) * math.prod(dims))
    return tmp / "bad"


def damaged_summary(tmp):
    run = completed_run(tmp)
    (run / "summary.json").write_text('{"command": "count-params", "status": ')
    return run


def empty_varres(tmp):
    for split in ("train", "test"):
        for digit in range(10):
            (tmp / "v" / split / str(digit)).mkdir(parents=True)
    return tmp / "v"


def completed_run(tmp):
    result = invoke("count-params", "--out", str(tmp / "done"), "-q")
    assert result.returncode == 0, result.stderr
    (run,) = (tmp / "done").iterdir()
    return run


def alias_bomb(levels: int) -> str:
    """A YAML list of 9**(levels + 1) ones in a few hundred characters: each level repeats the last nine times."""
    text = "&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"
    for level in range(1, levels + 1):
        text = f"&a{level} [{text}" + f", *a{level - 1}" * 8 + "]"
    return text


def file_path(tmp, name, text):
    path = tmp / name
    path.write_text(text)
    return path


# (id, setup(tmp) -> value substituted for {x}, argv with {x} and {tmp}, expected part of the message)
CATALOGUE = [
    ("unknown-key", None, ["train-mnist", "--set", "train.epoch=2"], "unknown config key 'train.epoch'; did you mean 'train.epochs'?"),
    ("unknown-top-key", None, ["train-mnist", "--set", "trian.epochs=2"], "unknown config key 'trian'; did you mean 'train'?"),
    ("wrong-type", None, ["train-mnist", "--set", "train.batch_size=big"], "'train.batch_size' must be an integer; got 'big'"),
    ("zero-epochs", None, ["train-mnist", "--set", "train.epochs=0"], "'train.epochs' must be greater than 0; got 0"),
    ("negative-batch", None, ["sweep-batch", "--set", "sweep.batch_sizes=[16, -2]"], "'sweep.batch_sizes[1]' must be greater than 0; got -2"),
    ("negative-lr", None, ["augment", "--set", "train.lr=-0.1"], "'train.lr' must be greater than 0; got -0.1"),
    ("empty-batch-list", None, ["sweep-batch", "--set", "sweep.batch_sizes=[]"], "sweep.batch_sizes is empty: list at least one batch size"),
    ("unknown-option", None, ["train-mnist", "--epochs", "3"], "No such option: --epochs"),
    ("unknown-command", None, ["train-cifar"], "No such command 'train-cifar'"),
    ("config-missing", None, ["train-mnist", "--config", "{tmp}/nope.yaml"], "nope.yaml not found: pass an existing file with --config"),
    ("config-not-yaml", lambda t: file_path(t, "c.yaml", "train: [1, 2\n"), ["train-mnist", "--config", "{x}"], "is not valid YAML (line 2): fix its syntax"),
    ("config-not-mapping", lambda t: file_path(t, "c.yaml", "- 1\n- 2\n"), ["train-mnist", "--config", "{x}"], "must be a YAML mapping of keys to values, not a list"),
    ("data-root-missing", None, ["train-mnist", "--set", "data.root={tmp}/nodata", "--set", "data.download=false"], "MNIST files under"),
    ("truncated-idx", truncated_mnist, ["train-mnist", "--set", "data.root={x}", "--set", "data.download=false"], "train-images-idx3-ubyte is truncated or corrupt (116 bytes, expected 7856)"),
    ("varres-no-images", empty_varres, ["varres-pool", "--set", "data.root={x}"], "no images in"),
    ("varres-missing", None, ["varres-resize", "--set", "data.root={tmp}/none"], "mnist-varres not found"),
    ("corrupt-png", lambda t: write_pngs(t / "v", [32], corrupt="bad.png"), ["varres-resize", "--set", "data.root={x}"], "cannot read image"),
    ("unexpected-size", lambda t: write_pngs(t / "v", [32, 40]), ["varres-pool", "--set", "data.root={x}"], "is 40x40, not one of the resolutions"),
    ("kernel-too-large", None, ["count-params", "--set", "input_sizes=[4]"], "kernel 2x2 is larger than its padded input 1x1"),
    ("stride-zero", None, ["count-params", "--set", "conv_examples=[{stride: 0}]"], "conv_examples[0].stride must be at least 1"),
    ("channels-zero", None, ["varres-pool", "--set", "model.channels=0"], "model.channels (N) must be at least 1"),
    ("cuda-without-gpu", None, ["train-mnist", "--device", "cuda"], "no CUDA GPU is available: use --device cpu or auto"),
    ("out-not-writable", lambda t: file_path(t, "a-file", ""), ["count-params", "--out", "{x}/runs"], "cannot write run folders under"),
    ("resume-not-a-run", None, ["resume", "{tmp}"], "is not a convexp run folder"),
    ("resume-completed", completed_run, ["resume", "{x}"], "already completed: nothing to resume"),
    ("bad-augmentation", None, ["augment", "--set", "augment.transforms=[{name: Flip}]"], "unknown augmentation 'Flip'; allowed: RandomAffine"),
    ("make-varres-exists", lambda t: t, ["make-varres", "--mnist-root", "{tmp}", "--out", "{x}"], "already exists: remove it or pick another --out"),
    # Reliability round 2: lists that would count a value twice
    ("duplicate-batch-size", None, ["sweep-batch", "--set", "sweep.batch_sizes=[16, 32, 16]"], "sweep.batch_sizes lists 16 more than once"),
    ("duplicate-resolution", None, ["varres-pool", "--set", "data.resolutions=[32, 32]"], "data.resolutions lists 32 more than once"),
    ("duplicate-seed", None, ["reproduce", "--set", "seeds=[1, 1]"], "seeds lists 1 more than once"),
    ("duplicate-pooling", None, ["varres-pool", "--set", "model.pooling=[max, max]"], "model.pooling lists max more than once"),
    ("duplicate-sizes", None, ["make-varres", "--mnist-root", "{tmp}", "--out", "{tmp}/v", "--sizes", "32,32"], "lists a size twice"),
    # seeds out of range
    ("negative-seed", None, ["train-mnist", "--seed", "-1"], "config key 'seed' must be a seed from 0 to 4294967295; got -1"),
    ("huge-seed-in-list", None, ["varres-pool", "--set", "seeds=[4294967296]"], "'seeds[0]' must be a seed from 0 to 4294967295"),
    ("make-varres-seed", None, ["make-varres", "--mnist-root", "{tmp}", "--out", "{tmp}/v", "--seed", "-5"], "--seed must be from 0 to 4294967295; got -5"),
    # numbers that mean nothing
    ("lr-inf", None, ["train-mnist", "--set", "train.lr=inf"], "config key 'train.lr' must be a finite number; got inf"),
    ("val-split-inf", None, ["train-mnist", "--set", "data.val_split=.inf"], "config key 'data.val_split' must be a finite number"),
    ("lr-nan", None, ["augment", "--set", "train.lr=nan"], "config key 'train.lr' must be a finite number; got nan"),
    ("bench-forever", None, ["bench", "--set", "min_run_time=100000"], "the bench would run for hours; use at most 60"),
    ("bench-graphs-on-cpu", None, ["bench", "--device", "cpu", "--set", "cuda_graphs=true"], "cuda_graphs=true is for CUDA, but the bench runs on cpu"),
    ("bench-tf32-on-cpu", None, ["bench", "--device", "cpu", "--set", "tf32=true"], "tf32=true is for CUDA, but the bench runs on cpu"),
    ("augment-nothing", None, ["augment", "--set", "augment.transforms=[]"], "augment.transforms is empty while augment.enabled is true"),
    ("threads-too-many", None, ["sweep-batch", "--jobs", "2", "--threads", "100000"], "--threads 100000 is more than the"),
    ("jobs-oversubscribe", None, ["sweep-batch", "--device", "cpu", "--jobs", "1000", "--threads", "1"], "--jobs 1000 x 1 thread(s) each needs 1000 cores, more than the"),
    ("ray-address-dead", None, ["sweep-batch", "--executor", "ray", "--ray-address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
    # impossible sizes, refused before anything is allocated
    ("channels-huge", None, ["count-params", "--channels", "1000000000"], "channels (N) must be at least 1 and at most 100,000"),
    ("match-range-huge", None, ["count-params", "--match", "--set", "match_max_channels=100000000"], "match_max_channels (N) must be"),
    ("canvas-huge", None, ["make-varres", "--mnist-root", "{tmp}", "--out", "{tmp}/v", "--sizes", "32,1000000"], "use sizes from 28 to 1024"),
    # malformed MNIST files, found before training
    ("labels-fewer", lambda t: mnist_files(t, labels=(5,)), ["train-mnist", "--set", "data.root={x}", "--set", "data.download=false"], "holds 10 images but train-labels-idx1-ubyte 5 labels"),
    ("labels-out-of-range", lambda t: mnist_files(t, label_value=12), ["train-mnist", "--set", "data.root={x}", "--set", "data.download=false"], "has labels outside 0-9 (up to 12)"),
    ("files-swapped", lambda t: mnist_files(t, images=(10,), labels=(10, 28, 28)), ["train-mnist", "--set", "data.root={x}", "--set", "data.download=false"], "are the images and labels files swapped?"),
    ("not-28x28", lambda t: mnist_files(t, images=(10, 20, 20)), ["train-mnist", "--set", "data.root={x}", "--set", "data.download=false"], "holds 20x20 images, not MNIST's 28x28"),
    ("no-images", lambda t: mnist_files(t, images=(0, 28, 28), labels=(0,)), ["train-mnist", "--set", "data.root={x}", "--set", "data.download=false"], "holds no images"),
    # broken run folders and paths
    ("resume-damaged-summary", damaged_summary, ["resume", "{x}"], "summary.json cannot be read (JSONDecodeError): the run folder is damaged"),
    ("report-damaged-summary", damaged_summary, ["report", "{x}"], "summary.json cannot be read (JSONDecodeError)"),
    ("report-out-is-a-file", lambda t: (completed_run(t), file_path(t, "f", ""))[0], ["report", "{x}", "--out", "{tmp}/f"], "is a file: pass a folder for report.html"),
    ("name-with-slash", None, ["count-params", "--name", "a/b"], "--name 'a/b' cannot be part of a folder name"),
    ("name-too-long", None, ["count-params", "--name", "n" * 300], "cannot be part of a folder name: use 1 to 100 characters"),
    ("yaml-key-twice", lambda t: file_path(t, "dup.yaml", "train:\n  lr: 0.01\n  lr: 0.02\n"), ["train-mnist", "--config", "{x}"],
     "sets 'lr' twice (line 3): keep one"),
    ("runs-out-missing", None, ["runs", "--out", "{tmp}/nope"], "does not exist: pass the folder that holds the run folders"),
    ("runs-out-is-a-file", lambda t: file_path(t, "f", ""), ["runs", "--out", "{x}"], "is a file: pass the folder that holds"),
    ("rotation-named-in-its-error", None, ["augment", "--set", "augment.transforms=[{name: RandomRotation, degrees: -5}]"],
     "RandomRotation degrees must be 0 or more; got -5"),
    ("warmup-not-below-epochs", None, ["train-mnist", "--set", "train.warmup_epochs=4"],
     "train.warmup_epochs must be at least 0 and below train.epochs=4"),
    # Reliability round 3, class 2: every number checked in its section, before it reaches PyTorch
    ("conv-example-negative-channels", None, ["count-params", "--set", "conv_examples=[{in_channels: -3}]"],
     "conv_examples[0].in_channels (N) must be at least 1"),
    ("conv-example-negative-padding", None, ["count-params", "--set", "conv_examples=[{padding: -30}]"],
     "conv_examples[0].padding must be 0 or more; got -30"),
    ("conv-example-zero-width", None, ["count-params", "--set", "conv_examples=[{width: 0}]"],
     "conv_examples[0].width must be at least 1; got 0"),
    ("augment-nan-degrees", None, ["augment", "--set", "augment.transforms=[{name: RandomRotation, degrees: .nan}]"],
     "RandomRotation degrees must be a finite number or a [low, high] pair of them; got nan"),
    ("augment-nan-scale", None, ["augment", "--set", "augment.transforms=[{name: RandomAffine, degrees: 0, scale: [.nan, 1]}]"],
     "RandomAffine scale must be a finite number"),
    ("augment-degrees-beyond-half-turn", None, ["augment", "--set", "augment.transforms=[{name: RandomRotation, degrees: 720}]"],
     "RandomRotation degrees must be within [-180, 180]; got 720"),
    ("lr-overflows-float32", None, ["train-mnist", "--set", "train.lr=1e39"],
     "config key 'train.lr' is 1e+39, which training's float32 cannot hold"),
    ("lr-underflows-float32", None, ["varres-pool", "--set", "train.lr=1e-50"], "config key 'train.lr' is 1e-50, which training's float32"),
    ("weight-decay-overflows-float32", None, ["train-mnist", "--set", "train.weight_decay=1e300"],
     "config key 'train.weight_decay' is 1e+300"),
    ("val-split-not-whole", None, ["train-mnist", "--set", "data.val_split=1.5"],
     "config key 'data.val_split' must be a fraction in (0, 1) or a whole count >= 1 of digits, e.g. 0.2 or 10000; got 1.5"),
    ("reproduce-val-split-not-whole", None, ["reproduce", "--set", "val_split=2500.5"], "config key 'val_split' must be a fraction"),
    ("epochs-a-typo", None, ["varres-pool", "--set", "train.epochs=1000000"],
     "config key 'train.epochs' is 1,000,000, more than the 100,000 any study here could train (a typo?)"),
    # found by trying the product as a hostile user (round 3)
    ("make-varres-no-mnist", None, ["make-varres", "--mnist-root", "{tmp}", "--out", "{tmp}/v"],
     "or point --mnist-root at a folder holding MNIST/raw"),
    ("batch-size-beyond-int64", None, ["train-mnist", "--set", "train.batch_size=99999999999999999999"],
     "config key 'train.batch_size' is 99999999999999999999, beyond the 64-bit integers PyTorch counts in"),
    ("bench-threads-beyond-cores", None, ["bench", "--set", "threads=[100000]"], "config key 'threads' lists 100000 threads, more than the"),
    ("augment-preview-huge", None, ["augment", "--set", "augment.preview_draws=100000"],
     "config key 'augment.preview_draws' is 100,000: plots/augmentations.png shows at most 64"),
    ("config-section-not-mapping", lambda t: file_path(t, "c.yaml", "train: [1, 2]\n"), ["train-mnist", "--config", "{x}"],
     "config section 'train' must be a mapping of its keys, got [1, 2]: set its keys one by one (--set train.KEY=VALUE"),
    ("config-is-a-folder", lambda t: t, ["train-mnist", "--config", "{x}"], "is a folder: pass a YAML file with --config"),
    ("reproduce-unknown-question", None, ["reproduce", "--set", "questions=[Q7, Q99]"],
     "questions names Q99, which the study does not answer: choose from part1, Q15, Q7"),
    ("final-lr-overflows-float32", None, ["reproduce", "--set", "final.lr=1e39"], "config key 'final.lr' is 1e+39"),
    # class 4: paths, suggestions that work as printed, messages of bounded size
    ("make-varres-out-under-a-file", mnist_files, ["make-varres", "--mnist-root", "{x}", "--out", "{x}/MNIST/raw/t10k-images-idx3-ubyte/v"],
     "t10k-images-idx3-ubyte is a file): pass a writable --out"),
    ("report-out-under-a-file", lambda t: (completed_run(t), file_path(t, "f", ""))[0], ["report", "{x}", "--out", "{tmp}/f/r"],
     "cannot write report.html and report.md under"),
    ("varres-root-is-mnist", mnist_files, ["varres-pool", "--set", "data.root={x}"],
     "/mnist-varres`, then set data.root="),
    ("yaml-alias-bomb", lambda t: file_path(t, "bomb.yaml", f"sweep:\n  seeds: {alias_bomb(9)}\n"), ["sweep-batch", "--config", "{x}"],
     "the config expands to more than 100,000 values (YAML aliases repeat what they name)"),
    ("long-value-cut", None, ["train-mnist", "--set", "train.epochs=" + "x" * 100_000], "... (100,002 characters) (str)"),
]


@pytest.mark.parametrize("setup,argv,message", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_bad_input_catalogue(tmp_path, setup, argv, message):
    value = setup(tmp_path) if setup else None
    args = [a.replace("{x}", str(value)).replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in args and args[0] not in ("resume", "make-varres", "report"):
        args += ["--out", str(tmp_path / "runs")]
    # In this process (fast); the GPU case, on a machine with one, in a subprocess that cannot see it.
    hide_gpu = "cuda" in args and torch.cuda.is_available()
    result = run_cli(*args, env={"CUDA_VISIBLE_DEVICES": ""}) if hide_gpu else invoke(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_a_failed_run_records_the_error_and_is_never_marked_complete(tmp_path):
    result = invoke("varres-resize", "--set", f"data.root={tmp_path}/none", "--out", str(tmp_path / "runs"))
    assert result.returncode == 2
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "mnist-varres not found" in summary["error"]
    assert "error: mnist-varres not found" in (run / "log.txt").read_text()
