"""The bad-input catalogue: every case is one line on stderr naming problem and fix, exit 2,
no traceback, run through the real command line."""

from __future__ import annotations

import json
import struct

import pytest

from tests.conftest import invoke, run_cli, write_pngs


def truncated_mnist(tmp):
    """MNIST/raw with headers that promise more bytes than the files hold."""
    raw = tmp / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", 10), ("t10k", 5)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">4I", 0x803, count, 28, 28) + b"\x00" * 100)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">2I", 0x801, count) + b"\x00" * count)
    return tmp / "mnist"


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
]


@pytest.mark.parametrize("setup,argv,message", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_bad_input_catalogue(tmp_path, setup, argv, message):
    value = setup(tmp_path) if setup else None
    args = [a.replace("{x}", str(value)).replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in args and args[0] not in ("resume", "make-varres"):
        args += ["--out", str(tmp_path / "runs")]
    # In this process (fast); the GPU case in a subprocess that cannot see one.
    result = run_cli(*args, env={"CUDA_VISIBLE_DEVICES": ""}) if "cuda" in args else invoke(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_catalogue_has_at_least_twenty_cases():
    assert len(CATALOGUE) >= 20


def test_a_failed_run_records_the_error_and_is_never_marked_complete(tmp_path):
    result = invoke("varres-resize", "--set", f"data.root={tmp_path}/none", "--out", str(tmp_path / "runs"))
    assert result.returncode == 2
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "mnist-varres not found" in summary["error"]
    assert "error: mnist-varres not found" in (run / "log.txt").read_text()
