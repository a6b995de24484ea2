"""Pure-torch reference kernels: the definition of correct, and the fallback."""
import torch
import torch.nn.functional as F


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


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         softcap: float | None = None, ignore_index: int = -1) -> torch.Tensor:
    """Mean cross-entropy of softcapped lm_head logits; the fp32 scalar train.py's GPT.forward returns.

    hidden (N, C) and weight (V, C), the nn.Linear weight, in hidden's dtype or fp32; targets
    (N,) int64. The matmul runs in hidden's dtype (under autocast, F.linear runs in the autocast
    dtype, as nn.Linear does), the logits go to fp32, then softcap * tanh(logits / softcap)
    (softcap None or 0: no cap), then the mean over targets != ignore_index. With every target
    ignored the mean is 0 / 0: nan, as F.cross_entropy gives.
    """
    logits = F.linear(hidden, weight.to(hidden.dtype)).float()
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index)
