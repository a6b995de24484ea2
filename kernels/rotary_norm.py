"""Rotary embedding then parameterless RMSNorm over each head, fused, in Triton.

`rotary_rms_norm(x, cos, sin, eps)` = `rms_norm(apply_rotary(x, cos, sin), eps)`, the
QK-norm that follows rotary in train.py (`q = norm(apply_rotary(q, cos, sin))`): one read
of x and one write of y instead of two of each, and no rotated intermediate kept for the
backward. Shapes as in kernels/rotary.py: x (B, T, H, D), cos and sin (1, T, 1, D // 2).

The rotated values are rounded to x's dtype before the norm, as the unfused pair stores
them, so the fused forward agrees with the two kernels run one after the other.

Backward, per row, with r the rotated row, n = r * rstd, and R the rotation:

    dr = rstd * (dy - n * mean(dy * n))       (RMSNorm's backward)
    dx = R^T dr                                (rotary's backward: the opposite angle)

r is recomputed from x (cheaper than storing it); rstd is stored in fp32 by the forward.
"""
import torch
import triton
import triton.language as tl

from kernels import launch
from kernels.rotary import check_args, head_rows, table


@triton.jit
def _rotated(X, COS, SIN, x_row, t, cols, mask, half, stride_ct, stride_st):
    """The row's two rotated halves in fp32 (rounded through x's dtype), and cos, sin."""
    x1_ptr = X + x_row[:, None] + cols[None, :]
    x1 = tl.load(x1_ptr, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x1_ptr + half, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(COS + t[:, None] * stride_ct + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    s = tl.load(SIN + t[:, None] * stride_st + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    r1 = (x1 * c + x2 * s).to(X.dtype.element_ty).to(tl.float32)
    r2 = (x2 * c - x1 * s).to(X.dtype.element_ty).to(tl.float32)
    return r1, r2, c, s


@triton.jit
def _rotary_norm_fwd(X, COS, SIN, Y, RSTD, n_rows, seq_len, n_heads, half, eps,
                     stride_xb, stride_xt, stride_xh, stride_ct, stride_st,
                     BLOCK_ROWS: tl.constexpr, BLOCK_HALF: tl.constexpr):
    rows, rows64, cols, row_ok, mask, b, t, h = head_rows(n_rows, seq_len, n_heads, half, BLOCK_ROWS, BLOCK_HALF)
    x_row = b * stride_xb + t * stride_xt + h * stride_xh
    r1, r2, c, s = _rotated(X, COS, SIN, x_row, t, cols, mask, half, stride_ct, stride_st)
    # Padded columns rotate zeros to zeros: they add nothing; the mean divides by the true D.
    rstd = tl.rsqrt((tl.sum(r1 * r1, axis=1) + tl.sum(r2 * r2, axis=1)) / (2 * half) + eps)
    y1_ptr = Y + rows64[:, None] * (2 * half) + cols[None, :]  # Y is contiguous
    tl.store(y1_ptr, (r1 * rstd[:, None]).to(Y.dtype.element_ty), mask=mask)
    tl.store(y1_ptr + half, (r2 * rstd[:, None]).to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + rows, rstd, mask=row_ok)


@triton.jit
def _rotary_norm_bwd(DY, X, COS, SIN, RSTD, DX, n_rows, seq_len, n_heads, half,
                     stride_xb, stride_xt, stride_xh, stride_db, stride_dt, stride_dh,
                     stride_ct, stride_st, BLOCK_ROWS: tl.constexpr, BLOCK_HALF: tl.constexpr):
    rows, rows64, cols, row_ok, mask, b, t, h = head_rows(n_rows, seq_len, n_heads, half, BLOCK_ROWS, BLOCK_HALF)
    x_row = b * stride_xb + t * stride_xt + h * stride_xh
    r1, r2, c, s = _rotated(X, COS, SIN, x_row, t, cols, mask, half, stride_ct, stride_st)
    rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0)[:, None]
    dy1_ptr = DY + (b * stride_db + t * stride_dt + h * stride_dh)[:, None] + cols[None, :]
    dy1 = tl.load(dy1_ptr, mask=mask, other=0.0).to(tl.float32)
    dy2 = tl.load(dy1_ptr + half, mask=mask, other=0.0).to(tl.float32)
    n1, n2 = r1 * rstd, r2 * rstd
    mean_gn = ((tl.sum(dy1 * n1, axis=1) + tl.sum(dy2 * n2, axis=1)) / (2 * half))[:, None]
    dr1 = (dy1 - n1 * mean_gn) * rstd
    dr2 = (dy2 - n2 * mean_gn) * rstd
    dx1_ptr = DX + rows64[:, None] * (2 * half) + cols[None, :]  # DX is contiguous
    tl.store(dx1_ptr, (dr1 * c - dr2 * s).to(DX.dtype.element_ty), mask=mask)
    tl.store(dx1_ptr + half, (dr2 * c + dr1 * s).to(DX.dtype.element_ty), mask=mask)


def _unit_stride(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _grid(n_rows: int, half: int):
    block_h = launch.block_cols(half, "rotary_rms_norm")
    block_r = launch.block_rows(2 * block_h, n_rows)  # a row's tile holds both halves
    return (triton.cdiv(n_rows, block_r),), block_r, block_h, launch.num_warps(block_r * block_h * 2)


class RotaryNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin, eps):
        x = _unit_stride(x)
        batch, seq_len, n_heads, dim = x.shape
        half = dim // 2
        cos, sin = table(cos, seq_len, half), table(sin, seq_len, half)
        n_rows = batch * seq_len * n_heads
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        if n_rows and half:
            grid, block_r, block_h, warps = _grid(n_rows, half)
            _rotary_norm_fwd[grid](x, cos, sin, y, rstd, n_rows, seq_len, n_heads, half, eps,
                                   x.stride(0), x.stride(1), x.stride(2), cos.stride(1), sin.stride(1),
                                   BLOCK_ROWS=block_r, BLOCK_HALF=block_h, num_warps=warps)
        ctx.save_for_backward(x, cos, sin, rstd)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, cos, sin, rstd = ctx.saved_tensors
        dy = _unit_stride(dy)
        batch, seq_len, n_heads, dim = x.shape
        half = dim // 2
        n_rows = batch * seq_len * n_heads
        dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        if n_rows and half:
            grid, block_r, block_h, warps = _grid(n_rows, half)
            _rotary_norm_bwd[grid](dy, x, cos, sin, rstd, dx, n_rows, seq_len, n_heads, half,
                                   x.stride(0), x.stride(1), x.stride(2), dy.stride(0), dy.stride(1),
                                   dy.stride(2), cos.stride(1), sin.stride(1),
                                   BLOCK_ROWS=block_r, BLOCK_HALF=block_h, num_warps=warps)
        return dx, None, None, None


def rotary_rms_norm(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """rms_norm(apply_rotary(x, cos, sin), eps), fused, with a Triton backward."""
    check_args(x, cos, sin, "rotary_rms_norm")
    return RotaryNormFunction.apply(x, cos, sin, float(eps))
