"""Hand-written forward and backward passes (the report's Part 1), each checked by gradcheck.

Notation follows the report: for a scalar loss l and an op S = f(X), X∇ = ∂l/∂X is computed from
S∇ = ∂l/∂S. Each Function's backward sits right beside its forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Pair = tuple[int, int]


class Divide(torch.autograd.Function):
    """S = X / Y element-wise. X∇ = S∇ / Y, Y∇ = -S∇ ⊙ X / Y² (question 1)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, y)
        return x / y

    @staticmethod
    def backward(ctx, grad_s: torch.Tensor):
        x, y = ctx.saved_tensors
        grad_x = grad_s / y if ctx.needs_input_grad[0] else None
        grad_y = -grad_s * x / (y * y) if ctx.needs_input_grad[1] else None
        return grad_x, grad_y


class Sigmoid(torch.autograd.Function):
    """Y = σ(X) element-wise. X∇ = Y∇ ⊙ σ'(X), with σ'(x) = σ(x)(1 - σ(x)) (question 2)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = 1 / (1 + torch.exp(-x))
        ctx.save_for_backward(y)  # σ' is cheapest from the output itself
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        (y,) = ctx.saved_tensors
        return grad_y * y * (1 - y)


class MatmulTransposed(torch.autograd.Function):
    """Y = W Xᵀ with W (m, f), X (n, f), Y (m, n). W∇ = Y∇ X, X∇ = Y∇ᵀ W (question 3)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w, x)
        return w @ x.t()

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        w, x = ctx.saved_tensors
        grad_w = grad_y @ x if ctx.needs_input_grad[0] else None
        grad_x = grad_y.t() @ w if ctx.needs_input_grad[1] else None
        return grad_w, grad_x


class Expand(torch.autograd.Function):
    """Y (h, k) with Y[i, j] = x[i] for x (h,). X∇ = Y∇ 1_k: the row sums (question 4)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int) -> torch.Tensor:
        return x.unsqueeze(1).expand(-1, k).contiguous()

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        return grad_y.sum(dim=1), None


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """The report's formula (question 2): floor((size + 2p - k) / s) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


class Conv2dFunction(torch.autograd.Function):
    """2-D convolution as unfold + matmul, with the backward derived by hand (questions 4-6).

    Shapes: input (b, c, h, w); weight (c_out, c, kh, kw); bias (c_out,) or None;
    unfolded input U (b, k, p) with k = c*kh*kw values per patch and p = h_out*w_out patches.

    forward:  Y = W̃ U  (W̃ = weight as (c_out, k)), read directly as (b, c_out, h_out, w_out).
    backward: W∇ = Σ_b Y∇_b U_bᵀ;  U∇ = W̃ᵀ Y∇;  X∇ = fold(U∇);  bias∇ = Σ_{b,p} Y∇.
    U is kept from the forward (b·k·p floats) so the backward does not unfold a second time.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride: Pair, padding: Pair):
        b, c, h, w = x.shape
        c_out, _, kh, kw = weight.shape
        h_out = conv_output_size(h, kh, stride[0], padding[0])
        w_out = conv_output_size(w, kw, stride[1], padding[1])
        unfolded = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (b, k, p)
        weight_matrix = weight.reshape(c_out, -1)  # (c_out, k)
        out = torch.matmul(weight_matrix, unfolded)  # (b, c_out, p): no transpose, no copy
        if bias is not None:
            out += bias.view(1, c_out, 1)
        ctx.save_for_backward(unfolded, weight)
        ctx.conv_args = (h, w, kh, kw, stride, padding, bias is not None)
        return out.view(b, c_out, h_out, w_out)

    @staticmethod
    def backward(ctx, grad_out):
        unfolded, weight = ctx.saved_tensors
        h, w, kh, kw, stride, padding, has_bias = ctx.conv_args
        b, c_out = grad_out.shape[:2]
        grad_out = grad_out.reshape(b, c_out, -1)  # (b, c_out, p)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # the first layer of a network skips this
            grad_unfolded = torch.matmul(weight.reshape(c_out, -1).t(), grad_out)  # (b, k, p)
            grad_x = F.fold(grad_unfolded, (h, w), (kh, kw), padding=padding, stride=stride)
        if ctx.needs_input_grad[1]:
            # Σ_b (c_out, p) @ (p, k): one batched matmul, then the sum over the batch.
            grad_weight = torch.bmm(grad_out, unfolded.transpose(1, 2)).sum(0).view_as(weight)
        if has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(dim=(0, 2))
        return grad_x, grad_weight, grad_bias, None, None


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
) -> torch.Tensor:
    """Drop-in for F.conv2d (no dilation or groups) built on Conv2dFunction.

    x (b, c, h, w) or (c, h, w); weight (c_out, c, kh, kw) -> (b, c_out, h_out, w_out).
    """
    stride, padding = as_pair(stride), as_pair(padding)
    check_conv_shapes(x, weight, stride, padding)
    if x.dim() == 3:
        return Conv2dFunction.apply(x.unsqueeze(0), weight, bias, stride, padding).squeeze(0)
    return Conv2dFunction.apply(x, weight, bias, stride, padding)


def as_pair(value: int | Pair) -> Pair:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def check_conv_shapes(x: torch.Tensor, weight: torch.Tensor, stride: Pair, padding: Pair) -> None:
    """Raise ValueError for shapes F.unfold would reject with an obscure message."""
    if x.dim() not in (3, 4):
        raise ValueError(f"conv input must be (b, c, h, w) or (c, h, w); got shape {tuple(x.shape)}")
    if min(stride) < 1:
        raise ValueError(f"conv stride must be at least 1; got {stride}")
    if min(padding) < 0:
        raise ValueError(f"conv padding must be 0 or more; got {padding}")
    c, h, w = x.shape[-3:]
    if weight.shape[1] != c:
        raise ValueError(f"conv weight expects {weight.shape[1]} input channels; the input has {c}")
    kh, kw = weight.shape[2:]
    if kh > h + 2 * padding[0] or kw > w + 2 * padding[1]:
        raise ValueError(
            f"conv kernel {kh}x{kw} is larger than the padded input "
            f"{h + 2 * padding[0]}x{w + 2 * padding[1]}: use a smaller kernel or more padding"
        )
