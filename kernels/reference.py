"""Pure-torch reference kernels: the definition of correct, and the fallback."""
import torch


def rms_norm(x: torch.Tensor, eps: float = 1e-6, weight: torch.Tensor | None = None) -> torch.Tensor:
    """RMSNorm over the last dim; computed in fp32, returned in x's dtype.

    Without a weight it is parameterless (what train.py uses); with one (shape (C,)) the
    normed fp32 values are scaled by it, still in fp32, before the one cast to x's dtype.
    """
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()
    return y.to(x.dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding. x: (B, T, H, D); cos, sin: (1, T, 1, D // 2).

    Rotates the pair (x1, x2) formed by the two halves of the last dim:
    (x1 cos + x2 sin, -x1 sin + x2 cos).
    """
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1).to(x.dtype)
