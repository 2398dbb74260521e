"""`convexp export`: a trained run as a file that runs without convexp (ONNX or TorchScript).

The file takes pixels (n, 1, h, w), float32 in [0, 1], and returns logits (n, 10); the run's
normalisation is inside it. The global-pooling network keeps n, h and w free; MNISTConvNet takes
28x28 (n free). Resizing is not inside: predict's resize happens before the network.

The hand-written conv (UnfoldConv2d) is exported as a standard convolution: it computes
y = W · unfold(x) + b, which is nn.Conv2d's cross-correlation with the same weight layout
(c_out, c_in, kh, kw), stride, padding and bias, so the network is rebuilt with conv: native and
given the same state_dict, tensor for tensor. The file is then checked against the network as
trained (hand-written conv included) and kept only if they agree.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from convexp.errors import ConvexpError
from convexp.predict import (
    TrainedModel,
    build_network,
    find_trained,
    load_trained,
    prepare,
)

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
TOLERANCE = 1e-4  # largest absolute difference in a logit the file may show against PyTorch
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class Deployable(nn.Module):
    """pixels (n, 1, h, w) in [0, 1] -> logits (n, 10): the run's normalisation, then its network."""

    def __init__(self, network: nn.Module, normalization: tuple[float, float] | None):
        super().__init__()
        self.network = network
        self.mean, self.std = normalization or (0.0, 1.0)
        self.normalize = normalization is not None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            pixels = (pixels - self.mean) / self.std
        return self.network(pixels)


def native_twin(trained: TrainedModel) -> nn.Module:
    """The run's network rebuilt with nn.Conv2d everywhere, its trained weights loaded as they are."""
    from convexp.config import derive

    twin = build_network(trained.experiment, derive(trained.config, {"model.conv": "native"}))
    twin.load_state_dict({k: v.cpu() for k, v in trained.network.state_dict().items()})
    return twin.eval()


def check_shapes(trained: TrainedModel) -> list[tuple[int, int, int, int]]:
    """The three input shapes the written file is checked at: sizes (and batch) the file must not fix."""
    if trained.global_pooling:
        return [(2, 1, 32, 32), (3, 1, 64, 64), (1, 1, 100, 80)]
    return [(1, 1, 28, 28), (4, 1, 28, 28), (9, 1, 28, 28)]


def require_onnx() -> None:
    missing = []
    for package in ONNX_PACKAGES:
        try:
            __import__(package)
        except ImportError:
            missing.append(package)
    if missing:
        raise ConvexpError(f"ONNX export needs {', '.join(ONNX_PACKAGES)} ({', '.join(missing)} missing): "
                           "pip install -e '.[export]' (make setup installs it), or use --format torchscript")


def write_onnx(model: Deployable, trained: TrainedModel, path: Path) -> None:
    """ONNX through torch.onnx.export(dynamo=True): input `pixels`, output `logits`."""
    batch = torch.export.Dim("batch", min=1)
    axes = {0: batch}
    if trained.global_pooling:
        axes |= {2: torch.export.Dim("height", min=trained.smallest), 3: torch.export.Dim("width", min=trained.smallest)}
    example = torch.rand(check_shapes(trained)[1])
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes={"pixels": axes},
                                    input_names=["pixels"], output_names=["logits"], external_data=False)
        program.save(str(path))


def write_torchscript(model: Deployable, trained: TrainedModel, path: Path) -> None:
    """TorchScript by tracing: every op of these networks works on any size, so no size is fixed in it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, torch.rand(check_shapes(trained)[1]), check_trace=False)
        torch.jit.save(traced, str(path))


def run_file(path: Path, fmt: str, pixels: torch.Tensor) -> torch.Tensor:
    """The written file's logits (n, 10) for pixels (n, 1, h, w), run as a user without convexp would."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"pixels": pixels.numpy()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path)).eval()(pixels)


def differences(path: Path, fmt: str, trained: TrainedModel) -> dict[str, float]:
    """Largest absolute logit difference, file against the network as trained, per checked shape."""
    generator = torch.Generator().manual_seed(0)
    found = {}
    with torch.inference_mode():
        for shape in check_shapes(trained):
            pixels = torch.rand(shape, generator=generator)
            expected = trained.network(prepare(pixels, trained))
            found["x".join(map(str, shape))] = (run_file(path, fmt, pixels) - expected).abs().max().item()
    return found


def export(run_dir: Path, fmt: str, out: Path | None = None, child: str | None = None) -> tuple[Path, dict[str, float]]:
    """Write the run's network as `fmt` to `out` (default: beside model.pt), checked: returns the file
    and its differences per shape. A file off by more than TOLERANCE is removed, never left."""
    from convexp.runs import require_writable_file, write_atomic

    if fmt not in FORMATS:
        raise ConvexpError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if fmt == "onnx":
        require_onnx()
    if out is not None:  # before any work
        require_writable_file(Path(out), f"model{SUFFIX[fmt]}")
    trained = load_trained(find_trained(Path(run_dir), child), torch.device("cpu"))
    out = Path(out) if out is not None else trained.path / f"model{SUFFIX[fmt]}"
    require_writable_file(out, f"model{SUFFIX[fmt]}")
    model = Deployable(native_twin(trained), trained.normalization).eval()
    draft = out.with_name(f".{out.name}.draft")  # checked here before it gets its name
    try:
        (write_onnx if fmt == "onnx" else write_torchscript)(model, trained, draft)
        found = differences(draft, fmt, trained)
        worst = max(found.values())
        if worst > TOLERANCE:
            raise ConvexpError(f"the exported {fmt} file differs from the trained network by {worst:.2e} (over "
                               f"{TOLERANCE:g}) at {', '.join(found)}: not written; please report it")
        write_atomic(out, draft.read_bytes())
    finally:
        draft.unlink(missing_ok=True)
    return out, found
