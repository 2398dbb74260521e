"""Typed experiment configs: YAML -> dataclasses, `--set` overrides, validation errors.

Config flows one way: a YAML file (plus `--set key.path=value` overrides) is parsed into the
dataclasses below, checked, and from then on the code only reads plain attributes. The resolved
config (`to_dict`) is what each run folder saves, so a run can be repeated from its folder alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import struct
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from convexp.errors import ConvexpError, shown

# ---------------------------------------------------------------------------------------------
# Checks each section runs on itself (__post_init__), beside its fields. A section does not know
# where it sits in the config, so it raises Invalid with its own field name, and from_dict
# turns that into a ConvexpError naming the full key ('train.epochs', 'sweep.batch_sizes[1]').


class Invalid(ConvexpError):
    def __init__(self, field_name: str, message: str):
        super().__init__(message.replace("{key}", field_name))
        self.field_name, self.template = field_name, message  # in the template '{key}' stands for the full key



def require_positive(key: str, value: float) -> None:
    if not value > 0:
        raise Invalid(key, f"config key '{{key}}' must be greater than 0; got {value}")


def require_positive_items(key: str, values: list) -> None:
    for i, value in enumerate(values):
        require_positive(f"{key}[{i}]", value)


def require_items(key: str, values: list, example: str) -> None:
    """At least one value, and each once: a value listed twice would be counted twice."""
    if not values:
        raise Invalid(key, f"{{key}} is empty: list at least one {example}")
    twice = sorted({str(v) for v in values if values.count(v) > 1})
    if twice:
        raise Invalid(key, f"{{key}} lists {', '.join(twice)} more than once: list each value once")


SEED_LIMIT = 2**32  # numpy's seeds, and so every seed convexp takes, are below 2**32


MAX_CHANNELS = 100_000  # N = 100,000 is already 30 M parameters; the report's N is 81


def require_channels(key: str, value: int) -> None:
    if not 1 <= value <= MAX_CHANNELS:
        raise Invalid(key, f"{{key}} (N) must be at least 1 and at most {MAX_CHANNELS:,}; got {value}")


def require_widths(key: str, widths: list[int]) -> None:
    if any(not 1 <= width <= MAX_CHANNELS for width in widths):
        raise Invalid(key, f"{{key}} must list channel counts from 1 to {MAX_CHANNELS:,}; got {widths}")


def require_float32(key: str, value: float) -> None:
    """A rate the optimizer multiplies float32 tensors by: above float32's largest value PyTorch
    cannot convert it (a traceback mid-step), below its smallest it rounds to 0 (no training)."""
    try:
        as_float32 = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        as_float32 = math.inf
    if value > 0 and (as_float32 == 0 or math.isinf(as_float32)):
        raise Invalid(key, f"config key '{{key}}' is {value}, which training's float32 cannot hold "
                           "(from 1.4e-45 to 3.4e+38): use a value like 0.001")


def require_val_split(key: str, value: float) -> None:
    """A fraction in (0, 1) of the training digits, or a whole count of them (whether the count
    leaves any for training is known only once the data is read: data.validation_count)."""
    if not (0 < value < 1 or (value >= 1 and value == int(value))):
        raise Invalid(key, f"config key '{{key}}' must be a fraction in (0, 1) or a whole count >= 1 of digits, "
                           f"e.g. 0.2 or 10000; got {value}")


def require_seed(key: str, value: int) -> None:
    if not 0 <= value < SEED_LIMIT:
        raise Invalid(key, f"config key '{{key}}' must be a seed from 0 to {SEED_LIMIT - 1}; got {value}")


def require_seeds(key: str, values: list[int]) -> None:
    require_items(key, values, "seed, e.g. [0, 1, 2]")
    for i, value in enumerate(values):
        require_seed(f"{key}[{i}]", value)


# ---------------------------------------------------------------------------------------------
# Sections shared by several experiments.


@dataclass
class MnistData:
    # auto: $CONVEXP_DATA/mnist, ../shared/data/mnist, else data/ (see convexp/data_roots.py)
    root: str = "auto"
    download: bool = True
    # Validation part of the official training set: a fraction (< 1) or a digit count (>= 1).
    # The report took the last 10,000 of 60,000; on mnist-mini (8,000 digits) use 0.2.
    val_split: float = 10000
    normalize: bool = False

    def __post_init__(self):
        require_val_split("val_split", self.val_split)

    def with_root(self) -> MnistData:
        from convexp.data_roots import resolve_root

        return dataclasses.replace(self, root=resolve_root(self.root, "mnist"))


@dataclass
class VarresData:
    # auto: $CONVEXP_DATA/mnist-varres, ../shared/data/mnist-varres, else data/mnist-varres
    root: str = "auto"
    # Optional .tgz/.tar.gz address of the course archive, fetched when `root` is empty.
    url: str = ""
    val_fraction: float = 0.2
    split_seed: int = 0
    resolutions: list[int] = field(default_factory=lambda: [32, 48, 64])

    def __post_init__(self):
        require_seed("split_seed", self.split_seed)
        require_items("resolutions", self.resolutions, "size, e.g. [32, 48, 64]")
        if not 0 < self.val_fraction < 1:
            raise Invalid("val_fraction", f"{{key}} must be between 0 and 1; got {self.val_fraction}")
        if min(self.resolutions) < 8:  # (empty lists were refused just above)
            raise Invalid("resolutions", f"{{key}} must list sizes of at least 8 px (three 2x2 pools); got {self.resolutions}")

    def with_root(self) -> VarresData:
        from convexp.data_roots import resolve_root

        return dataclasses.replace(self, root=resolve_root(self.root, "mnist-varres"))


@dataclass
class Model:
    conv: Literal["native", "unfold", "unfold-reference"] = "native"


MAX_EPOCHS = 100_000  # an MNIST epoch takes seconds on a GPU: beyond this, a typo rather than a plan


@dataclass
class Train:
    epochs: int = 4
    batch_size: int = 16
    lr: float = 1e-3
    eval_batch_size: int = 1000
    # Evaluate the test split after every epoch too (the report's question 9 plots it).
    test_each_epoch: bool = False
    checkpoint_every: int = 1
    max_batches: int = 0  # 0: every batch; N > 0: stop each epoch after N batches, train metrics on those (smoke runs)
    # 0: every evaluation measures its whole split; N > 0: only the first N batches (of
    # eval_batch_size) of each resolution, as --fast-dev-run does (smoke runs: a pipeline check).
    max_eval_batches: int = 0
    # CUDA only: torch.use_deterministic_algorithms(True); CPU runs are deterministic anyway.
    deterministic: bool = False
    # Evaluate the test split once training ends. A sweep's runs leave it off: the point is
    # chosen on validation, and only the chosen point is tested, afterwards.
    test: bool = True
    # The learning rate over training, set before every batch: constant at lr, or cosine decay
    # from lr to 0 across all batches of all epochs; either after warmup_epochs (may be a
    # fraction) of linear warm-up from 0. The defaults are the report's: constant, no warm-up.
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_epochs: float = 0.0
    # adam: weight_decay is an L2 term in the gradient (torch.optim.Adam); adamw: decoupled
    # decay of the weights (torch.optim.AdamW).
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0  # on the training loss only; evaluation reports plain cross-entropy
    # fp32, or bf16 arithmetic for the forward pass and loss (float32 weights and optimizer state),
    # or auto: bf16 where the device has bf16 units (convexp/precision.py).
    precision: Literal["fp32", "bf16", "auto"] = "fp32"

    def __post_init__(self):
        for key in ("epochs", "batch_size", "lr", "eval_batch_size", "checkpoint_every"):
            require_positive(key, getattr(self, key))
        if self.epochs > MAX_EPOCHS:
            raise Invalid("epochs", f"config key '{{key}}' is {self.epochs:,}, more than the {MAX_EPOCHS:,} any study "
                                    "here could train (a typo?): use a number of epochs such as 15")
        require_float32("lr", self.lr)
        for key in ("max_batches", "max_eval_batches"):
            if getattr(self, key) < 0:
                raise Invalid(key, f"config key '{{key}}' must be 0 (all) or more; got {getattr(self, key)}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise Invalid("warmup_epochs", f"{{key}} must be at least 0 and below train.epochs={self.epochs}; "
                                           f"got {self.warmup_epochs}")
        if self.weight_decay < 0:
            raise Invalid("weight_decay", f"{{key}} must be 0 or more; got {self.weight_decay}")
        require_float32("weight_decay", self.weight_decay)
        if not 0 <= self.label_smoothing < 1:
            raise Invalid("label_smoothing", f"{{key}} must be in [0, 1), e.g. 0.1; got {self.label_smoothing}")


@dataclass
class Sweep:
    batch_sizes: list[int] = field(default_factory=lambda: [16, 32, 64])
    seeds: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self):
        require_items("batch_sizes", self.batch_sizes, "batch size, e.g. [16, 32, 64]")
        require_positive_items("batch_sizes", self.batch_sizes)
        require_seeds("seeds", self.seeds)


MAX_PREVIEW = 64  # digits or draws in plots/augmentations.png: more cannot be seen, and 10^5 drew for minutes


@dataclass
class Augment:
    enabled: bool = True
    # One mapping per transform: {name: RandomAffine, degrees: 15, ...}, applied in order.
    transforms: list[dict[str, Any]] = field(default_factory=list)
    # How many digits and draws plots/augmentations.png shows.
    preview_digits: int = 8
    preview_draws: int = 6

    def __post_init__(self):
        from convexp.augment import build_pipeline

        build_pipeline(self.transforms)  # raises ConvexpError naming a bad transform
        if self.enabled and not self.transforms:  # a run that says "augmented" must be
            raise Invalid("transforms", "{key} is empty while augment.enabled is true: list transforms "
                                        "(see configs/augment.yaml), or set augment.enabled=false")
        for key in ("preview_digits", "preview_draws"):  # one picture: a grid of digits x draws
            require_positive(key, getattr(self, key))
            if getattr(self, key) > MAX_PREVIEW:
                raise Invalid(key, f"config key '{{key}}' is {getattr(self, key):,}: plots/augmentations.png shows "
                                   f"at most {MAX_PREVIEW} (use e.g. 8)")


@dataclass
class VarresModel:
    conv: Literal["native", "unfold", "unfold-reference"] = "native"
    channels: int = 81  # N: output channels of the last conv = width of the global pool
    pooling: list[Literal["max", "mean"]] = field(default_factory=lambda: ["max", "mean"])
    # Output channels of the conv blocks before the last, one block each (each halves the size).
    widths: list[int] = field(default_factory=lambda: [16, 32])
    # A norm between each conv and its ReLU, 2 parameters a channel (which count); the convs then
    # drop their bias (redundant under BatchNorm's shift; dropped under layer too, for the same
    # count). batch: BatchNorm, whose running statistics mix the three resolutions' buckets;
    # layer: GroupNorm(1, C), per image.
    norm: Literal["none", "batch", "layer"] = "none"

    def __post_init__(self):
        require_channels("channels", self.channels)
        require_items("pooling", self.pooling, "of max, mean")
        require_widths("widths", self.widths)


# ---------------------------------------------------------------------------------------------
# What every run's config has. Each experiment's own config (experiments/<x>.py) builds on it.


@dataclass
class Log:
    """Where a run is shown besides its folder (convexp/loggers.py): TensorBoard and MLflow."""

    tensorboard: Literal["auto", True, False] = "auto"  # auto: when the tensorboard package is installed
    mlflow: str = ""  # "": off; a tracking URI (sqlite:///mlflow.db, file:..., http://...); env: $MLFLOW_TRACKING_URI
    mlflow_experiment: str = ""  # "": the command's name


@dataclass
class RunConfig:
    seed: int = 0  # of everything random in the run: initial weights, batch order, augmentations
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log: Log = field(default_factory=Log)

    def __post_init__(self):
        require_seed("seed", self.seed)

    def with_data_roots(self) -> RunConfig:
        """This config with an `auto` data root replaced by the folder it stands for (data_roots.py)."""
        data = getattr(self, "data", None)
        if isinstance(data, (MnistData, VarresData)):
            return dataclasses.replace(self, data=data.with_root())
        return self


def load_config(cls: type, path: str | Path | None, overrides: list[str] = ()) -> Any:
    """Read YAML at `path` (None: defaults only), apply `key.path=value` overrides, check it."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml_mapping(Path(path))
    for override in overrides:
        apply_override(raw, override)
    config = from_dict(cls, raw, prefix="")
    return config.with_data_roots() if isinstance(config, RunConfig) else config


def derive(config: Any, changes: dict[str, Any]) -> Any:
    """`config` with `{"key.path": value}` changes, checked as the loader checks a file: an
    unknown key or a wrong value is the usual one-line error, naming the full key. The one way
    convexp makes a variant of a config (--set, sweep points, reproduce's steps, --fast-dev-run)."""
    raw = to_dict(config)
    for key, value in changes.items():
        set_key(raw, key, value)
    return from_dict(type(config), raw, prefix="")


class DuplicateKey(Exception):
    def __init__(self, key: Any, where: str):
        self.key, self.where = key, where


class UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, but a key written twice in one mapping is an error: YAML keeps the last one
    silently, so `lr: 0.01` above `lr: 0.02` would train at 0.02 without a word.

    Checked as each mapping is read (composed), before merge keys (`<<: *defaults`) are expanded:
    a key that overrides a merged one is the point of a merge, not a duplicate."""

    def compose_mapping_node(self, anchor):
        node = super().compose_mapping_node(anchor)
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = "<<" if key_node.tag == MERGE_TAG else self.construct_object(key_node)
            if key in seen:
                raise DuplicateKey(key, f" (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return node

    def flatten_mapping(self, node):
        """Merge keys expanded, each key kept once with the value that wins: the mapping's own over
        a merged one. PyYAML leaves both in `node.value`, and a mapping merged in turn into
        another then hands on the overridden value (m: {<<: *b, x: 5} merged gave x from b)."""
        super().flatten_mapping(node)
        keys = [self.construct_object(k) if isinstance(k, yaml.ScalarNode) else id(k) for k, _ in node.value]
        last = {key: index for index, key in enumerate(keys)}
        node.value = [pair for index, pair in enumerate(node.value) if last[keys[index]] == index]


MERGE_TAG = "tag:yaml.org,2002:merge"

# YAML 1.2's floats: PyYAML follows YAML 1.1, where a float needs a dot, so `1e-3` was read as the
# string '1e-3' (a --space choice(0, 1e-3) then drew a string, shown and told to Optuna as one).
# The dumper knows it too, so a string such as '1e5' is written quoted and read back a string.
EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class ConfigDumper(yaml.SafeDumper):
    pass


for yaml_class in (UniqueKeyLoader, ConfigDumper):
    yaml_class.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+0123456789"))


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConvexpError(f"config file {path} is a folder: pass a YAML file with --config, e.g. configs/train-mnist.yaml")
    if not path.is_file():
        raise ConvexpError(f"config file {path} not found: pass an existing file with --config")
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)
    except DuplicateKey as exc:
        raise ConvexpError(f"config file {path} sets {exc.key!r} twice{exc.where}: keep one") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConvexpError(f"config file {path} is not valid YAML{line}: fix its syntax") from None
    except UnicodeDecodeError:
        raise ConvexpError(f"config file {path} is not a text file: pass a YAML file") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConvexpError(
            f"config file {path} must be a YAML mapping of keys to values, "
            f"not a {type(raw).__name__}: write it as `key: value` lines"
        )
    return raw


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML (2 -> int)."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConvexpError(f"--set {override!r} is not of the form key.path=value: e.g. --set train.epochs=2")
    set_key(raw, key.strip(), parse_value(text))


def parse_value(text: str) -> Any:
    """A value typed on the command line, read as YAML: 2 -> int, [1, 2] -> list."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader) if text.strip() else text
    except (yaml.YAMLError, DuplicateKey):
        return text  # a plain string the YAML parser cannot read, such as 'a: b'


def set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    """raw[a][b][c] = value for key 'a.b.c', creating the mappings on the way."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


MAX_CONFIG_VALUES = 100_000  # a shipped config holds about 100; YAML aliases can repeat a list 10⁹ times


def require_bounded(raw: Any) -> None:
    """Refuse a config that expands to more than MAX_CONFIG_VALUES values. YAML aliases share
    what they name, so a small file can stand for billions of values (an alias bomb): copied
    (to_dict) or echoed in an error, it would fill the memory or print gigabytes."""
    count, pending = 0, [raw]
    while pending:
        node = pending.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConvexpError(f"the config expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases repeat "
                               "what they name): write out the values it means, without aliases of aliases")
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


def from_dict(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass `cls` from a mapping, naming the exact key of any mistake."""
    if not prefix:  # the whole config, before any of it is copied or echoed
        require_bounded(raw)
    if not isinstance(raw, dict):
        section = prefix.rstrip(".")
        if not section:
            raise ConvexpError(f"the config must be a mapping of keys to values, got {shown(raw)}")
        raise ConvexpError(f"config section '{section}' must be a mapping of its keys, got {shown(raw)}: set its keys "
                           f"one by one (--set {section}.KEY=VALUE, or indented 'KEY: VALUE' lines under "
                           f"'{section.split('.')[-1]}:' in the YAML file, as in configs/)")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            raise ConvexpError(f"unknown config key '{prefix}{key}'{hint}")
    values = {name: coerce(hints[name], raw[name], f"{prefix}{name}") for name in names if name in raw}
    try:
        return cls(**values)
    except Invalid as exc:  # the section's own check, named by its full key
        raise ConvexpError(exc.template.replace("{key}", f"{prefix}{exc.field_name}")) from None


MAX_INT = 2**63 - 1  # torch's int64: a larger batch size or count fails deep inside PyTorch


def coerce(hint: Any, value: Any, key: str) -> Any:
    """Check `value` against type `hint`; return it (ints become floats where floats are asked)."""
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, prefix=f"{key}.")
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ConvexpError(f"config key '{key}' must be one of {', '.join(map(str, args))}; got {shown(value)}")
        return value
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return coerce(option, value, key)
            except ConvexpError:
                continue
        raise type_error(key, hint, value)
    if origin is list:
        if not isinstance(value, list):
            raise type_error(key, hint, value)
        return [coerce(args[0], item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise type_error(key, hint, value)
        return value
    if hint is type(None):
        if value is not None:
            raise type_error(key, hint, value)
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise type_error(key, hint, value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise type_error(key, hint, value)
        if abs(value) > MAX_INT:
            raise ConvexpError(f"config key '{key}' is {shown(value)}, beyond the 64-bit integers PyTorch counts in "
                               f"(at most {MAX_INT:,}): use a number such as 16")
        return value
    if hint is float:
        if isinstance(value, str):
            value = parse_float(value, key, hint)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise type_error(key, hint, value)
        if not math.isfinite(value):  # no setting of convexp means anything at inf or nan
            raise ConvexpError(f"config key '{key}' must be a finite number; got {value}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise type_error(key, hint, value)
        return value
    raise TypeError(f"config type {hint!r} of {key} is not supported")  # a bug, not user input


def parse_float(text: str, key: str, hint: Any) -> float:
    # YAML 1.1 reads `1e-3` (no dot) as a string; users mean the number.
    try:
        return float(text)
    except ValueError:
        raise type_error(key, hint, text) from None


def type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is list:
        return f"a list of {type_name(typing.get_args(hint)[0])}"
    if origin is dict:
        return "a mapping"
    if origin is Literal:
        return " or ".join(map(repr, typing.get_args(hint)))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def type_error(key: str, hint: Any, value: Any) -> ConvexpError:
    return ConvexpError(f"config key '{key}' must be {type_name(hint)}; got {shown(value)} ({type(value).__name__})")


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config as a dict (to_dict, or read from config.yaml) by full key: {"train": {"lr": 1}} ->
    {"train.lr": 1}; the keys --set takes."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def dump_yaml(config: Any) -> str:
    return yaml.dump(to_dict(config), Dumper=ConfigDumper, sort_keys=False)
