"""Rotary position embedding in Triton, forward and backward.

`apply_rotary(x, cos, sin)` matches `kernels.reference.apply_rotary`: x is (B, T, H, D)
with D even, cos and sin are (1, T, 1, D // 2) and broadcast over batch and heads. The
last dim is split into halves (x1, x2) and each pair is rotated:

    y1 = x1 cos + x2 sin
    y2 = x2 cos - x1 sin

A rotation's Jacobian is the rotation itself, and its transpose is the rotation by the
opposite angle, so the backward is the same kernel with sin negated (INVERSE): it needs
only cos and sin, not x. The products are taken in fp32 and rounded once, where the
reference rounds each product in x's dtype; in bf16 the two differ by about an ulp.

Each program takes BLOCK_ROWS rows of (b, t, h) and the D // 2 pairs of each; a row's
cos/sin row is t, found from the row index, so cos and sin are never expanded in memory.
x may be any strided (B, T, H, D) view with unit stride along D (a slice of a fused qkv
projection, say): the row's address is built from the three leading strides.

cos and sin get no gradient: they are fixed tables (buffers), and asking for one is an
error rather than a silent zero.
"""
import torch
import triton
import triton.language as tl

from kernels import launch


@triton.jit
def head_rows(n_rows, seq_len, n_heads, half, BLOCK_ROWS: tl.constexpr, BLOCK_HALF: tl.constexpr):
    """This program's block of flat rows, numbered in (B, T, H) order, and the columns of a
    half head: the rows (also as int64: addresses can pass 2**31 on large activations), the
    columns, the row and element masks, and each row's (b, t, h)."""
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_HALF)
    row_ok = rows < n_rows
    mask = row_ok[:, None] & (cols < half)[None, :]
    rows64 = rows.to(tl.int64)
    b, t, h = rows64 // (n_heads * seq_len), (rows64 // n_heads) % seq_len, rows64 % n_heads
    return rows, rows64, cols, row_ok, mask, b, t, h


@triton.jit
def _rotary(X, COS, SIN, Y, n_rows, seq_len, n_heads, half,
            stride_xb, stride_xt, stride_xh, stride_ct, stride_st,
            INVERSE: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_HALF: tl.constexpr):
    _, rows64, cols, _, mask, b, t, h = head_rows(n_rows, seq_len, n_heads, half, BLOCK_ROWS, BLOCK_HALF)
    x_row = b * stride_xb + t * stride_xt + h * stride_xh
    x1_ptr = X + x_row[:, None] + cols[None, :]
    x1 = tl.load(x1_ptr, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x1_ptr + half, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(COS + t[:, None] * stride_ct + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    s = tl.load(SIN + t[:, None] * stride_st + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    if INVERSE:
        s = -s
    y1_ptr = Y + rows64[:, None] * (2 * half) + cols[None, :]  # Y is contiguous
    tl.store(y1_ptr, (x1 * c + x2 * s).to(Y.dtype.element_ty), mask=mask)
    tl.store(y1_ptr + half, (x2 * c - x1 * s).to(Y.dtype.element_ty), mask=mask)


def table(t: torch.Tensor, seq_len: int, half: int) -> torch.Tensor:
    """cos or sin as (1, T, 1, D // 2) with unit stride along D // 2 (a broadcast T keeps stride 0)."""
    t = t.expand(1, seq_len, 1, half)
    return t if t.stride(-1) == 1 else t.contiguous()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """x rotated by the angles of (cos, sin), or by their opposite; a new contiguous tensor."""
    batch, seq_len, n_heads, dim = x.shape
    half = dim // 2
    if x.stride(-1) != 1:
        x = x.contiguous()
    cos, sin = table(cos, seq_len, half), table(sin, seq_len, half)
    y = torch.empty((batch, seq_len, n_heads, dim), dtype=x.dtype, device=x.device)
    n_rows = batch * seq_len * n_heads
    if n_rows and half:
        block_h = launch.block_cols(half, "apply_rotary")
        block_r = launch.block_rows(2 * block_h, n_rows)  # a row's tile holds both halves
        _rotary[(triton.cdiv(n_rows, block_r),)](
            x, cos, sin, y, n_rows, seq_len, n_heads, half,
            x.stride(0), x.stride(1), x.stride(2), cos.stride(1), sin.stride(1),
            INVERSE=inverse, BLOCK_ROWS=block_r, BLOCK_HALF=block_h,
            num_warps=launch.num_warps(block_r * block_h * 2))
    return y


class RotaryFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return rotate(x, cos, sin)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        cos, sin = ctx.saved_tensors
        return rotate(dy, cos, sin, inverse=True), None, None


def check_args(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, name: str) -> None:
    launch.check_device(x, name)
    if x.dim() != 4 or x.shape[-1] % 2:
        raise ValueError(f"{name}: x must be (B, T, H, D) with D even, got {tuple(x.shape)}")
    if torch.is_grad_enabled() and (cos.requires_grad or sin.requires_grad):
        raise NotImplementedError(f"{name}: cos and sin are fixed tables here; no gradient flows to them")


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (see kernels.reference.apply_rotary), with a Triton backward."""
    check_args(x, cos, sin, "apply_rotary")
    return RotaryFunction.apply(x, cos, sin)
