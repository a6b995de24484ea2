"""evaluate_bpb / score_bpb against independent computations with known distributions."""
import math

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def prep(cache_dir):
    from trainer import prepare

    return prepare


def _val_targets(prepare, batch):
    tok = prepare.Tokenizer.from_directory()
    steps = max(1, prepare.EVAL_TOKENS // (batch * prepare.MAX_SEQ_LEN))
    loader = prepare.make_dataloader(tok, batch, prepare.MAX_SEQ_LEN, "val", "cpu")
    return [(x, y) for _, (x, y, _) in zip(range(steps), loader)], tok


def _true_bytes(tok) -> np.ndarray:
    """Byte length per id straight from the merge table (independent of token_bytes.npy)."""
    enc = tok.enc
    specials = set(enc._special_tokens.values())
    return np.array([0 if i in specials else len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)])


class Uniform(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, idx):
        return torch.zeros(*idx.shape, self.vocab)


class FixedBigram(torch.nn.Module):
    """logits[t] = W[idx[t]]: a known distribution per context token."""

    def __init__(self, vocab, seed=0):
        super().__init__()
        self.W = torch.nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)) * 3)

    def forward(self, idx):
        return self.W[idx]


def test_uniform_model_scores_log2_vocab_per_token(prep):
    batches, tok = _val_targets(prep, 8)
    nbytes = _true_bytes(tok)
    ys = np.concatenate([y.numpy().ravel() for _, y in batches])
    scored = (nbytes[ys] > 0).sum()
    expected = math.log2(prep.VOCAB_SIZE) * scored / nbytes[ys].sum()
    got = prep.score_bpb(Uniform(prep.VOCAB_SIZE), 8, device="cpu")
    assert got == pytest.approx(expected, rel=1e-6)  # per-token loss is fp32
    # It is the "uniform guess" ceiling any trained model must beat (~12 / 3.2 bytes per token).
    assert 3.0 < got < 4.5


def test_fixed_bigram_matches_numpy_float64(prep):
    model = FixedBigram(prep.VOCAB_SIZE)
    batches, tok = _val_targets(prep, 8)
    nbytes = _true_bytes(tok)
    W = model.W.detach().double().numpy()
    logz = np.log(np.exp(W - W.max(1, keepdims=True)).sum(1)) + W.max(1)
    nats = total = 0.0
    for x, y in batches:
        x, y = x.numpy().ravel(), y.numpy().ravel()
        b = nbytes[y]
        nats += ((logz[x] - W[x, y]) * (b > 0)).sum()
        total += b.sum()
    expected = nats / (math.log(2) * total)
    got = prep.score_bpb(model, 8, device="cpu")
    assert got == pytest.approx(expected, rel=1e-5)


def test_special_token_targets_are_excluded(prep):
    """A model that is infinitely wrong about BOS targets only must still score finite."""
    tok = prep.Tokenizer.from_directory()
    bos = tok.get_bos_token_id()

    class HatesBos(Uniform):
        def forward(self, idx):
            logits = super().forward(idx)
            logits[..., bos] = -1e9
            return logits

    assert prep.score_bpb(HatesBos(prep.VOCAB_SIZE), 8, device="cpu") == pytest.approx(
        prep.score_bpb(Uniform(prep.VOCAB_SIZE), 8, device="cpu"), rel=1e-3)


def test_evaluate_bpb_by_hand_scores_and_restores_mode(prep, monkeypatch):
    monkeypatch.delenv(prep.ENV_HANDOVER, raising=False)
    model = FixedBigram(prep.VOCAB_SIZE).train()
    tok = prep.Tokenizer.from_directory()
    assert prep.evaluate_bpb(model, tok, 8) == pytest.approx(prep.score_bpb(model, 8, device="cpu"))
    assert model.training


def test_evaluate_bpb_under_harness_hands_the_model_over(prep, monkeypatch, tmp_path):
    out = tmp_path / "model.pt"
    monkeypatch.setenv(prep.ENV_HANDOVER, str(out))
    model = FixedBigram(prep.VOCAB_SIZE)
    assert math.isnan(prep.evaluate_bpb(model, None, 8))
    again = torch.load(out, weights_only=False)
    assert torch.equal(again.W, model.W)
