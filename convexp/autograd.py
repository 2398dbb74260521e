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


def output_size(x: torch.Tensor, weight: torch.Tensor, stride: Pair, padding: Pair) -> Pair:
    """(h_out, w_out) of x (b, c, h, w) convolved with weight (c_out, c, kh, kw)."""
    return (conv_output_size(x.shape[2], weight.shape[2], stride[0], padding[0]),
            conv_output_size(x.shape[3], weight.shape[3], stride[1], padding[1]))


class Conv2dFunction(torch.autograd.Function):
    """2-D convolution as F.unfold + matmul, with the backward derived by hand (questions 4-6).

    The report's formulation, kept as the reference (`conv: unfold-reference`); Conv2dRows
    below is the same maths laid out for speed.

    Shapes: input (b, c, h, w); weight (c_out, c, kh, kw); bias (c_out,) or None;
    unfolded input U (b, k, p) with k = c*kh*kw values per patch and p = h_out*w_out patches.

    forward:  Y = W̃ U  (W̃ = weight as (c_out, k)), read directly as (b, c_out, h_out, w_out).
    backward: W∇ = Σ_b Y∇_b U_bᵀ;  U∇ = W̃ᵀ Y∇;  X∇ = fold(U∇);  bias∇ = Σ_{b,p} Y∇.
    U is kept from the forward (b·k·p floats) so the backward does not unfold a second time.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride: Pair, padding: Pair):
        b, _, h, w = x.shape
        c_out, _, kh, kw = weight.shape
        h_out, w_out = output_size(x, weight, stride, padding)
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


class Conv2dRows(torch.autograd.Function):
    """2-D convolution as unfold + one matmul, backward as matmul + fold, in a row layout.

    The maths of Conv2dFunction, with the unfolded input stored as rows: R (b·p, k), one row per
    output pixel, k ordered (kh, kw, c). On channels-last memory the patches are a strided view
    of the padded input, so the unfold is one copy and the fold kh·kw strided adds, instead of
    PyTorch's slow CPU im2col/col2im, and every product is one plain matmul with no transposed
    copies:

    forward:  Y (b·p, c_out) = R W̃ᵀ + bias      (the output is channels-last NCHW)
    backward: W̃∇ = Y∇ᵀ R;  R∇ = Y∇ W̃;  X∇ = fold(R∇);  bias∇ = Σ_rows Y∇

    R is kept from forward to backward when it is at most KEEP_ROWS_BYTES. A bigger R would
    outgrow the CPU caches, and each matmul over it would wait on memory: then forward and
    backward both work through the batch in chunks of about CHUNK_ROWS_BYTES of R, unfolding
    each chunk into one reused buffer (backward unfolds again; only the padded input is kept).
    R∇ is folded one kernel offset at a time (see fold_into), so it is never stored whole.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride: Pair, padding: Pair):
        b, c = x.shape[:2]
        c_out, _, kh, kw = weight.shape
        out_size = output_size(x, weight, stride, padding)
        pixels, k = out_size[0] * out_size[1], c * kh * kw
        padded = pad_nhwc(x, padding)
        weight_rows = weight.permute(0, 2, 3, 1).reshape(c_out, k)  # W̃ (c_out, k), k as (kh, kw, c)
        chunk = images_per_chunk(b, pixels * k * x.element_size())
        rows = x.new_empty(chunk * pixels, k)
        out = x.new_empty(b * pixels, c_out)
        for start, stop in chunk_bounds(b, chunk):
            chunk_rows = unfold_into(rows[: (stop - start) * pixels], padded[start:stop], (kh, kw), stride, out_size)
            chunk_out = out[start * pixels : stop * pixels]
            if bias is not None:
                torch.addmm(bias, chunk_rows, weight_rows.t(), out=chunk_out)
            else:
                torch.mm(chunk_rows, weight_rows.t(), out=chunk_out)
        ctx.save_for_backward(rows if chunk == b else padded, weight_rows)
        ctx.conv_args = (x.shape, (kh, kw), stride, padding, out_size, bias is not None, chunk)
        return out.view(b, *out_size, c_out).permute(0, 3, 1, 2)  # (b, c_out, h_out, w_out)

    @staticmethod
    def backward(ctx, grad_out):
        saved, weight_rows = ctx.saved_tensors
        (b, c, h, w), (kh, kw), stride, padding, out_size, has_bias, chunk = ctx.conv_args
        c_out, k = weight_rows.shape
        pixels = out_size[0] * out_size[1]
        grad_rows_out = grad_out.permute(0, 2, 3, 1).reshape(-1, c_out)  # Y∇ (b·p, c_out); a view when channels-last
        needs_x, needs_weight = ctx.needs_input_grad[:2]
        rows_kept = chunk == b
        rows_buffer = None if rows_kept else saved.new_empty(chunk * pixels, k)
        grad_padded = grad_out.new_zeros(b, h + 2 * padding[0], w + 2 * padding[1], c) if needs_x else None
        grad_weight_t = weight_rows.new_zeros(k, c_out) if needs_weight else None  # Rᵀ Y∇, summed over chunks
        for start, stop in chunk_bounds(b, chunk):
            grad_chunk = grad_rows_out[start * pixels : stop * pixels]
            if needs_weight:
                chunk_rows = saved if rows_kept else unfold_into(
                    rows_buffer[: (stop - start) * pixels], saved[start:stop], (kh, kw), stride, out_size)
                # (Rᵀ Y∇)ᵀ rather than Y∇ᵀ R: the same product, but MKL runs it up to 5x faster
                # when k is small (conv1: k = 9 over 50,176 rows), and never slower here.
                grad_weight_t.addmm_(chunk_rows.t(), grad_chunk)
            if needs_x:
                fold_into(grad_padded[start:stop], grad_chunk, weight_rows.view(c_out, kh, kw, c), stride, out_size)
        grad_x = grad_weight = grad_bias = None
        if needs_x:
            grad_x = grad_padded[:, padding[0] : padding[0] + h, padding[1] : padding[1] + w, :].permute(0, 3, 1, 2)
        if needs_weight:
            grad_weight = grad_weight_t.t().view(c_out, kh, kw, c).permute(0, 3, 1, 2)
        if has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows_out.sum(0)
        return grad_x, grad_weight, grad_bias, None, None


# Measured with `convexp bench` on this project's 2-core CPU (2 MiB L2 per core, 32 MiB L3):
# keeping R up to 8 MiB (conv1 and conv2 at batch 64, conv1 at batch 256) beats unfolding it
# twice, and chunks of 4 MiB ran conv2 at batch 256 (R: 29 MiB) about 1.3x faster than one R.
KEEP_ROWS_BYTES = 8 << 20
CHUNK_ROWS_BYTES = 4 << 20


def images_per_chunk(batch: int, row_bytes_per_image: int) -> int:
    """The whole batch when its R fits KEEP_ROWS_BYTES, else as many images as fill a chunk."""
    if batch * row_bytes_per_image <= KEEP_ROWS_BYTES:
        return max(batch, 1)  # an empty batch: one (empty) chunk
    return max(1, min(batch, CHUNK_ROWS_BYTES // row_bytes_per_image))


def chunk_bounds(batch: int, chunk: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk, batch)) for start in range(0, batch, chunk)]


def pad_nhwc(x: torch.Tensor, padding: Pair) -> torch.Tensor:
    """x (b, c, h, w) zero-padded, as a (b, h + 2ph, w + 2pw, c) view: free on channels-last memory."""
    padded = F.pad(x, (padding[1], padding[1], padding[0], padding[0])) if any(padding) else x
    return padded.permute(0, 2, 3, 1)


def offset_slices(i: int, j: int, stride: Pair, out_size: Pair) -> tuple[slice, slice]:
    """Rows and columns of the padded input that kernel offset (i, j) meets, one per output pixel."""
    return (slice(i, i + stride[0] * (out_size[0] - 1) + 1, stride[0]),
            slice(j, j + stride[1] * (out_size[1] - 1) + 1, stride[1]))


def unfold_into(rows: torch.Tensor, padded: torch.Tensor, kernel: Pair, stride: Pair, out_size: Pair) -> torch.Tensor:
    """im2col: write the patches of padded (n, hp, wp, c) into rows (n·p, k), k ordered (kh, kw, c).

    The patches are already a strided view of the padded input (as_strided below, no copy);
    one copy then writes the rows in order. With one input channel that copy's innermost run
    is only kw floats, and kh·kw copies of whole shifted images are faster (measured: 0.37 vs
    1.37 ms for conv1 at batch 64; for c >= 2 the single copy wins, 0.43 vs 1.2 ms for conv2).
    """
    n, _, _, c = padded.shape
    target = rows.view(n, out_size[0], out_size[1], kernel[0], kernel[1], c)
    if c > 1:
        sn, sh, sw, sc = padded.stride()
        patches = padded.as_strided(target.shape, (sn, sh * stride[0], sw * stride[1], sh, sw, sc), padded.storage_offset())
        target.copy_(patches)
        return rows
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows_slice, cols_slice = offset_slices(i, j, stride, out_size)
            target[:, :, :, i, j, :] = padded[:, rows_slice, cols_slice, :]
    return rows


def unfold_rows(x: torch.Tensor, kernel: Pair, stride: Pair, padding: Pair, out_size: Pair) -> torch.Tensor:
    """im2col of a whole batch: x (b, c, h, w) -> R (b·p, k), k ordered (kh, kw, c)."""
    b, c = x.shape[:2]
    rows = x.new_empty(b * out_size[0] * out_size[1], c * kernel[0] * kernel[1])
    return unfold_into(rows, pad_nhwc(x, padding), kernel, stride, out_size)


def fold_into(grad_padded: torch.Tensor, grad_out_rows: torch.Tensor, weight: torch.Tensor, stride: Pair,
              out_size: Pair) -> None:
    """grad_padded (n, hp, wp, c) += fold(Y∇ W̃), the adjoint of unfold_into, block by block.

    grad_out_rows Y∇ (n·p, c_out); weight W̃ as (c_out, kh, kw, c).
    The columns of R∇ = Y∇ W̃ for kernel offset (i, j) are Y∇ W̃[:, i, j, :] (n·p, c); each block
    is added at once into the input pixels that offset read, summing where patches overlap.
    Folding per block keeps the working set small: R∇ (n·p·k floats) is never written whole.
    """
    _, kh, kw, c = weight.shape
    n = grad_padded.shape[0]
    for i in range(kh):
        for j in range(kw):
            rows_slice, cols_slice = offset_slices(i, j, stride, out_size)
            block = (grad_out_rows @ weight[:, i, j, :]).view(n, out_size[0], out_size[1], c)
            # add_ on the view, not `padded[...] += block`: Python's augmented assignment on an
            # index writes the sum back through __setitem__, a second full copy per offset.
            grad_padded[:, rows_slice, cols_slice, :].add_(block)


CONV_FUNCTIONS = {"rows": Conv2dRows, "reference": Conv2dFunction}


def conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Pair = 1,
    padding: int | Pair = 0,
    algorithm: str = "rows",
) -> torch.Tensor:
    """Drop-in for F.conv2d (no dilation or groups) built on the hand-written Functions.

    x (b, c, h, w) or (c, h, w); weight (c_out, c, kh, kw) -> (b, c_out, h_out, w_out).
    algorithm: "rows" (fast layout) or "reference" (the report's F.unfold/F.fold layout).
    """
    stride, padding = as_pair(stride), as_pair(padding)
    check_conv_shapes(x, weight, stride, padding)
    function = CONV_FUNCTIONS[algorithm]
    if x.dim() == 3:
        return function.apply(x.unsqueeze(0), weight, bias, stride, padding).squeeze(0)
    return function.apply(x, weight, bias, stride, padding)


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
