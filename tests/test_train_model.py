"""trainer/train.py's model, optimizer and schedule, on a tiny CPU preset.

train.py imports `prepare`, `backends` and `kernels` from its run directory. Here `prepare`
and `kernels` are small stand-ins injected into sys.modules (restored afterwards); `backends`
is the real package when it imports, else a CPU fp32 stand-in with an SDPA attention.
"""
import contextlib
import importlib.util
import io
import math
import sys
import time
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
TRAIN_PY = ROOT / "trainer" / "train.py"
VOCAB, SEQ = 97, 32
PRESET = dict(depth=2, width=64, head_dim=32, device_batch_size=2, total_batch_size=2 * 32,
              window_pattern="SL")


def _stub_prepare(calls):
    class Tokenizer:
        @classmethod
        def from_directory(cls):
            return cls()

        def get_vocab_size(self):
            return VOCAB

        def get_bos_token_id(self):
            return 0

    def make_dataloader(tokenizer, B, T, split):
        calls.append("make_dataloader")
        g = torch.Generator().manual_seed(0)
        while True:
            x = torch.randint(0, VOCAB, (B, T + 1), generator=g)
            yield x[:, :-1], x[:, 1:], 1

    def evaluate_bpb(model, tokenizer, batch_size):
        calls.append("evaluate_bpb")
        return float("nan")

    ns = types.SimpleNamespace(
        __name__="prepare", MAX_SEQ_LEN=SEQ, VOCAB_SIZE=VOCAB, TIME_BUDGET=0.5, MODEL=dict(PRESET),
        Tokenizer=Tokenizer, make_dataloader=make_dataloader, evaluate_bpb=evaluate_bpb,
        get_token_bytes=lambda device: torch.ones(VOCAB, dtype=torch.int32, device=device))
    ns.budget_progress = lambda seconds, tokens, flops=0.0: seconds / ns.TIME_BUDGET  # wall mode
    ns.model_flops_per_token = lambda model: 6.0 * sum(p.numel() for p in model.parameters())
    return ns


def _stub_kernels():
    def rms_norm(x, eps=1e-6):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    def apply_rotary(x, cos, sin):
        d = x.shape[-1] // 2
        x1, x2 = x[..., :d], x[..., d:]
        return torch.cat((x1 * cos + x2 * sin, -x1 * sin + x2 * cos), dim=-1)

    def linear_cross_entropy(hidden, weight, targets, softcap, ignore_index=-1):
        logits = (hidden @ weight.t()).float()
        logits = softcap * torch.tanh(logits / softcap)
        return torch.nn.functional.cross_entropy(logits, targets, ignore_index=ignore_index)

    return types.SimpleNamespace(__name__="kernels", rms_norm=rms_norm, apply_rotary=apply_rotary,
                                 linear_cross_entropy=linear_cross_entropy)


def _stub_backends():
    def attention(q, k, v, window):
        T = q.size(-2)
        if window is None or window >= T:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        i = torch.arange(T, device=q.device)
        mask = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < window)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    bk = types.SimpleNamespace(
        NAME="cpu", device=lambda: torch.device("cpu"), compute_dtype=lambda: torch.float32,
        autocast=contextlib.nullcontext, grad_scaler=lambda: None, synchronize=lambda: None,
        max_memory_allocated=lambda: 0, peak_flops=lambda dtype: None,
        compile_available=lambda: False, device_name=lambda: "stand-in CPU")
    return types.SimpleNamespace(__name__="backends", current=lambda: bk, attention=attention)


def _real_backends():
    if not (ROOT / "backends" / "__init__.py").exists():
        return None
    try:
        sys.path.insert(0, str(ROOT))
        import backends
        backends.current()
        assert callable(backends.attention)
        return backends
    except Exception:
        return None
    finally:
        sys.path.remove(str(ROOT))


@pytest.fixture(scope="module")
def env():
    names = ("prepare", "kernels", "backends", "train")
    saved = {n: sys.modules.get(n) for n in names}
    calls = []
    sys.modules["prepare"] = _stub_prepare(calls)
    sys.modules["kernels"] = _stub_kernels()
    real = _real_backends()
    sys.modules["backends"] = real if real is not None else _stub_backends()
    out = io.StringIO()
    t0 = time.time()
    try:
        spec = importlib.util.spec_from_file_location("train", TRAIN_PY)
        train = importlib.util.module_from_spec(spec)
        sys.modules["train"] = train  # pickle finds the model class here
        with contextlib.redirect_stdout(out):
            spec.loader.exec_module(train)
        yield types.SimpleNamespace(train=train, calls=calls, import_output=out.getvalue(),
                                    import_seconds=time.time() - t0)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def _model(train, **overrides):
    torch.manual_seed(0)
    return train.GPT(train.GPTConfig(**overrides))


def _batch(seed=1, B=2, T=SEQ):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (B, T), generator=g), torch.randint(0, VOCAB, (B, T), generator=g)


def test_import_does_not_train(env):
    assert env.import_output == ""
    assert env.calls == []  # no data loader, no evaluation
    assert env.import_seconds < 5
    assert env.train.DEPTH == 2 and env.train.WIDTH == 64 and env.train.SOFTCAP == 15


def test_forward_shapes_dtype_and_softcap(env):
    model = _model(env.train)
    x, y = _batch()
    logits = model(x)
    assert logits.shape == (2, SEQ, VOCAB) and logits.dtype == torch.float32
    # push the logits towards saturation: the cap must still hold
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 10.0)
    assert model(x).abs().max().item() <= env.train.SOFTCAP + 1e-4
    loss = model(x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_windows_and_value_embeddings(env):
    train = env.train
    model = _model(train, n_layer=5, window_pattern="SSL")
    assert model.windows == [SEQ // 2, SEQ // 2, None, SEQ // 2, None]  # last layer always full
    assert sorted(model.value_embeds.keys()) == ["0", "2", "4"]  # alternating, last included
    counts = model.num_params()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert 0 < train.flops_per_token(model) < 1e9


@pytest.mark.parametrize("overrides", [{}, dict(n_layer=3, window_pattern="S", short_window=5)])
def test_causal(env, overrides):
    model = _model(env.train, **overrides)
    with torch.no_grad():  # make every path (gates, projections) non-trivial
        for p in model.parameters():
            if p.ndim == 2 and p.abs().max() < 1e-2:
                p.normal_(0, 0.2)
    x, _ = _batch()
    base = model(x)
    for t in (1, 7, SEQ - 1):
        x2 = x.clone()
        x2[:, t:] = (x2[:, t:] + 13) % VOCAB
        out = model(x2)
        assert torch.allclose(out[:, :t], base[:, :t], atol=1e-5), f"future leaks into position < {t}"
        assert not torch.allclose(out[:, t:], base[:, t:], atol=1e-5)


def test_sliding_window_limits_context(env):
    model = _model(env.train, n_layer=1, window_pattern="S", short_window=4)
    model.windows = [4]  # the last-layer-full rule would otherwise undo the window
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    x, _ = _batch()
    x2 = x.clone()
    x2[:, 0] = (x2[:, 0] + 1) % VOCAB
    d = (model(x2) - model(x)).abs().amax(dim=(0, 2))
    # one layer: position t sees t-3..t, plus its own token via the value embedding
    assert d[:4].min() > 1e-4 and d[5:].max() < 1e-5  # position 4: off-by-one conventions differ


def test_initial_loss_is_uniform(env):
    model = _model(env.train)
    x, y = _batch()
    assert abs(model(x, y).item() - math.log(VOCAB)) < 0.5


def test_optimizers_overfit_one_batch(env):
    train = env.train
    model = _model(train)
    opts = train.build_optimizers(model)
    n_opt = sum(len(g["params"]) for o in opts for g in o.param_groups)
    assert n_opt == len(list(model.parameters()))
    x, y = _batch()
    first = None
    for step in range(30):
        loss = model(x, y)
        first = first if first is not None else loss.item()
        loss.backward()
        for grp in opts[1].param_groups:
            grp["momentum"] = train.muon_momentum(step)
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)
    final = model(x, y).item()
    assert final < 0.5 * first, (first, final)


@pytest.mark.parametrize("shape", [(64, 128), (256, 96)])
def test_newton_schulz_orthogonalizes(env, shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    out = env.train.newton_schulz(g)
    assert out.shape == g.shape
    s = torch.linalg.svdvals(out)
    assert (s - 1).abs().max() < 0.3, (s.min().item(), s.max().item())


def test_lr_schedule(env):
    lrm = env.train.lr_multiplier
    assert lrm(0.0, warmup=0.0, warmdown=0.5, final=0.0) == 1.0
    assert lrm(0.5, warmup=0.0, warmdown=0.5, final=0.0) == 1.0
    assert lrm(0.75, warmup=0.0, warmdown=0.5, final=0.0) == pytest.approx(0.5)
    assert lrm(1.0, warmup=0.0, warmdown=0.5, final=0.0) == 0.0
    assert lrm(0.0, warmup=0.1, warmdown=0.3, final=0.1) == 0.0
    assert lrm(0.05, warmup=0.1, warmdown=0.3, final=0.1) == pytest.approx(0.5)
    assert lrm(0.5, warmup=0.1, warmdown=0.3, final=0.1) == 1.0
    assert lrm(1.0, warmup=0.1, warmdown=0.3, final=0.1) == pytest.approx(0.1)
    assert lrm(1.7) == lrm(1.0)  # overrun clamps
    m = env.train.muon_momentum
    assert m(0) == env.train.MUON_MOMENTUM_START and m(10**6) == env.train.MUON_MOMENTUM


def test_pickled_model_gives_same_logits(env, tmp_path):
    model = _model(env.train)
    x, _ = _batch()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    assert type(loaded).__name__ == "GPT"
    assert torch.equal(loaded(x), model(x))


def test_main_prints_summary(env, monkeypatch):
    train = env.train
    monkeypatch.setattr(train.prepare, "TIME_BUDGET", 0.3)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train.main()
    text = out.getvalue()
    assert "evaluate_bpb" in env.calls
    own, final = [b.strip().splitlines() for b in text.split("\n---\n")[1:]]
    keys = [line.split(":", 1)[0] for line in final]
    assert keys == ["val_bpb", "training_seconds", "total_seconds", "peak_memory_mb", "mfu_percent",
                    "total_tokens_M", "num_steps", "num_params_M", "backend", "device"]
    # under the harness the process ends inside evaluate_bpb: its own figures come first
    assert own == final[1:]
    block = final
    values = dict(line.split(":", 1) for line in block)
    assert values["val_bpb"].strip() == "nan"
    assert int(values["num_steps"]) > train.WARMUP_STEPS_UNTIMED
    assert float(values["training_seconds"]) >= 0.3


def test_main_stops_when_the_loader_runs_out_mid_step(env, monkeypatch):
    """A token budget used up (the harness's loader ends): the step under way is finished
    with what it accumulated, training stops, and the model is still handed over."""
    train = env.train
    rows, seq = train.DEVICE_BATCH_SIZE, train.MAX_SEQ_LEN
    monkeypatch.setattr(train, "TOTAL_BATCH_SIZE", 2 * rows * seq)  # two micro-batches a step
    monkeypatch.setattr(train.prepare, "TIME_BUDGET", 1e9)
    progress_calls = []

    def three_batches(tokenizer, B, T, split):
        for _ in range(3):
            x = torch.randint(0, VOCAB, (B, T + 1))
            yield x[:, :-1], x[:, 1:], 1

    def budget_progress(seconds, tokens, flops=0.0):
        progress_calls.append(tokens)
        return 0.0

    monkeypatch.setattr(train.prepare, "make_dataloader", three_batches)
    monkeypatch.setattr(train.prepare, "budget_progress", budget_progress)
    env.calls.clear()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        train.main()
    values = dict(line.split(":", 1) for line in out.getvalue().split("\n---\n")[-1].strip().splitlines())
    assert int(values["num_steps"]) == 2 and "evaluate_bpb" in env.calls
    step_tokens = 2 * rows * seq
    # each step: the schedule's read after its batches, then the end-of-step check
    assert progress_calls == [0, step_tokens, step_tokens, 2 * step_tokens]
