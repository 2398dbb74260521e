"""The CUDA path, where a GPU is: the hand-written conv against cuDNN, training on the device.

Every test here skips on a machine without CUDA (CI has none); `benchmarks/gpu-check.sh` runs
them on one. The float32 comparisons switch TF32 off: cuDNN uses it for float32 convolutions by
default on Ampere and later, which is 1e-3 rounding, not a difference in the maths.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from convexp import autograd
from convexp.augment import build_pipeline
from convexp.config import Train
from convexp.console import Reporter
from convexp.data import Split, Splits
from convexp.experiments.train_mnist import TrainMnistConfig
from convexp.lifecycle import configure_device, open_run
from convexp.models import MNISTConvNet, to_device
from convexp.runs import RunFolder
from convexp.train import seed_everything, train_unit
from tests.helpers import (
    ALGORITHMS,
    GEOMETRY_GRID,
    GRADCHECK_CASES,
    TOLERANCE,
    WIDE_GRID,
    conv2d_opinfo,
    float64,
    run_sample,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA tests: this machine has no CUDA GPU")
CUDA = torch.device("cuda")
CONVS = ["native", "unfold", "unfold-reference"]
REPORT_AUGMENTATION = [
    {"name": "RandomAffine", "degrees": 10, "translate": [0.1, 0.1], "scale": [0.9, 1.1]},
    {"name": "RandomPerspective", "distortion_scale": 0.2, "p": 0.5},
    {"name": "GaussianBlur", "kernel_size": 3, "sigma": [0.1, 1.0]},
]


@pytest.fixture(autouse=True)
def exact_float32():
    # cudnn.flags(), not assignment: PyTorch's OpInfo module locks the global cuDNN flags once imported.
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False):
        yield
    torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def deterministic():
    """train.deterministic as a run sets it (configure_device), undone afterwards: it is process-wide."""
    configure_device(CUDA, deterministic=True)
    yield
    torch.use_deterministic_algorithms(False)


def double(*shape):
    return float64(*shape, device=CUDA)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("stride,padding,kernel", GEOMETRY_GRID)
def test_conv2d_gradcheck_on_cuda(stride, padding, kernel, algorithm):
    x, w, b = double(2, 2, 7, 8), double(3, 2, *kernel), double(3)
    assert gradcheck(lambda x, w, b: autograd.conv2d(x, w, b, stride, padding, algorithm=algorithm), (x, w, b),
                     fast_mode=True)
    torch.testing.assert_close(autograd.conv2d(x, w, b, stride, padding, algorithm=algorithm),
                               F.conv2d(x, w, b, stride=stride, padding=padding))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", GRADCHECK_CASES)
def test_dropin_cases_gradcheck_on_cuda(case, algorithm):
    x_shape, w_shape, options = GRADCHECK_CASES[case]
    x, w, b = double(*x_shape), double(*w_shape), double(w_shape[0])
    assert gradcheck(lambda x, w, b: autograd.conv2d(x, w, b, algorithm=algorithm, **options), (x, w, b), fast_mode=True)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("stride,padding,kernel,c_in,c_out,batch", WIDE_GRID)
def test_float32_equals_cudnn(stride, padding, kernel, c_in, c_out, batch, algorithm):
    x = torch.randn(batch, c_in, 9, 10, device=CUDA, requires_grad=True)
    w = torch.randn(c_out, c_in, *kernel, device=CUDA, requires_grad=True)
    b = torch.randn(c_out, device=CUDA, requires_grad=True)
    ours = autograd.conv2d(x, w, b, stride, padding, algorithm=algorithm)
    expected = F.conv2d(x, w, b, stride=stride, padding=padding)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(expected)
    for mine, theirs in zip(torch.autograd.grad(ours, (x, w, b), grad), torch.autograd.grad(expected, (x, w, b), grad)):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_opinfo_sample_on_cuda(algorithm, dtype):
    samples = list(conv2d_opinfo().sample_inputs("cuda", dtype, requires_grad=True))
    assert len(samples) >= 30
    for sample in samples:
        run_sample(sample, algorithm, TOLERANCE[dtype])


@pytest.mark.parametrize("conv", CONVS[1:])
def test_network_layers_at_training_batch_sizes_equal_cudnn(conv):
    """The network's own layers, channels-last, at batch 256: the sizes the GPU path chunks differently."""
    seed_everything(0)
    native, ours = to_device(MNISTConvNet("native"), CUDA), to_device(MNISTConvNet(conv), CUDA)
    ours.load_state_dict(native.state_dict())
    x = torch.rand(256, 1, 28, 28, device=CUDA).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (256,), device=CUDA)
    for model in (native, ours):
        F.cross_entropy(model(x), y).backward()
    torch.testing.assert_close(ours(x), native(x), rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(native.named_parameters(), ours.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-4, msg=f"gradient of {name}")


def test_augmentation_on_cuda_is_seeded_and_keeps_the_range():
    pipeline = build_pipeline(REPORT_AUGMENTATION)
    images = torch.rand(64, 1, 28, 28, device=CUDA)
    first = pipeline(images, torch.Generator(device=CUDA).manual_seed(1))
    again = pipeline(images, torch.Generator(device=CUDA).manual_seed(1))
    other = pipeline(images, torch.Generator(device=CUDA).manual_seed(2))
    assert first.device.type == "cuda" and first.shape == images.shape
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.min() >= 0 and first.max() <= 1 + 1e-6


def random_splits(n=512, device=CUDA) -> Splits:
    g = torch.Generator().manual_seed(0)

    def split():
        return Split([torch.rand(n, 1, 28, 28, generator=g)], [torch.randint(0, 10, (n,), generator=g)])

    return Splits(split(), split(), split()).to(device)


def train_on_cuda(tmp_path, name: str, cfg: Train, conv: str = "native", augment=None):
    seed_everything(0)
    model = to_device(MNISTConvNet(conv), CUDA)
    run = RunFolder(tmp_path / name)
    run.path.mkdir(exist_ok=True)
    reporter = Reporter(quiet=True)
    with open_run(run, "train-mnist", TrainMnistConfig(seed=0, train=cfg), CUDA, reporter):
        return train_unit(run, model, random_splits(), cfg, seed=0, device=CUDA, reporter=reporter, augment=augment)


@pytest.mark.parametrize("conv", CONVS)
def test_deterministic_training_on_cuda_repeats_exactly(tmp_path, deterministic, conv):
    cfg = Train(epochs=2, batch_size=32, deterministic=True)
    augment = build_pipeline(REPORT_AUGMENTATION)
    first = train_on_cuda(tmp_path, "a", cfg, conv, augment)
    second = train_on_cuda(tmp_path, "b", cfg, conv, augment)
    assert first.history.rows == second.history.rows
    assert first.history.batch_losses == second.history.batch_losses


def test_resume_on_cuda_continues_the_augmentation_stream(tmp_path, deterministic, monkeypatch):
    """The CUDA generator's state rides in the checkpoint: epoch 2 after Ctrl-C and resume equals a straight run."""
    import convexp.train

    cfg = Train(epochs=2, batch_size=32, deterministic=True)
    augment = build_pipeline(REPORT_AUGMENTATION)
    straight = train_on_cuda(tmp_path, "straight", cfg, augment=augment)
    evaluate_epoch = convexp.train.epoch_metrics

    def interrupted_at_epoch_2(model, splits, cfg, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return evaluate_epoch(model, splits, cfg, epoch)

    monkeypatch.setattr(convexp.train, "epoch_metrics", interrupted_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_on_cuda(tmp_path, "resumed", cfg, augment=augment)
    monkeypatch.setattr(convexp.train, "epoch_metrics", evaluate_epoch)
    assert RunFolder(tmp_path / "resumed").status == "interrupted"
    resumed = train_on_cuda(tmp_path, "resumed", cfg, augment=augment)
    assert resumed.history.rows == straight.history.rows


@pytest.mark.parametrize("conv", CONVS)
def test_bench_workloads_capture_as_cuda_graphs(conv):
    """`convexp bench --set cuda_graphs=true`: every timed item, the hand-written Functions and a
    capturable Adam step included, records and replays as a CUDA graph."""
    from convexp.benchmark import workloads_for

    items = workloads_for(conv, 0, 16, CUDA, cuda_graphs=True)
    assert "training step" in items
    for replay in items.values():
        replay()
    torch.cuda.synchronize()


@pytest.mark.parametrize("conv", CONVS)
def test_a_replayed_graph_accumulates_what_the_eager_calls_do(conv):
    """A captured layer step is the same arithmetic as the eager one: after bench's 3 warm-up
    calls and one replay, its weight and input gradients hold four steps' worth, as four eager
    calls of an identical layer give."""
    import copy

    from convexp.benchmark import graphed

    torch.manual_seed(0)
    layer = to_device(MNISTConvNet(conv), CUDA).features.conv2
    twin = copy.deepcopy(layer)
    x = torch.rand(16, 16, 14, 14, device=CUDA).to(memory_format=torch.channels_last).requires_grad_()
    x_twin = x.detach().clone().requires_grad_()

    replay = graphed(lambda: layer(x).sum().backward())
    replay()
    for _ in range(4):
        twin(x_twin).sum().backward()
    torch.cuda.synchronize()
    torch.testing.assert_close(layer.weight.grad, twin.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x.grad, x_twin.grad, rtol=1e-4, atol=1e-4)
    assert float(layer.weight.grad.abs().sum()) > 0  # something was computed at all
