"""Hand-written forward and backward passes (the report's Part 1), each checked by gradcheck.

Notation follows the report: for a scalar loss l and an op S = f(X), X∇ = ∂l/∂X is computed from
S∇ = ∂l/∂S. Each Function's backward sits right beside its forward.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from convexp.precision import autocast_dtype

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


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """The report's formula (question 2) with dilation: floor((size + 2p - d·(k - 1) - 1) / s) + 1.

    Without dilation (d = 1) it is the report's floor((size + 2p - k) / s) + 1. `padding` is per
    side; an asymmetric pair (padding="same" with an even kernel) enters as 2p = before + after.
    """
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


Quad = tuple[int, int, int, int]  # padding (top, bottom, left, right)


@dataclass(frozen=True)
class ConvGeometry:
    """Everything about a convolution but its tensors, resolved from F.conv2d's arguments."""

    stride: Pair = (1, 1)
    padding: Quad = (0, 0, 0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1

    def output_size(self, height: int, width: int, kernel: Pair) -> Pair:
        top, bottom, left, right = self.padding
        return (conv_output_size(height + top + bottom, kernel[0], self.stride[0], 0, self.dilation[0]),
                conv_output_size(width + left + right, kernel[1], self.stride[1], 0, self.dilation[1]))

    def padded_size(self, height: int, width: int) -> Pair:
        top, bottom, left, right = self.padding
        return height + top + bottom, width + left + right


def output_size(x: torch.Tensor, weight: torch.Tensor, geometry: ConvGeometry) -> Pair:
    """(h_out, w_out) of x (b, c, h, w) convolved with weight (c_out, c / groups, kh, kw)."""
    return geometry.output_size(x.shape[2], x.shape[3], (weight.shape[2], weight.shape[3]))


def pad_nchw(x: torch.Tensor, padding: Quad) -> torch.Tensor:
    top, bottom, left, right = padding
    return F.pad(x, (left, right, top, bottom)) if any(padding) else x


def crop(padded: torch.Tensor, padding: Quad, height: int, width: int) -> torch.Tensor:
    """The inverse of zero-padding for gradients: the (…, height, width) window padding added to."""
    top, _, left, _ = padding
    return padded[..., top : top + height, left : left + width]


class Conv2dFunction(torch.autograd.Function):
    """2-D convolution as F.unfold + matmul, with the backward derived by hand (questions 4-6).

    The report's formulation, kept as the reference (`conv: unfold-reference`); Conv2dRows
    below is the same maths laid out for speed.

    Shapes: input (b, c, h, w); weight (c_out, c/g, kh, kw) for g groups; bias (c_out,) or None;
    unfolded input U (b, k, p) with k = c·kh·kw values per patch and p = h_out·w_out patches.

    forward:  Y = W̃ U  (W̃ = weight as (c_out, k)), read directly as (b, c_out, h_out, w_out).
    backward: W∇ = Σ_b Y∇_b U_bᵀ;  U∇ = W̃ᵀ Y∇;  X∇ = fold(U∇);  bias∇ = Σ_{b,p} Y∇.

    Dilation d: the patch of output pixel (y, x) reads input rows s·y + d·i for kernel row i.
    F.unfold and F.fold both take d, so forward and backward keep the same form: fold is the
    adjoint of unfold for any d, adding each U∇ entry back onto the pixel its U entry copied.

    Groups g: U's k is ordered (c, kh, kw), so group j's channels are the contiguous rows
    j·k/g … (j+1)·k/g of U, and output channels j·c_out/g … of Y use only those. W̃ is then
    block-diagonal, stored as its g blocks W̃_j (c_out/g, k/g), and every product is a batched
    one over the blocks:
        Y_j = W̃_j U_j;   W∇_j = Σ_b Y∇_{b,j} U_{b,j}ᵀ;   U∇_j = W̃_jᵀ Y∇_j.
    The zero blocks of W̃ receive no gradient, as no weight lives there.

    Padding "same" with an even kernel pads one pixel more after than before (as PyTorch): F.unfold
    pads symmetrically only, so the input is padded explicitly and X∇ is the fold cropped back.
    U is kept from the forward (b·k·p floats) so the backward does not unfold a second time.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, geometry: ConvGeometry):
        b, _, h, w = x.shape
        c_out, _, kh, kw = weight.shape
        g = geometry.groups
        h_out, w_out = output_size(x, weight, geometry)
        unfolded = F.unfold(pad_nchw(x, geometry.padding), (kh, kw), dilation=geometry.dilation,
                            stride=geometry.stride)  # (b, k, p)
        blocks = weight.reshape(g, c_out // g, -1)  # W̃_j (g, c_out/g, k/g)
        out = torch.matmul(blocks, unfolded.view(b, g, -1, h_out * w_out))  # (b, g, c_out/g, p)
        out = out.view(b, c_out, h_out * w_out)
        if bias is not None:
            out += bias.view(1, c_out, 1)
        ctx.save_for_backward(unfolded, weight)
        ctx.conv_args = (h, w, kh, kw, geometry, bias is not None)
        return out.view(b, c_out, h_out, w_out)

    @staticmethod
    @once_differentiable  # in-place products into buffers: a second derivative through them would be wrong
    def backward(ctx, grad_out):
        unfolded, weight = ctx.saved_tensors
        h, w, kh, kw, geometry, has_bias = ctx.conv_args
        b, c_out = grad_out.shape[:2]
        g, p = geometry.groups, unfolded.shape[2]
        grad_blocks = grad_out.reshape(b, g, c_out // g, p)  # Y∇_j (b, g, c_out/g, p)
        blocks = weight.reshape(g, c_out // g, -1)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # the first layer of a network skips this
            grad_unfolded = torch.matmul(blocks.transpose(1, 2), grad_blocks)  # U∇_j (b, g, k/g, p)
            grad_padded = F.fold(grad_unfolded.view(b, -1, p), geometry.padded_size(h, w), (kh, kw),
                                 dilation=geometry.dilation, stride=geometry.stride)
            grad_x = crop(grad_padded, geometry.padding, h, w)
        if ctx.needs_input_grad[1]:
            # Σ_b (c_out/g, p) @ (p, k/g) per block: one batched matmul, then the sum over the batch.
            grad_weight = torch.matmul(grad_blocks, unfolded.view(b, g, -1, p).transpose(2, 3)).sum(0).view_as(weight)
        if has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum(dim=(0, 2, 3))
        return grad_x, grad_weight, grad_bias, None


class Conv2dRows(torch.autograd.Function):
    """2-D convolution as unfold + one matmul, backward as matmul + fold, in a row layout.

    The maths of Conv2dFunction, with the unfolded input stored as rows: R (b·p, k), one row per
    output pixel, k ordered (kh, kw, c). On channels-last memory the patches are a strided view
    of the padded input, so the unfold is one copy and the fold kh·kw strided adds, instead of
    PyTorch's slow CPU im2col/col2im, and every product is one plain matmul with no transposed
    copies:

    forward:  Y (b·p, c_out) = R W̃ᵀ + bias      (the output is channels-last NCHW)
    backward: W̃∇ = Y∇ᵀ R;  R∇ = Y∇ W̃;  X∇ = fold(R∇);  bias∇ = Σ_rows Y∇

    Dilation d only moves where kernel offset (i, j) reads: rows d·i + s·y of the padded input
    (offset_slices). Unfold copies from there and fold adds back to the same place, so the
    adjoint pair, and with it the backward, is unchanged.

    Groups g: with k ordered (kh, kw, c) a group's columns are not contiguous, so R is stored
    group-major instead, R_j (b·p, k/g) with k/g ordered (kh, kw, c/g), one matmul per block of
    the block-diagonal W̃ batched into one: Y_j = R_j W̃_jᵀ, W̃∇_j = Y∇_jᵀ R_j, R∇_j = Y∇_j W̃_j.
    With g = 1 that is exactly the single matmul above (the network's own layers).

    R is kept from forward to backward when it is at most KEEP_ROWS_BYTES (GPU_KEEP_ROWS_BYTES on a
    GPU). A bigger R would outgrow the CPU caches, and each matmul over it would wait on memory: then forward and
    backward both work through the batch in chunks of about CHUNK_ROWS_BYTES of R, unfolding
    each chunk into one reused buffer (backward unfolds again; only the padded input is kept).
    On the CPU R∇ is folded one kernel offset at a time (fold_into), so it is never stored whole;
    on a GPU, where launches cost more than these small products, by one matmul and col2im (fold_rows).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, geometry: ConvGeometry):
        b, c = x.shape[:2]
        c_out, _, kh, kw = weight.shape
        g = geometry.groups
        out_size = output_size(x, weight, geometry)
        pixels, k = out_size[0] * out_size[1], c * kh * kw
        padded = pad_nhwc(x, geometry.padding)
        # W̃_j (g, c_out/g, k/g), k/g ordered (kh, kw, c/g)
        weight_rows = weight.view(g, c_out // g, c // g, kh, kw).permute(0, 1, 3, 4, 2).reshape(g, c_out // g, k // g)
        chunk = images_per_chunk(b, pixels * k * x.element_size(), x.device.type)
        rows = x.new_empty(g, chunk * pixels, k // g)
        out = x.new_empty(b * pixels, c_out)
        for start, stop in chunk_bounds(b, chunk):
            chunk_rows = unfold_into(rows[:, : (stop - start) * pixels], padded[start:stop], (kh, kw), geometry, out_size)
            rows_times_weight(chunk_rows, weight_rows, bias, out[start * pixels : stop * pixels])
        ctx.save_for_backward(rows if chunk == b else padded, weight_rows)
        ctx.conv_args = (x.shape, (kh, kw), geometry, out_size, bias is not None, chunk)
        return out.view(b, *out_size, c_out).permute(0, 3, 1, 2)  # (b, c_out, h_out, w_out)

    @staticmethod
    @once_differentiable  # in-place products into buffers: a second derivative through them would be wrong
    def backward(ctx, grad_out):
        saved, weight_rows = ctx.saved_tensors
        (b, c, h, w), (kh, kw), geometry, out_size, has_bias, chunk = ctx.conv_args
        g, c_out_g, k_g = weight_rows.shape
        pixels = out_size[0] * out_size[1]
        grad_rows_out = grad_out.permute(0, 2, 3, 1).reshape(-1, g * c_out_g)  # Y∇ (b·p, c_out); a view when channels-last
        needs_x, needs_weight = ctx.needs_input_grad[:2]
        rows_kept = chunk == b
        rows_buffer = None if rows_kept else saved.new_empty(g, chunk * pixels, k_g)
        col2im = needs_x and rows_kept and grad_out.device.type in LAUNCH_BOUND_DEVICES
        grad_padded = grad_out.new_zeros(b, *geometry.padded_size(h, w), c) if needs_x and not col2im else None
        grad_weight_t = weight_rows.new_zeros(g, k_g, c_out_g) if needs_weight else None  # R_jᵀ Y∇_j, summed over chunks
        for start, stop in chunk_bounds(b, chunk):
            grad_chunk = grad_rows_out[start * pixels : stop * pixels]
            grad_groups = grad_chunk.view(-1, g, c_out_g).transpose(0, 1)  # Y∇_j (g, rows, c_out/g): a view
            if needs_weight:
                chunk_rows = saved if rows_kept else unfold_into(
                    rows_buffer[:, : (stop - start) * pixels], saved[start:stop], (kh, kw), geometry, out_size)
                # (Rᵀ Y∇)ᵀ rather than Y∇ᵀ R: the same product, but MKL runs it up to 5x faster
                # when k is small (conv1: k = 9 over 50,176 rows), and never slower here.
                if g == 1:
                    grad_weight_t[0].addmm_(chunk_rows[0].t(), grad_chunk)
                else:
                    grad_weight_t.baddbmm_(chunk_rows.transpose(1, 2), grad_groups)
            if needs_x and not col2im:
                fold_into(grad_padded[start:stop], grad_groups, weight_rows.view(g, c_out_g, kh, kw, c // g),
                          geometry, out_size)
        grad_x = grad_weight = grad_bias = None
        if col2im:
            grad_x = crop(fold_rows(grad_rows_out, weight_rows, geometry, (h, w), (kh, kw), out_size), geometry.padding, h, w)
        elif needs_x:
            grad_x = crop(grad_padded.permute(0, 3, 1, 2), geometry.padding, h, w)
        if needs_weight:
            grad_weight = (grad_weight_t.transpose(1, 2).reshape(g * c_out_g, kh, kw, c // g).permute(0, 3, 1, 2))
        if has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows_out.sum(0)
        return grad_x, grad_weight, grad_bias, None


def rows_times_weight(rows: torch.Tensor, weight_rows: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor) -> None:
    """out (n·p, c_out) = R_j W̃_jᵀ (+ bias) for every group j; rows (g, n·p, k/g), weight_rows (g, c_out/g, k/g)."""
    g = weight_rows.shape[0]
    if g == 1:  # the network's own layers: one plain matmul straight into the output
        if bias is not None:
            torch.addmm(bias, rows[0], weight_rows[0].t(), out=out)
        else:
            torch.mm(rows[0], weight_rows[0].t(), out=out)
        return
    # (g, n·p, c_out/g) -> out's channels j·c_out/g … (j+1)·c_out/g
    out.view(-1, g, weight_rows.shape[1]).copy_(torch.bmm(rows, weight_rows.transpose(1, 2)).transpose(0, 1))
    if bias is not None:
        out += bias


# Measured with `convexp bench` on this project's 2-core CPU (2 MiB L2 per core, 32 MiB L3):
# keeping R up to 8 MiB (conv1 and conv2 at batch 64, conv1 at batch 256) beats unfolding it
# twice, and chunks of 4 MiB ran conv2 at batch 256 (R: 29 MiB) about 1.3x faster than one R.
KEEP_ROWS_BYTES = 8 << 20
CHUNK_ROWS_BYTES = 4 << 20
# A GPU is not cache-bound the same way, and each chunk costs launches: keep R whole (conv2 at
# batch 1024 is 115 MiB) unless it would take a real share of the GPU's memory.
GPU_KEEP_ROWS_BYTES = 2 << 30
GPU_CHUNK_ROWS_BYTES = 512 << 20


def images_per_chunk(batch: int, row_bytes_per_image: int, device_type: str = "cpu") -> int:
    """The whole batch when its R fits the device's keep budget, else as many images as fill a chunk."""
    keep, chunk = ((GPU_KEEP_ROWS_BYTES, GPU_CHUNK_ROWS_BYTES) if device_type in LAUNCH_BOUND_DEVICES
                   else (KEEP_ROWS_BYTES, CHUNK_ROWS_BYTES))
    if batch * row_bytes_per_image <= keep:
        return max(batch, 1)  # an empty batch: one (empty) chunk
    return max(1, min(batch, chunk // max(1, row_bytes_per_image)))


def chunk_bounds(batch: int, chunk: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk, batch)) for start in range(0, batch, chunk)]


def pad_nhwc(x: torch.Tensor, padding: Quad) -> torch.Tensor:
    """x (b, c, h, w) zero-padded, as a (b, hp, wp, c) view: free on channels-last memory."""
    return pad_nchw(x, padding).permute(0, 2, 3, 1)


def offset_slices(i: int, j: int, geometry: ConvGeometry, out_size: Pair) -> tuple[slice, slice]:
    """Rows and columns of the padded input that kernel offset (i, j) meets, one per output pixel."""
    (sh, sw), (dh, dw) = geometry.stride, geometry.dilation
    return (slice(dh * i, dh * i + sh * (out_size[0] - 1) + 1, sh),
            slice(dw * j, dw * j + sw * (out_size[1] - 1) + 1, sw))


def unfold_into(rows: torch.Tensor, padded: torch.Tensor, kernel: Pair, geometry: ConvGeometry, out_size: Pair) -> torch.Tensor:
    """im2col: write the patches of padded (n, hp, wp, c) into rows (g, n·p, k/g), k/g ordered (kh, kw, c/g).

    The patches are already a strided view of the padded input (as_strided below, no copy);
    one copy then writes the rows in order. With one input channel per group that copy's
    innermost run is only kw floats, and kh·kw copies of whole shifted images are faster
    (measured: 0.37 vs 1.37 ms for conv1 at batch 64; for c >= 2 the single copy wins, 0.43 vs
    1.2 ms for conv2).
    """
    n, _, _, c = padded.shape
    g = geometry.groups
    # One group (the network's layers) drops the group dimension: the fewest tensor ops per call.
    shape = (n, out_size[0], out_size[1], kernel[0], kernel[1], c // g)
    target = rows.view(shape if g == 1 else (g, *shape))
    if c // g > 1 or padded.device.type in LAUNCH_BOUND_DEVICES:  # on a GPU, one launch beats kh·kw
        sn, sh, sw, sc = padded.stride()
        (s0, s1), (d0, d1) = geometry.stride, geometry.dilation
        strides = (sn, sh * s0, sw * s1, sh * d0, sw * d1, sc)
        patches = padded.as_strided(target.shape, strides if g == 1 else (sc * (c // g), *strides), padded.storage_offset())
        target.copy_(patches)
        return rows
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows_slice, cols_slice = offset_slices(i, j, geometry, out_size)
            source = padded[:, rows_slice, cols_slice, :]  # (n, oh, ow, c)
            # with c/g = 1: (n, oh, ow, g) -> (g, n, oh, ow, 1), a free view
            target[..., i, j, :] = source if g == 1 else source.permute(3, 0, 1, 2).unsqueeze(-1)
    return rows


def unfold_rows(x: torch.Tensor, kernel: Pair, geometry: ConvGeometry, out_size: Pair) -> torch.Tensor:
    """im2col of a whole batch: x (b, c, h, w) -> R (g, b·p, k/g), k/g ordered (kh, kw, c/g)."""
    b, c = x.shape[:2]
    g = geometry.groups
    rows = x.new_empty(g, b * out_size[0] * out_size[1], c // g * kernel[0] * kernel[1])
    return unfold_into(rows, pad_nhwc(x, geometry.padding), kernel, geometry, out_size)


def fold_into(grad_padded: torch.Tensor, grad_groups: torch.Tensor, weight: torch.Tensor, geometry: ConvGeometry,
              out_size: Pair) -> None:
    """grad_padded (n, hp, wp, c) += fold(Y∇ W̃), the adjoint of unfold_into, block by block.

    grad_groups Y∇_j (g, n·p, c_out/g); weight W̃ as (g, c_out/g, kh, kw, c/g).
    The columns of R∇_j = Y∇_j W̃_j for kernel offset (i, j) are Y∇_j W̃_j[:, i, j, :] (n·p, c/g);
    each block is added at once into the input pixels that offset read, summing where patches
    overlap. Folding per block keeps the working set small: R∇ (n·p·k floats) is never whole.
    """
    g, _, kh, kw, c_g = weight.shape
    n = grad_padded.shape[0]
    grad_rows, weight_one = grad_groups[0], weight[0]  # one group: plain matmuls, indexed once
    for i in range(kh):
        for j in range(kw):
            rows_slice, cols_slice = offset_slices(i, j, geometry, out_size)
            target = grad_padded[:, rows_slice, cols_slice, :]  # (n, oh, ow, c)
            if g == 1:
                block = (grad_rows @ weight_one[:, i, j, :]).view(n, out_size[0], out_size[1], c_g)
            else:  # (g, n·p, c/g) -> (n, oh, ow, c), group-major channels as in the input
                block = torch.bmm(grad_groups, weight[:, :, i, j, :]).view(g, n, out_size[0], out_size[1], c_g)
                block = block.permute(1, 2, 3, 0, 4).reshape(n, out_size[0], out_size[1], g * c_g)
            # add_ on the view, not `padded[...] += block`: Python's augmented assignment on an
            # index writes the sum back through __setitem__, a second full copy per offset.
            target.add_(block)


# Devices where each kernel launch costs more than the work of these small layers (GPUs): there
# the rows are unfolded by one copy whatever the channel count, and the input's gradient is
# folded by one matmul and PyTorch's col2im (fold_rows, 3 launches) rather than block by block
# (fold_into, 2·kh·kw). On the CPU fold_into's small blocks stay in cache and col2im is slow.
LAUNCH_BOUND_DEVICES = ("cuda",)


def fold_rows(grad_rows_out: torch.Tensor, weight_rows: torch.Tensor, geometry: ConvGeometry, size: Pair,
              kernel: Pair, out_size: Pair) -> torch.Tensor:
    """fold(R∇) with R∇_j = Y∇_j W̃_j, the whole batch at once: the padded input's gradient (b, c, hp, wp).

    grad_rows_out Y∇ (b·p, c_out); weight_rows W̃_j (g, c_out/g, k/g), k/g ordered (kh, kw, c/g).
    F.fold wants columns (b, c·kh·kw, p) ordered (c, kh, kw): R∇ is permuted once to that order,
    channels group-major as in the input.
    """
    g, c_out_g, k_g = weight_rows.shape
    (kh, kw), pixels = kernel, out_size[0] * out_size[1]
    c_g = k_g // (kh * kw)
    b = grad_rows_out.shape[0] // pixels
    if g == 1:
        grad_rows = (grad_rows_out @ weight_rows[0]).unsqueeze(0)  # (1, b·p, k)
    else:
        grad_rows = torch.bmm(grad_rows_out.view(-1, g, c_out_g).transpose(0, 1), weight_rows)  # (g, b·p, k/g)
    columns = grad_rows.view(g, b, pixels, kh, kw, c_g).permute(1, 0, 5, 3, 4, 2).reshape(b, g * c_g * kh * kw, pixels)
    return F.fold(columns, geometry.padded_size(*size), kernel, dilation=geometry.dilation, stride=geometry.stride)


CONV_FUNCTIONS = {"rows": Conv2dRows, "reference": Conv2dFunction}
PADDING_STRINGS = ("same", "valid")


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Pair = 1,
    padding: int | Pair | str = 0,
    dilation: int | Pair = 1,
    groups: int = 1,
    algorithm: str = "rows",
) -> torch.Tensor:
    """Drop-in for F.conv2d built on the hand-written Functions: same arguments, same result.

    x (b, c, h, w) or (c, h, w); weight (c_out, c / groups, kh, kw) -> (b, c_out, h_out, w_out).
    padding: int, (ph, pw), "valid" (none) or "same" (output as large as the input; stride 1).
    algorithm: "rows" (fast layout) or "reference" (the report's F.unfold/F.fold layout).
    """
    dtype = autocast_dtype(x)
    if dtype is not None and x.is_floating_point():
        # As autocast does for F.conv2d: the Function runs wholly in `dtype`, forward and backward
        # (its products in bf16); the casts are recorded by autograd, so the gradients reach the
        # float32 weights in float32.
        with torch.autocast(x.device.type, enabled=False):
            return conv2d(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype), stride, padding,
                          dilation, groups, algorithm)
    geometry = conv_geometry(x, weight, stride, padding, dilation, groups)
    function = CONV_FUNCTIONS[algorithm]
    if x.dim() == 3:
        return function.apply(x.unsqueeze(0), weight, bias, geometry).squeeze(0)
    return function.apply(x, weight, bias, geometry)


def as_pair(value: int | Pair) -> Pair:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def same_padding(kernel: Pair, dilation: Pair) -> Quad:
    """PyTorch's "same": d·(k - 1) pixels in all per dimension, the odd one after (bottom, right)."""
    (kh, kw), (dh, dw) = kernel, dilation
    total_h, total_w = dh * (kh - 1), dw * (kw - 1)
    return total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2


def conv_geometry(x: torch.Tensor, weight: torch.Tensor, stride, padding, dilation, groups) -> ConvGeometry:
    """F.conv2d's arguments resolved and checked; a ValueError names what is wrong and how to fix it."""
    padding = padding if isinstance(padding, str) else as_pair(padding)
    return geometry_of(tuple(x.shape), tuple(weight.shape), as_pair(stride), padding, as_pair(dilation), groups)


@functools.lru_cache(maxsize=256)  # a network asks the same few questions every step: answer each once
def geometry_of(x_shape: tuple, weight_shape: tuple, stride: Pair, padding: Pair | str, dilation: Pair,
                groups: int) -> ConvGeometry:
    if len(x_shape) not in (3, 4):
        raise ValueError(f"conv input must be (b, c, h, w) or (c, h, w); got shape {x_shape}")
    if len(weight_shape) != 4:
        raise ValueError(f"conv weight must be (c_out, c_in / groups, kh, kw); got shape {weight_shape}")
    if min(stride) < 1:
        raise ValueError(f"conv stride must be at least 1; got {stride}")
    if min(dilation) < 1:
        raise ValueError(f"conv dilation must be at least 1; got {dilation}")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv groups must be a whole number of at least 1; got {groups!r}")
    c, h, w = x_shape[-3:]
    c_out, c_per_group, kh, kw = weight_shape
    if c % groups or c_out % groups:
        raise ValueError(f"conv groups={groups} must divide both the input channels ({c}) and the output "
                         f"channels ({c_out}): pick a common divisor")
    if c_per_group * groups != c:
        raise ValueError(f"conv weight expects {c_per_group * groups} input channels ({c_per_group} per group x "
                         f"{groups} groups); the input has {c}")
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise ValueError(f"conv padding {padding!r} is not one of 'same', 'valid': use one of them or a number")
        if padding == "same" and stride != (1, 1):
            raise ValueError(f"conv padding='same' needs stride 1 (got {stride}): pad with a number instead")
        quad = same_padding((kh, kw), dilation) if padding == "same" else (0, 0, 0, 0)
    else:
        ph, pw = padding
        if min(ph, pw) < 0:
            raise ValueError(f"conv padding must be 0 or more; got {(ph, pw)}")
        quad = (ph, ph, pw, pw)
    geometry = ConvGeometry(stride, quad, dilation, groups)
    span_h, span_w = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    hp, wp = geometry.padded_size(h, w)
    if span_h > hp or span_w > wp:
        raise ValueError(
            f"conv kernel {kh}x{kw} (spanning {span_h}x{span_w} with dilation {dilation}) is larger than the "
            f"padded input {hp}x{wp}: use a smaller kernel or dilation, or more padding"
        )
    return geometry
