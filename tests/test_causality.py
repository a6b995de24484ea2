"""The evaluator's causality probe: strict for deterministic models, noise-aware otherwise."""
import contextlib

import pytest
import torch

from harness.evaluate import Refused, causality

V = 64


class Model(torch.nn.Module):
    def __init__(self, peek: float = 0.0, noise: float = 0.0):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.table = torch.randn(V, V, generator=g)
        self.peek, self.noise = peek, noise

    def forward(self, idx):
        logits = self.table[idx].cumsum(1) / torch.arange(1, idx.shape[1] + 1)[None, :, None]  # causal mixing
        if self.peek:
            logits = logits + self.peek * self.table[idx.roll(-1, dims=1)]  # reads the next token
        if self.noise:
            logits = logits + self.noise * torch.randn_like(logits)  # nondeterministic kernels
        return logits


def probe(model):
    x = torch.randint(0, V, (4, 32), generator=torch.Generator().manual_seed(1))
    causality(model, x, model(x), contextlib.nullcontext)


def test_causal_model_passes():
    probe(Model())


def test_even_a_weak_peek_is_refused():
    with pytest.raises(Refused, match="not causal"):
        probe(Model(peek=1e-4))


def test_run_to_run_noise_is_tolerated_but_not_a_peek_above_it():
    probe(Model(noise=1e-5))
    with pytest.raises(Refused):
        probe(Model(peek=1.0, noise=1e-5))
