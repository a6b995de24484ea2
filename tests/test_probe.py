"""The causality probe's inputs and comparison, on models with known behaviour (no processes)."""
import numpy as np
import pytest
import torch

from harness import probe

V, T, B, CHUNKS = 64, 32, 4, 6


class Model(torch.nn.Module):
    """Causal mixing of a random table; optionally reads ahead or across rows."""

    def __init__(self, peek: int = 0, peek_every: int = 1, cross_row: bool = False):
        super().__init__()
        self.table = torch.randn(V, V, generator=torch.Generator().manual_seed(0))
        self.peek, self.peek_every, self.cross_row = peek, peek_every, cross_row

    def forward(self, idx):
        logits = self.table[idx].cumsum(1) / torch.arange(1, idx.shape[1] + 1)[None, :, None]
        if self.peek:
            ahead = idx.roll(-self.peek, dims=1)  # the token `peek` positions later
            mask = (torch.arange(idx.shape[1]) % self.peek_every == 0)[None, :, None]
            logits = logits + 5.0 * mask * torch.nn.functional.one_hot(ahead, V)
        if self.cross_row:
            logits = logits + 0.5 * self.table[idx.roll(1, dims=0)]  # the neighbouring row's token
        return logits


def lp(model, ids, targets):
    logits = model(torch.from_numpy(ids).long())
    return torch.log_softmax(logits, -1).gather(-1, torch.from_numpy(targets).long()[..., None])[..., 0].numpy()


def run_probe(model, n_batches=6, seed=1):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, V, size=(B * CHUNKS, T + 1))
    x, y = rows[:, :-1].astype(np.int32), rows[:, 1:]
    scored = np.concatenate([lp(model, x[i:i + B], y[i:i + B]) for i in range(0, len(x), B)])
    batches = probe.make(x, B, n_batches, np.arange(V), rng)
    return max((probe.compare(scored, lp(model, b.ids, y[b.rows]), b) for b in batches), key=lambda w: w.diff)


def test_probe_rows_keep_their_prefix_and_index_and_mix_batches():
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, size=(B * CHUNKS, T)).astype(np.int32)
    for b in probe.make(x, B, 5, np.arange(V), rng):
        assert b.ids.shape == (B, T) and b.ids.dtype == np.int32
        assert list(b.rows % B) == list(range(B))  # each row at the index it was scored at
        assert len(set(b.rows // B)) == B  # rows from different scored batches
        for i, (r, c) in enumerate(zip(b.rows, b.cuts)):
            assert 1 <= c <= T  # T: kept whole
            assert (b.ids[i, :c] == x[r, :c]).all()


def test_a_causal_model_passes_bitwise():
    assert run_probe(Model()).diff == 0.0


def test_reading_the_next_token_is_caught():
    w = run_probe(Model(peek=1))
    assert w.diff > 1.0 and w.pos == w.cut - 1  # the position right before the replaced suffix


def test_reading_far_ahead_is_caught():
    assert run_probe(Model(peek=5)).diff > 1.0


def test_reading_another_row_of_the_batch_is_caught():
    assert run_probe(Model(cross_row=True)).diff > 0.1


def test_compare_flags_nan():
    b = probe.ProbeBatch(np.zeros((1, 4), np.int32), np.array([0]), np.array([3]))
    w = probe.compare(np.zeros((1, 4), np.float32), np.array([[0.0, np.nan, 0.0, 0.0]], np.float32), b)
    assert np.isnan(w.diff) and w.pos == 1


def test_rows_that_do_not_form_batches_are_an_error():
    with pytest.raises(ValueError):
        probe.make(np.zeros((5, T), np.int32), B, 1, np.arange(V), np.random.default_rng(0))


def test_calibration_measures_the_probes_own_noise(cache_dir):
    """Calibration runs the same probe code on the frozen baseline: zero for a deterministic
    model, the model's own jitter otherwise (the tolerance is 10x that)."""
    import contextlib
    import types

    from harness import workload
    from trainer import prepare

    bk = types.SimpleNamespace(device=lambda: "cpu", autocast=contextlib.nullcontext)
    gen = torch.Generator().manual_seed(0)

    def loader():
        while True:
            rows = torch.randint(0, prepare.VOCAB_SIZE - 4, (4, 33), generator=gen)
            yield rows[:, :-1], rows[:, 1:], 1

    class Bigram(torch.nn.Module):
        def __init__(self, jitter=0.0):
            super().__init__()
            self.table, self.jitter = torch.randn(prepare.VOCAB_SIZE, prepare.VOCAB_SIZE, generator=gen), jitter

        def forward(self, idx):
            return self.table[idx] + self.jitter * torch.randn(*idx.shape, prepare.VOCAB_SIZE)

    assert workload.probe_noise(bk, Bigram(), loader()) == 0.0
    assert 1e-4 < workload.probe_noise(bk, Bigram(jitter=1e-3), loader()) < 1.0
