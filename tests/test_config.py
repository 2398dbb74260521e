"""Config loading: types, overrides, and the exact wording of mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from convexp.config import dump_yaml, load_config, read_yaml_mapping
from convexp.errors import ConvexpError
from convexp.experiments.augment import AugmentConfig
from convexp.experiments.sweep_batch import SweepBatchConfig
from convexp.experiments.train_mnist import TrainMnistConfig
from convexp.experiments.varres_pool import VarresPoolConfig

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_load():
    assert load_config(TrainMnistConfig, REPO / "configs/train-mnist.yaml").train.batch_size == 16


def test_overrides_are_typed_and_nested(tmp_path):
    config = load_config(
        TrainMnistConfig, write(tmp_path, "train:\n  epochs: 4\n"),
        ["train.epochs=2", "data.root=/x/y", "train.lr=1e-2", "model.conv=unfold"],
    )
    assert (config.train.epochs, config.data.root, config.train.lr, config.model.conv) == (2, "/x/y", 0.01, "unfold")


def test_int_accepted_where_a_float_is_asked():
    assert load_config(TrainMnistConfig, None, ["train.lr=1"]).train.lr == 1.0


def test_resolved_config_round_trips(tmp_path):
    config = load_config(SweepBatchConfig, None, ["sweep.seeds=[0, 1, 2]"])
    again = load_config(SweepBatchConfig, write(tmp_path, dump_yaml(config)))
    assert again == config


@pytest.mark.parametrize(
    "cls,text,overrides,message",
    [
        (TrainMnistConfig, "train:\n  epoch: 3\n", [], "unknown config key 'train.epoch'; did you mean 'train.epochs'?"),
        (TrainMnistConfig, "trian: {}\n", [], "unknown config key 'trian'; did you mean 'train'?"),
        (TrainMnistConfig, "", ["train.epochs=two"], "config key 'train.epochs' must be an integer; got 'two' (str)"),
        (TrainMnistConfig, "", ["train.epochs=2.5"], "config key 'train.epochs' must be an integer"),
        (TrainMnistConfig, "", ["data.download=maybe"], "config key 'data.download' must be true or false"),
        (TrainMnistConfig, "", ["model.conv=fft"], "config key 'model.conv' must be one of native, unfold, unfold-reference; got 'fft'"),
        (TrainMnistConfig, "", ["train.epochs=0"], "config key 'train.epochs' must be greater than 0; got 0"),
        (TrainMnistConfig, "", ["train.batch_size=-4"], "config key 'train.batch_size' must be greater than 0"),
        (TrainMnistConfig, "", ["train.lr=0"], "config key 'train.lr' must be greater than 0"),
        (TrainMnistConfig, "", ["device=tpu"], "config key 'device' must be one of auto, cpu, cuda"),
        (TrainMnistConfig, "- a\n- b\n", [], "must be a YAML mapping of keys to values, not a list"),
        (TrainMnistConfig, "train: [1, 2\n", [], "is not valid YAML"),
        (TrainMnistConfig, "train: 3\n", [], "config section 'train' must be a mapping of its keys, got 3"),
        (TrainMnistConfig, "", ["epochs"], "is not of the form key.path=value"),
        (SweepBatchConfig, "", ["sweep.batch_sizes=[]"], "sweep.batch_sizes is empty"),
        (SweepBatchConfig, "", ["sweep.batch_sizes=[16, 0]"], "'sweep.batch_sizes[1]' must be greater than 0"),
        (SweepBatchConfig, "", ["sweep.batch_sizes=16"], "'sweep.batch_sizes' must be a list of an integer"),
        (VarresPoolConfig, "", ["model.channels=0"], "model.channels (N) must be at least 1"),
        (VarresPoolConfig, "", ["model.pooling=[max, sum]"], "'model.pooling[1]' must be one of max, mean"),
        (AugmentConfig, "", ["augment.enabled=1"], "'augment.enabled' must be true or false"),
        (TrainMnistConfig, "", ["train.schedule=linear"], "'train.schedule' must be one of constant, cosine"),
        (TrainMnistConfig, "", ["train.warmup_epochs=4"], "train.warmup_epochs must be at least 0 and below train.epochs=4"),
        (TrainMnistConfig, "", ["train.weight_decay=-1"], "train.weight_decay must be 0 or more"),
        (TrainMnistConfig, "", ["train.max_eval_batches=-1"], "config key 'train.max_eval_batches' must be 0 (all) or more; got -1"),
        (TrainMnistConfig, "", ["train.label_smoothing=1"], "train.label_smoothing must be in [0, 1)"),
        (TrainMnistConfig, "", ["train.optimizer=sgd"], "'train.optimizer' must be one of adam, adamw"),
        (VarresPoolConfig, "", ["model.widths=[16, 0]"], "model.widths must list channel counts from 1"),
        (VarresPoolConfig, "", ["model.norm=group"], "'model.norm' must be one of none, batch, layer"),
        (VarresPoolConfig, "", ["model.widths=[8, 8, 8, 8, 8]"], "data.resolutions must be at least 64 px for the 6 pooled blocks"),
        (VarresPoolConfig, "", ["augment.enabled=true"], "augment.transforms is empty while augment.enabled is true"),
    ],
)
def test_bad_config_messages(tmp_path, cls, text, overrides, message):
    with pytest.raises(ConvexpError) as info:
        load_config(cls, write(tmp_path, text), overrides)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConvexpError, match="not found: pass an existing file with --config"):
        load_config(TrainMnistConfig, tmp_path / "nope.yaml")


# -- YAML merge keys (`<<: *defaults`): valid YAML, merged as YAML says; duplicates still refused --


def test_merge_keys_merge_and_the_mappings_own_keys_win(tmp_path):
    text = "train:\n  <<: &common {epochs: 2, lr: 0.01}\n  lr: 0.02\n"
    config = load_config(TrainMnistConfig, write(tmp_path, text))
    assert (config.train.epochs, config.train.lr) == (2, 0.02)


def test_a_merged_mapping_hands_on_its_own_override(tmp_path):
    """b -> m (which sets x again) -> t: t gets m's x, not b's (PyYAML alone gives b's)."""
    text = "a: &b {x: 1, y: 1}\nb: &m {<<: *b, x: 5}\nc: {<<: [*m, {y: 9, z: 3}], z: 4}\n"
    assert read_yaml_mapping(write(tmp_path, text)) == {
        "a": {"x": 1, "y": 1}, "b": {"x": 5, "y": 1}, "c": {"x": 5, "y": 1, "z": 4}}


@pytest.mark.parametrize("text,message", [
    ("train:\n  <<: &d {epochs: 2}\n  lr: 0.01\n  lr: 0.02\n", "sets 'lr' twice (line 4): keep one"),
    ("d: &d {x: 1}\ntrain:\n  <<: *d\n  <<: *d\n", "sets '<<' twice (line 4): keep one"),
    ("train:\n  <<: 3\n", "is not valid YAML (line 2)"),
])
def test_duplicate_keys_stay_refused_beside_merge_keys(tmp_path, text, message):
    with pytest.raises(ConvexpError) as info:
        load_config(TrainMnistConfig, write(tmp_path, text))
    assert message in str(info.value)


def test_numbers_in_exponent_form_are_numbers_as_yaml_1_2_reads_them(tmp_path):
    """PyYAML (YAML 1.1) reads 1e-3 as a string; convexp reads it as the float it means, on the
    command line (--set, --grid, --space choices) and in config files."""
    from convexp.config import parse_value

    assert parse_value("1e-3") == 0.001 and isinstance(parse_value("1e-3"), float)
    assert parse_value("[0, 1e-5, 2.5E+2]") == [0, 1e-5, 250.0]
    assert parse_value("1ex") == "1ex" and parse_value("1_000") == 1000
    (tmp_path / "c.yaml").write_text("train:\n  lr: 5e-4\n  weight_decay: 1e-5\n")
    train = load_config(TrainMnistConfig, tmp_path / "c.yaml").train
    assert (train.lr, train.weight_decay) == (5e-4, 1e-5)
