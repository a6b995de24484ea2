"""Pure-torch reference kernels: the definition of correct, and the fallback."""
import torch


def rms_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Parameterless RMSNorm over the last dim; computed in fp32, returned in x's dtype."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding. x: (B, T, H, D); cos, sin: (1, T, 1, D // 2).

    Rotates the pair (x1, x2) formed by the two halves of the last dim:
    (x1 cos + x2 sin, -x1 sin + x2 cos).
    """
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1).to(x.dtype)
