"""`root: auto`: full data when it is shared, the project's data/ (downloaded) otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from convexp.config import load_config
from convexp.data_roots import resolve_root
from convexp.experiments.reproduce import ReproduceConfig
from convexp.experiments.train_mnist import TrainMnistConfig
from convexp.experiments.varres_pool import VarresPoolConfig


def make_mnist(root: Path) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"")
    return root


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working folder with no ../shared/data beside it, and no CONVEXP_DATA."""
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("CONVEXP_DATA", raising=False)
    return tmp_path


def test_convexp_data_wins(elsewhere, monkeypatch):
    make_mnist(elsewhere / "mine" / "mnist")
    make_mnist(elsewhere / "shared" / "data" / "mnist")
    monkeypatch.setenv("CONVEXP_DATA", str(elsewhere / "mine"))
    assert resolve_root("auto", "mnist") == str(elsewhere / "mine" / "mnist")


def test_shared_data_beside_the_checkout(elsewhere):
    make_mnist(elsewhere / "shared" / "data" / "mnist")
    assert Path(resolve_root("auto", "mnist")).resolve() == (elsewhere / "shared" / "data" / "mnist").resolve()


def test_a_convexp_data_without_the_set_falls_through(elsewhere, monkeypatch):
    (elsewhere / "empty").mkdir()
    monkeypatch.setenv("CONVEXP_DATA", str(elsewhere / "empty"))
    make_mnist(elsewhere / "shared" / "data" / "mnist")
    assert Path(resolve_root("auto", "mnist")).resolve() == (elsewhere / "shared" / "data" / "mnist").resolve()


def test_no_shared_data_means_the_download_folder(elsewhere):
    assert resolve_root("auto", "mnist") == "data/"
    assert resolve_root("auto", "mnist-varres") == "data/mnist-varres"
    config = load_config(TrainMnistConfig, None)
    assert config.data.root == "data/" and config.data.download  # torchvision's download, when online


def test_explicit_roots_are_kept_with_home_and_variables_expanded(elsewhere, monkeypatch):
    monkeypatch.setenv("HOME", str(elsewhere))
    monkeypatch.setenv("SETS", "/srv/sets")
    assert resolve_root("~/x", "mnist") == str(elsewhere / "x")
    assert resolve_root("$SETS/mnist", "mnist") == "/srv/sets/mnist"
    assert resolve_root("../shared/data/mnist-mini", "mnist") == "../shared/data/mnist-mini"


def test_configs_record_the_folder_auto_stood_for(elsewhere, monkeypatch):
    make_mnist(elsewhere / "d" / "mnist")
    (elsewhere / "d" / "mnist-varres" / "train").mkdir(parents=True)
    monkeypatch.setenv("CONVEXP_DATA", str(elsewhere / "d"))
    assert load_config(TrainMnistConfig, None).data.root == str(elsewhere / "d" / "mnist")
    assert load_config(VarresPoolConfig, None).data.root == str(elsewhere / "d" / "mnist-varres")
    study = load_config(ReproduceConfig, None)
    assert (study.mnist_root, study.varres_root) == (str(elsewhere / "d" / "mnist"), str(elsewhere / "d" / "mnist-varres"))


def test_reproduce_builds_varres_when_no_course_set_is_found(elsewhere):
    assert load_config(ReproduceConfig, None).varres_root == "build"
    assert load_config(ReproduceConfig, None, ["varres_root=build"]).varres_root == "build"


@pytest.mark.parametrize("command", ["train-mnist", "sweep-batch", "augment", "varres-resize", "varres-pool"])
def test_shipped_configs_use_the_real_data_at_the_reports_split(command):
    import yaml

    from tests.helpers import REPO

    data = yaml.safe_load((REPO / "configs" / f"{command}.yaml").read_text())["data"]
    assert data["root"] == "auto"
    if command in ("train-mnist", "sweep-batch", "augment"):
        assert data["val_split"] == 10000  # the report's 50,000 / 10,000
