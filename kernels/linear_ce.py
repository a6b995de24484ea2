"""lm_head matmul + softcap + cross-entropy, fused so the (N, V) logits never exist whole.

Same contract as `reference.linear_cross_entropy`: the fp32 mean loss of
CE(softcap * tanh(hidden @ weight.T / softcap), targets) over targets != ignore_index.

Eager torch materializes the logits several times over (the matmul output, its fp32 copy,
logits / softcap, tanh, the capped logits, log_softmax's saved output): at N = 262144 tokens
and V = 8192 that is 8 GiB per fp32 copy. Here the tokens go through in chunks of rows:

  1. logits_chunk = hidden_chunk @ weight.T  (torch matmul: cuBLAS / rocBLAS, fp32 accumulate)
  2. one Triton kernel per chunk: per row, the softcapped logsumexp and the row's loss, then
     the gradient w.r.t. the pre-softcap logits, written over the logits in place:
         d loss / dz = (softmax(s) - onehot(target)) * (1 - tanh(z / softcap)^2) / n_valid
  3. grad_hidden_chunk = dlogits @ weight;  grad_weight += dlogits.T @ hidden_chunk

so the gradients are finished in forward, and backward only multiplies them by the incoming
gradient. The chunk buffer is bounded by CHUNK_BYTES (256 MiB: 8192 rows of a 8192-wide vocab
in fp32, 16384 in bf16) and reused for every chunk.

The chunk buffer is in the matmul's own output dtype, not always fp32. For fp32 inputs it is
fp32. For bf16 (fp16) inputs the eager path rounds the logits to bf16 before `.float()` and
rounds the logits' gradient to bf16 before its matmuls, so an fp32 buffer would hold the very
same values at twice the memory and traffic; the kernel itself works in fp32 throughout.
(Triton's CPU interpreter truncates fp32 -> bf16 where a GPU rounds to nearest: bf16 results
under the interpreter are within one bf16 ulp of a GPU's, which the tests allow for.)

grad_weight accumulates over chunks in fp32 and is returned in the weight's dtype, so an fp32
master weight gets an fp32 gradient that never went through bf16 (eager rounds it to bf16
once; ours is the more accurate of the two). Targets must be in [0, V) or ignore_index, as
for F.cross_entropy (not checked here: checking would cost a device sync).
"""
import torch
import triton
import triton.language as tl

CHUNK_BYTES = 256 << 20  # bound on the per-chunk logits buffer


def launch_settings(n_cols: int, device: torch.device) -> dict:
    """Block shape and warps for the row kernel; replace this function (or pass `settings=`)
    to tune a backend. One config, no autotune: the interpreter and ROCm get the same code path.

    GPU: one row per program, up to 4096 columns a step (two steps at V = 8192): rows are
    long, and the grid of chunk rows (thousands) fills the machine. AMD CDNA runs 64-wide
    wavefronts, so 4 of them already make 256 lanes. Interpreter (CPU tensors): many rows per
    program and wide blocks, since it pays per interpreted operation, not per element.
    """
    width = triton.next_power_of_2(max(n_cols, 1))
    if device.type != "cuda":
        return dict(BLOCK_ROWS=16, BLOCK_V=min(width, 1024), num_warps=1)
    block_v = min(width, 4096)
    if torch.version.hip:
        return dict(BLOCK_ROWS=1, BLOCK_V=block_v, num_warps=4 if block_v >= 1024 else 2)
    return dict(BLOCK_ROWS=1, BLOCK_V=block_v, num_warps=8 if block_v >= 2048 else 4)


def chunk_rows_for(n_rows: int, n_cols: int, itemsize: int, budget_bytes: int = CHUNK_BYTES) -> int:
    """Rows per chunk so that a chunk of logits (rows x n_cols x itemsize) fits budget_bytes."""
    return max(1, min(n_rows, budget_bytes // max(n_cols * itemsize, 1)))


@triton.jit
def _tanh(x):
    # exp of a non-positive number never overflows; the sign goes back on afterwards.
    # (tl has no tanh; libdevice's is not portable to the interpreter.)
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _loss_and_grad_kernel(z_ptr, tgt_ptr, loss_ptr, inv_n_ptr, n_rows, n_cols, stride_row,
                          softcap, ignore_index,
                          HAS_SOFTCAP: tl.constexpr, WRITE_GRAD: tl.constexpr,
                          BLOCK_ROWS: tl.constexpr, BLOCK_V: tl.constexpr):
    """BLOCK_ROWS rows per program. Pass 1: online max / sum of exp over the row in BLOCK_V
    steps, giving the logsumexp. Pass 2 (WRITE_GRAD): re-read the row and overwrite it with
    its gradient. Values are loaded in the buffer's dtype and computed in fp32."""
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    row_ok = rows < n_rows
    tgt = tl.load(tgt_ptr + rows, mask=row_ok, other=ignore_index)
    valid = row_ok & (tgt != ignore_index)
    row_ptr = z_ptr + rows.to(tl.int64)[:, None] * stride_row  # int64: chunk x V may pass 2**31
    cols0 = tl.arange(0, BLOCK_V)

    m = tl.full([BLOCK_ROWS], float("-inf"), tl.float32)
    d = tl.zeros([BLOCK_ROWS], tl.float32)
    for start in range(0, n_cols, BLOCK_V):
        cols = start + cols0
        col_ok = cols < n_cols
        z = tl.load(row_ptr + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
        if HAS_SOFTCAP:
            z = softcap * _tanh(z / softcap)
        # Padding columns must weigh nothing; padding rows stay finite and are never stored.
        s = tl.where(col_ok[None, :], z, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(s - m_new[:, None]), axis=1)
        m = m_new
    lse = m + tl.log(d)

    z_t = tl.load(z_ptr + rows.to(tl.int64) * stride_row + tgt, mask=valid, other=0.0).to(tl.float32)
    if HAS_SOFTCAP:
        z_t = softcap * _tanh(z_t / softcap)
    # An ignored row's loss is 0 even when its logits are nan, as in F.cross_entropy.
    tl.store(loss_ptr + rows, tl.where(valid, lse - z_t, 0.0), mask=row_ok)

    if WRITE_GRAD:
        # A multiply, not a select: an ignored row with nan logits gets a nan gradient, as in
        # eager (log_softmax's backward computes 0 - softmax * 0 there).
        scale = valid.to(tl.float32) * tl.load(inv_n_ptr)
        for start in range(0, n_cols, BLOCK_V):
            cols = start + cols0
            mask = row_ok[:, None] & (cols < n_cols)[None, :]
            z = tl.load(row_ptr + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            onehot = tl.where(cols[None, :] == tgt[:, None], 1.0, 0.0)
            if HAS_SOFTCAP:
                t = _tanh(z / softcap)
                g = (tl.exp(softcap * t - lse[:, None]) - onehot) * (1.0 - t * t)  # chain rule through the cap
            else:
                g = tl.exp(z - lse[:, None]) - onehot
            g = g * scale[:, None]
            tl.store(row_ptr + cols[None, :], g.to(z_ptr.dtype.element_ty), mask=mask)


def _loss_and_grad(buf, targets, loss_rows, inv_n, softcap, ignore_index, write_grad, settings):
    """Run the row kernel on one chunk: per-row losses into loss_rows; with write_grad, buf
    (rows, V) becomes d loss / d logits."""
    n_rows, n_cols = buf.shape
    if n_rows == 0:
        return
    s = dict(settings)
    num_warps = s.pop("num_warps", 4)
    grid = (triton.cdiv(n_rows, s["BLOCK_ROWS"]),)
    _loss_and_grad_kernel[grid](buf, targets, loss_rows, inv_n, n_rows, n_cols, buf.stride(0),
                                float(softcap or 1.0), ignore_index,
                                HAS_SOFTCAP=bool(softcap), WRITE_GRAD=write_grad,
                                num_warps=num_warps, **s)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, softcap, ignore_index, compute_dtype, chunk_rows, settings,
                need_hidden_grad, need_weight_grad):
        n, c = hidden.shape
        v = weight.shape[0]
        h = hidden.to(compute_dtype)
        w = weight.to(compute_dtype).contiguous()  # once, like autocast's cast of the weight
        n_valid = (targets != ignore_index).sum()
        # Device-side 1 / n_valid (no sync); clamped so an all-ignored batch gets zero
        # gradients rather than 0 * inf. The loss itself still divides by n_valid: 0 / 0 = nan.
        inv_n = 1.0 / n_valid.clamp(min=1).to(torch.float32).reshape(1)
        rows = chunk_rows or chunk_rows_for(n, v, w.element_size())
        settings = settings or launch_settings(v, hidden.device)
        buf = torch.empty(min(rows, max(n, 1)), v, dtype=compute_dtype, device=hidden.device)
        loss_rows = torch.empty(n, dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(h) if need_hidden_grad else None
        grad_w = torch.zeros(v, c, dtype=torch.float32, device=hidden.device) if need_weight_grad else None
        write_grad = need_hidden_grad or need_weight_grad
        for start in range(0, n, rows):
            end = min(start + rows, n)
            h_c, z = h[start:end], buf[: end - start]
            torch.mm(h_c, w.T, out=z)
            _loss_and_grad(z, targets[start:end], loss_rows[start:end], inv_n, softcap, ignore_index,
                           write_grad, settings)
            if grad_h is not None:
                torch.mm(z, w, out=grad_h[start:end])
            if grad_w is not None:
                if compute_dtype == torch.float32:
                    grad_w.addmm_(z.T, h_c)
                else:  # cuBLAS's bf16 output, summed over chunks in fp32
                    grad_w += torch.mm(z.T, h_c)
        ctx.grads = (grad_h, grad_w)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return loss_rows.sum() / n_valid

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.grads
        dtype_h, dtype_w = ctx.dtypes
        # grad_out may not be 1 (loss scaling, grad accumulation). A bf16 tensor times an fp32
        # scalar tensor is computed in fp32 and rounded once, with no fp32 copy of grad_h.
        dh = None if grad_h is None else (grad_h * grad_out).to(dtype_h)
        dw = None if grad_w is None else (grad_w * grad_out).to(dtype_w)
        return dh, dw, None, None, None, None, None, None, None, None


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The matmul's dtype: the autocast dtype where autocast is on (nn.Linear would run there),
    else hidden's own."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return hidden.dtype


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         softcap: float | None = None, ignore_index: int = -1, *,
                         chunk_rows: int | None = None, settings: dict | None = None) -> torch.Tensor:
    """Mean softcapped cross-entropy of hidden @ weight.T; see `reference.linear_cross_entropy`.

    hidden (..., C), weight (V, C), targets (...) int64. chunk_rows: tokens per chunk (default:
    CHUNK_BYTES of logits); settings: launch_settings()'s dict, to override the kernel's block
    shape. Gradients reach hidden and weight; none is computed for what does not need one.
    """
    c = hidden.shape[-1]
    h = hidden.reshape(-1, c).contiguous()
    t = targets.reshape(-1).contiguous()
    if t.numel() != h.shape[0]:
        raise ValueError(f"linear_cross_entropy: {h.shape[0]} rows of hidden but {t.numel()} targets")
    grad_on = torch.is_grad_enabled()
    need_h, need_w = grad_on and hidden.requires_grad, grad_on and weight.requires_grad
    dtype = _compute_dtype(hidden)
    # The chunks run in the one dtype chosen above, with autocast off, so every matmul is the
    # dtype the caller would have got from nn.Linear.
    with torch.autocast(hidden.device.type, enabled=False):
        return _LinearCrossEntropy.apply(h, weight, t, float(softcap or 0.0), int(ignore_index), dtype,
                                         chunk_rows, settings, need_h, need_w)
