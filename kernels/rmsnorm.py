"""RMSNorm over the last dim in Triton, forward and backward, optionally with a weight.

`rms_norm(x, eps=1e-6, weight=None)` matches `kernels.reference.rms_norm`: the statistics
and the scaling in fp32 whatever x's dtype, one cast back to x's dtype at the end.

x of any leading shape is seen as rows x C (C need not be a power of two: the tile is
padded to one and masked). The forward stores each row's 1/rms in fp32 so the backward
need not recompute it. With y = n * w and n = x * rstd, the backward is

    g  = dy * w
    dx = rstd * (g - n * mean(g * n))        (per row)
    dw = sum over rows of dy * n

The weight's gradient is a sum over every row; rather than atomics (order-dependent, so
not reproducible), the backward is persistent: each program walks a strided set of row
blocks, accumulates its share of dw in registers and writes one fp32 partial row; a torch
sum over those few partials finishes it.
"""
import torch
import triton
import triton.language as tl

from kernels import launch


@triton.jit
def _rms_norm_fwd(X, W, Y, RSTD, n_rows, n_cols, stride_x, stride_y, eps,
                  HAS_WEIGHT: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_COLS)
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    mask = row_ok[:, None] & col_ok[None, :]
    rows64 = rows.to(tl.int64)  # rows * stride can pass 2**31 on large activations
    x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    # Padded columns load 0, so they add nothing to the sum; the mean divides by the true C.
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)
    y = x * rstd[:, None]
    if HAS_WEIGHT:
        w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
        y = y * w[None, :]
    tl.store(Y + rows64[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + rows, rstd, mask=row_ok)


@triton.jit
def _rms_norm_bwd(DY, X, W, RSTD, DX, DW_PARTIAL, n_rows, n_cols, stride_dy, stride_x, stride_dx,
                  HAS_WEIGHT: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_COLS)
    col_ok = cols < n_cols
    if HAS_WEIGHT:
        w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_COLS,), dtype=tl.float32)
    # Persistent: program p takes row blocks p, p + P, p + 2P, ...
    for start in range(pid * BLOCK_ROWS, n_rows, tl.num_programs(0) * BLOCK_ROWS):
        rows = start + tl.arange(0, BLOCK_ROWS)
        row_ok = rows < n_rows
        mask = row_ok[:, None] & col_ok[None, :]
        rows64 = rows.to(tl.int64)
        x = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows64[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        # Padded rows load rstd = 0 and x = 0: n = 0, so they add nothing to dw.
        rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0)
        n = x * rstd[:, None]
        if HAS_WEIGHT:
            g = dy * w[None, :]
            dw += tl.sum(dy * n, axis=0)
        else:
            g = dy
        mean_gn = tl.sum(g * n, axis=1) / n_cols
        dx = (g - n * mean_gn[:, None]) * rstd[:, None]
        tl.store(DX + rows64[:, None] * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
    if HAS_WEIGHT:
        tl.store(DW_PARTIAL + pid * n_cols + cols, dw, mask=col_ok)


def _rows(t: torch.Tensor, n_cols: int) -> torch.Tensor:
    """t as a 2-D (rows, C) view with unit column stride; a copy only when no view exists."""
    if t.stride(-1) != 1:
        t = t.contiguous()
    return t.reshape(-1, n_cols)  # a view whenever the leading dims allow one


def _settings(n_rows: int, n_cols: int):
    cols = launch.block_cols(n_cols, "rms_norm")
    rows = launch.block_rows(cols, n_rows)
    return rows, cols, launch.num_warps(rows * cols)


def rms_norm_forward(x: torch.Tensor, eps: float, weight: torch.Tensor | None):
    """(y in x's shape and dtype, the 2-D view of x, rstd per row in fp32)."""
    n_cols = x.shape[-1]
    x2 = _rows(x, n_cols)
    n_rows = x2.shape[0]
    y = torch.empty((n_rows, n_cols), dtype=x.dtype, device=x.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    if n_rows:
        block_r, block_c, warps = _settings(n_rows, n_cols)
        w = weight if weight is not None else x2  # a placeholder pointer; HAS_WEIGHT=False never reads it
        _rms_norm_fwd[(triton.cdiv(n_rows, block_r),)](
            x2, w, y, rstd, n_rows, n_cols, x2.stride(0), y.stride(0), eps,
            HAS_WEIGHT=weight is not None, BLOCK_ROWS=block_r, BLOCK_COLS=block_c, num_warps=warps)
    return y.view(x.shape), x2, rstd


def rms_norm_backward(dy: torch.Tensor, x2: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor | None):
    """(dx in x2's rows x C layout, dw in weight's dtype or None)."""
    n_rows, n_cols = x2.shape
    dy2 = _rows(dy, n_cols)
    dx = torch.empty((n_rows, n_cols), dtype=x2.dtype, device=x2.device)
    if not n_rows:
        return dx, (torch.zeros_like(weight) if weight is not None else None)
    block_r, block_c, warps = _settings(n_rows, n_cols)
    programs = launch.persistent_programs(x2, triton.cdiv(n_rows, block_r))
    has_w = weight is not None
    partial = torch.empty((programs, n_cols) if has_w else (1,), dtype=torch.float32, device=x2.device)
    _rms_norm_bwd[(programs,)](
        dy2, x2, weight if has_w else x2, rstd, dx, partial, n_rows, n_cols,
        dy2.stride(0), x2.stride(0), dx.stride(0),
        HAS_WEIGHT=has_w, BLOCK_ROWS=block_r, BLOCK_COLS=block_c, num_warps=warps)
    dw = partial.sum(0).to(weight.dtype) if has_w else None
    return dx, dw


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        y, x2, rstd = rms_norm_forward(x, eps, weight)
        ctx.save_for_backward(x2, rstd, weight)
        ctx.x_shape = x.shape
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x2, rstd, weight = ctx.saved_tensors
        dx, dw = rms_norm_backward(dy, x2, rstd, weight)
        return dx.view(ctx.x_shape), (dw if ctx.needs_input_grad[1] else None), None


def rms_norm(x: torch.Tensor, eps: float = 1e-6, weight: torch.Tensor | None = None) -> torch.Tensor:
    """RMSNorm over the last dim (see kernels.reference.rms_norm), with a Triton backward."""
    launch.check_device(x, "rms_norm")
    if weight is not None:
        if weight.shape != (x.shape[-1],):
            raise ValueError(f"rms_norm: weight of shape {tuple(weight.shape)} for rows of {x.shape[-1]}")
        weight = weight.contiguous()  # the kernels read it with unit stride; a no-op when it is
    return RMSNormFunction.apply(x, weight, float(eps))
