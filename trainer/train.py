"""Single-file GPT pretraining under a fixed time budget: the file the agent edits.

How it is run:
  - Under the harness: `autoresearch experiment` copies this file next to the immutable
    `prepare.py` in a run directory and runs `python train.py` there, with the backend, the
    model preset (`model=`) and the time budget chosen by the harness's config. The harness
    computes val_bpb itself; `evaluate_bpb` below hands the model over to it.
  - By hand: from a directory where `prepare` (trainer/prepare.py, see its docstring for the
    data and tokenizer set-up), `backends` and `kernels` are importable:
        python train.py

Everything an experiment may change lives here: the model, the optimizer, the schedule and
the UPPER_CASE hyperparameters below. Nothing device-specific is hard-coded: device, dtype,
autocast, synchronize, memory and peak FLOP/s come from `backends`; norms, rotary and the
loss (fused with lm_head) come from `kernels` (looked up at call time, so the evaluator
can force the references).
Importing this file only defines things; training starts in `main()`.
"""
import math
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import backends
import kernels
import prepare

# -------------------- Hyperparameters (the agent's knobs) --------------------
MAX_SEQ_LEN = prepare.MAX_SEQ_LEN  # tokens per row; fixed by prepare.py (immutable)
VOCAB_SIZE = prepare.VOCAB_SIZE  # default vocab for GPTConfig; main() uses the tokenizer's
TIME_BUDGET = prepare.TIME_BUDGET  # seconds of training the harness grants this run (progress: prepare.budget_progress)
# Model size: the baseline reads it from the harness's model preset (model=, conf/model/):
# one file serves every preset, and calibration times the preset's baseline. These are
# knobs like the others: replace a read with a literal to change one (DEPTH = 6). Kept
# consistent or the run fails at start: WIDTH a multiple of HEAD_DIM, HEAD_DIM even,
# TOTAL_BATCH_SIZE a multiple of DEVICE_BATCH_SIZE * MAX_SEQ_LEN.
DEPTH = prepare.MODEL["depth"]  # transformer blocks
WIDTH = prepare.MODEL["width"]  # residual stream channels
HEAD_DIM = prepare.MODEL["head_dim"]  # channels per attention head; heads = WIDTH // HEAD_DIM
DEVICE_BATCH_SIZE = prepare.MODEL["device_batch_size"]  # rows per forward/backward (memory-bound)
TOTAL_BATCH_SIZE = prepare.MODEL["total_batch_size"]  # tokens per optimizer step (grad accumulation)
WINDOW_PATTERN = prepare.MODEL["window_pattern"]  # per-layer S/L attention, tiled over depth
SHORT_WINDOW = MAX_SEQ_LEN // 2  # tokens an "S" layer sees (itself included); halves its attention cost
ROPE_BASE = 10000.0  # rotary base period; larger = slower-rotating low frequencies
SOFTCAP = 15.0  # logit soft cap: logits = SOFTCAP * tanh(logits / SOFTCAP), bounds early overconfidence
VE_GATE_CHANNELS = 32  # residual channels that drive the value-embedding gate (cheap, input-dependent)
X0_LAMBDA_INIT = 0.1  # initial weight of the embedding skip (x0) re-added before every block

MATRIX_LR = 0.04  # Muon LR for 2-D block weights (the update is orthogonalized, so ~unit-scale)
EMBEDDING_LR = 0.6  # AdamW LR for token and value embeddings (sparse rows, tolerate large steps)
UNEMBEDDING_LR = 0.004  # AdamW LR for lm_head (small: it maps straight into the logits)
SCALAR_LR = 0.5  # AdamW LR for the x0 skip weights (scalars)
RESID_SCALAR_LR = 0.005  # AdamW LR for residual-stream scales (every block compounds them)
GATE_LR = 0.02  # AdamW LR for the value-embedding gates (small linear maps to per-head gates)
ADAM_BETAS = (0.8, 0.95)  # short memory: the schedule is only a few hundred steps long
WEIGHT_DECAY = 0.2  # decoupled decay on Muon matrices, multiplied by the scheduled LR
MUON_MOMENTUM = 0.95  # Nesterov momentum of Muon after warm-up
MUON_MOMENTUM_START = 0.85  # Muon momentum at step 0 (less stale history while weights move fast)
MUON_MOMENTUM_WARMUP_STEPS = 300  # optimizer steps to ramp Muon momentum from START to final
NS_STEPS = 5  # Newton-Schulz quintic iterations per Muon update
WARMUP_RATIO = 0.0  # fraction of the time budget spent ramping LR up from 0
WARMDOWN_RATIO = 0.5  # fraction of the time budget spent decaying LR to FINAL_LR_FRAC
FINAL_LR_FRAC = 0.0  # LR multiplier at the end of the budget
USE_COMPILE = True  # torch.compile when the backend supports it (never on CPU: ~50 s cold for 1.2x)
WARMUP_STEPS_UNTIMED = 2  # first steps (compile, allocator warm-up) excluded from the training clock
PRINT_EVERY = 10  # optimizer steps between progress lines
SEED = 42  # torch RNG seed for the init


# -------------------- Model --------------------------------------------------
@dataclass
class GPTConfig:
    sequence_len: int = MAX_SEQ_LEN
    vocab_size: int = VOCAB_SIZE
    n_layer: int = DEPTH
    n_embd: int = WIDTH
    head_dim: int = HEAD_DIM
    window_pattern: str = WINDOW_PATTERN
    short_window: int = SHORT_WINDOW
    softcap: float = SOFTCAP
    rope_base: float = ROPE_BASE
    ve_gate_channels: int = VE_GATE_CHANNELS
    x0_lambda_init: float = X0_LAMBDA_INIT

    @property
    def n_head(self) -> int:
        assert self.n_embd % self.head_dim == 0, f"width {self.n_embd} not a multiple of head_dim {self.head_dim}"
        return self.n_embd // self.head_dim


def layer_windows(cfg: GPTConfig) -> list:
    """Per-layer attention window in tokens (None = full causal); the last layer is always full."""
    pattern = cfg.window_pattern.upper()
    assert pattern and set(pattern) <= {"S", "L"}, f"window_pattern must be S/L letters, got {cfg.window_pattern!r}"
    windows = [cfg.short_window if pattern[i % len(pattern)] == "S" else None for i in range(cfg.n_layer)]
    windows[-1] = None
    return windows


def has_value_embedding(layer_idx: int, n_layer: int) -> bool:
    """Alternating layers, counted back from the last one (which always has one)."""
    return layer_idx % 2 == (n_layer - 1) % 2


def norm(x):
    return kernels.rms_norm(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, layer_idx: int):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        inner = self.n_head * self.head_dim
        self.c_q = nn.Linear(cfg.n_embd, inner, bias=False)
        self.c_k = nn.Linear(cfg.n_embd, inner, bias=False)
        self.c_v = nn.Linear(cfg.n_embd, inner, bias=False)
        self.c_proj = nn.Linear(inner, cfg.n_embd, bias=False)
        self.ve_gate_channels = min(cfg.ve_gate_channels, cfg.n_embd)
        self.ve_gate = (nn.Linear(self.ve_gate_channels, self.n_head, bias=False)
                        if has_value_embedding(layer_idx, cfg.n_layer) else None)

    def forward(self, x, ve, cos, sin, window):
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)  # (B, T, H, D)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        if ve is not None:
            # per-token, per-head gate in (0, 2); 1 at init (zero weights)
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., : self.ve_gate_channels]))  # (B, T, H)
            v = v + gate.unsqueeze(-1) * ve.view_as(v).to(v.dtype)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        # QK-norm after rotary: the two commute exactly (rotation preserves the norm), and
        # norming last guarantees unit-RMS q, k reach attention whatever the rotary rounding.
        q = norm(kernels.apply_rotary(q, cos, sin))
        k = norm(kernels.apply_rotary(k, cos, sin))
        w = window if window is not None and window < T else None
        y = backends.attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), w)  # (B, H, T, D)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, layer_idx: int):
        super().__init__()
        self.attn = CausalSelfAttention(cfg, layer_idx)
        self.mlp = MLP(cfg)

    def forward(self, x, ve, cos, sin, window):
        x = x + self.attn(norm(x), ve, cos, sin, window)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig = None):
        super().__init__()
        cfg = cfg or GPTConfig()
        self.config = cfg
        self.windows = layer_windows(cfg)
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layer)])
        self.value_embeds = nn.ModuleDict({
            str(i): nn.Embedding(cfg.vocab_size, cfg.n_head * cfg.head_dim)
            for i in range(cfg.n_layer) if has_value_embedding(i, cfg.n_layer)})
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(cfg.n_layer))  # scale of the running stream
        self.x0_lambdas = nn.Parameter(torch.full((cfg.n_layer,), cfg.x0_lambda_init))  # embedding skip
        cos, sin = self._rotary_tables(cfg.sequence_len, cfg.head_dim, cfg.rope_base)
        self.register_buffer("cos", cos, persistent=False)  # (1, T, 1, D/2)
        self.register_buffer("sin", sin, persistent=False)
        self.init_weights()

    @staticmethod
    def _rotary_tables(seq_len, head_dim, base):
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)  # (T, D/2)
        return freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]

    @torch.no_grad()
    def init_weights(self):
        # uniform with std 1/sqrt(fan_in) keeps the residual stream O(1) through each block
        bound = (3.0 / self.config.n_embd) ** 0.5
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                lin.weight.uniform_(-bound, bound)
            block.attn.c_proj.weight.zero_()  # every block starts as the identity
            block.mlp.c_proj.weight.zero_()
            if block.attn.ve_gate is not None:
                block.attn.ve_gate.weight.zero_()  # gate = 1 at init
        self.wte.weight.normal_(0.0, 1.0)  # normed right after lookup, so scale is irrelevant
        for emb in self.value_embeds.values():
            emb.weight.uniform_(-bound, bound)  # same scale as v = c_v(x)
        self.lm_head.weight.normal_(0.0, 0.001)  # near-uniform predictions: loss starts at ln(V)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        assert T <= self.cos.size(1), f"sequence of {T} tokens exceeds the rotary table ({self.cos.size(1)})"
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = norm(self.wte(idx))  # (B, T, C)
        x0 = x
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = block(x, ve, cos, sin, self.windows[i])
        x = norm(x)
        if targets is None:
            logits = self.lm_head(x).float()  # (B, T, V), fp32 from here on
            return self.config.softcap * torch.tanh(logits / self.config.softcap)
        # the same softcapped cross-entropy, fused with lm_head: on a GPU the (B*T, V) fp32
        # logits are never held whole (kernels/linear_ce.py)
        return kernels.linear_cross_entropy(x.reshape(-1, x.size(-1)), self.lm_head.weight, targets.reshape(-1),
                                            self.config.softcap, ignore_index=-1)

    def param_groups(self) -> dict:
        """Parameters by role, which decides optimizer and LR. Covers every parameter once."""
        gates = [b.attn.ve_gate.weight for b in self.blocks if b.attn.ve_gate is not None]
        gate_ids = {id(p) for p in gates}
        groups = {
            "matrix": [p for p in self.blocks.parameters() if p.ndim == 2 and id(p) not in gate_ids],
            "embedding": [self.wte.weight],
            "value_embedding": list(self.value_embeds.parameters()),
            "lm_head": [self.lm_head.weight],
            "x0": [self.x0_lambdas],
            "resid": [self.resid_lambdas],
            "gate": gates,
        }
        n_grouped = sum(len(g) for g in groups.values())
        assert n_grouped == len(list(self.parameters())), "a parameter has no optimizer group"
        return groups

    def num_params(self) -> dict:
        groups = self.param_groups()
        counts = {k: sum(p.numel() for p in v) for k, v in groups.items()}
        counts["total"] = sum(p.numel() for p in self.parameters())
        return counts


def flops_per_token(model: GPT) -> float:
    """Training FLOPs per token: 6 per non-embedding weight (fwd+bwd matmuls, lm_head included;
    embedding lookups and scalars excluded), plus attention scores and mixing: 12 * H * D * context
    per layer, with context = min(window, T) and no causal discount (the reference's convention)."""
    c = model.num_params()
    matmul_params = c["total"] - c["embedding"] - c["value_embedding"] - c["x0"] - c["resid"]
    cfg, T = model.config, model.config.sequence_len
    attn = sum(12 * cfg.n_head * cfg.head_dim * (T if w is None else min(w, T)) for w in model.windows)
    return 6 * matmul_params + attn


# -------------------- Optimizer ----------------------------------------------
def newton_schulz(g: torch.Tensor, steps: int = NS_STEPS, dtype=torch.float32, eps: float = 1e-7):
    """Approximately orthogonalize g: push its singular values towards 1 with quintic iterations.
    All but the last use coefficients tuned to lift small singular values fast (they leave them
    in ~[0.68, 1.13]); the last is the convergent (15/8, -10/8, 3/8) step, which tightens that
    band to ~[0.94, 1.01]."""
    fast, exact = (3.4445, -4.7750, 2.0315), (1.875, -1.25, 0.375)
    x = g.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT  # iterate on the smaller Gram matrix
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)  # spectral norm <= Frobenius norm <= 1
    for i in range(steps):
        a, b, c = exact if i == steps - 1 else fast
        A = x @ x.mT
        x = a * x + (b * A + c * (A @ A)) @ x
    return x.mT if tall else x


class Muon(torch.optim.Optimizer):
    """Momentum SGD whose update is orthogonalized: every direction of a weight matrix moves
    at the same rate, whatever the gradient's conditioning. For 2-D weights only."""

    def __init__(self, params, lr=MATRIX_LR, momentum=MUON_MOMENTUM, weight_decay=WEIGHT_DECAY,
                 ns_steps=NS_STEPS, ns_dtype=torch.float32):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      ns_steps=ns_steps, ns_dtype=ns_dtype))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - mom)
                update = p.grad.lerp(buf, mom)  # Nesterov look-ahead
                update = newton_schulz(update, group["ns_steps"], group["ns_dtype"]).to(p.dtype)
                scale = max(1.0, p.size(-2) / p.size(-1)) ** 0.5  # keep per-element RMS for tall matrices
                p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr * scale)


def build_optimizers(model: GPT, ns_dtype=torch.float32) -> list:
    """[AdamW, Muon]; every group remembers its base LR as `initial_lr` for the schedule."""
    g = model.param_groups()
    dmodel_scale = (model.config.n_embd / 768) ** -0.5  # AdamW LRs were tuned at width 768
    adam_groups = [
        dict(params=g["lm_head"], lr=UNEMBEDDING_LR * dmodel_scale),
        dict(params=g["embedding"], lr=EMBEDDING_LR * dmodel_scale),
        dict(params=g["value_embedding"], lr=EMBEDDING_LR * dmodel_scale),
        dict(params=g["x0"], lr=SCALAR_LR),
        dict(params=g["resid"], lr=RESID_SCALAR_LR),
        dict(params=g["gate"], lr=GATE_LR),
    ]
    adam_groups = [grp for grp in adam_groups if grp["params"]]
    adamw = torch.optim.AdamW(adam_groups, betas=ADAM_BETAS, eps=1e-10, weight_decay=0.0)
    muon = Muon(g["matrix"], lr=MATRIX_LR, ns_dtype=ns_dtype)
    for opt in (adamw, muon):
        for grp in opt.param_groups:
            grp["initial_lr"] = grp["lr"]
    return [adamw, muon]


def lr_multiplier(progress: float, warmup=WARMUP_RATIO, warmdown=WARMDOWN_RATIO, final=FINAL_LR_FRAC):
    """LR multiplier at `progress` = the fraction of the budget used, in [0, 1]: linear warm-up,
    flat, then linear warm-down to `final`."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return progress / warmup
    if warmdown > 0 and progress > 1.0 - warmdown:
        left = (1.0 - progress) / warmdown  # 1 at the start of the warm-down, 0 at the end
        return final + (1.0 - final) * left
    return 1.0


def muon_momentum(step: int) -> float:
    frac = min(step / MUON_MOMENTUM_WARMUP_STEPS, 1.0) if MUON_MOMENTUM_WARMUP_STEPS > 0 else 1.0
    return (1 - frac) * MUON_MOMENTUM_START + frac * MUON_MOMENTUM


# -------------------- Training -----------------------------------------------
def train_step(train_model, model, optimizers, scaler, loader, grad_accum, bk, before_update=None):
    """One optimizer step: `grad_accum` micro-batches from `loader` (forward under the
    backend's autocast, backward of loss / grad_accum, through `scaler` when the backend
    has one), then `before_update()` (main's LR schedule: it reads the budget after this
    step's batches were served), every optimizer, zero_grad, and the loss as a float.
    Calibration times this very function (harness/workload.py on the frozen copy), so what
    it measures is the step that trains.
    Returns (loss of the last micro-batch, its epoch, whether the loader ran out during
    the step: a token budget used up), or None when the loader had no batch left at all."""
    train_loss, epoch, ended = None, None, False
    for _ in range(grad_accum):
        batch = next(loader, None)  # under the harness: the feed's next batch (it counts them)
        if batch is None:  # a token budget ran out: finish with what was accumulated
            ended = True
            break
        x, y, epoch = batch
        with bk.autocast():
            loss = train_model(x, y)
        train_loss = loss.detach()
        loss = loss / grad_accum
        (scaler.scale(loss) if scaler is not None else loss).backward()
    if train_loss is None:
        return None
    if before_update is not None:
        before_update()
    if scaler is not None:
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
    else:
        for opt in optimizers:
            opt.step()
    model.zero_grad(set_to_none=True)
    return train_loss.item(), epoch, ended  # .item() also waits for the step to finish


def main():
    t_start = time.time()
    bk = backends.current()
    device = bk.device()
    torch.manual_seed(SEED)

    tokenizer = prepare.Tokenizer.from_directory()
    cfg = GPTConfig(vocab_size=tokenizer.get_vocab_size())
    with torch.device(device):
        model = GPT(cfg)
    counts = model.num_params()
    fpt = flops_per_token(model)

    tokens_per_fwdbwd = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
    assert TOTAL_BATCH_SIZE % tokens_per_fwdbwd == 0, (
        f"TOTAL_BATCH_SIZE={TOTAL_BATCH_SIZE} must be a multiple of DEVICE_BATCH_SIZE*MAX_SEQ_LEN="
        f"{DEVICE_BATCH_SIZE}*{MAX_SEQ_LEN}={tokens_per_fwdbwd}")
    grad_accum = TOTAL_BATCH_SIZE // tokens_per_fwdbwd

    print(f"backend {bk.NAME} | device {bk.device_name()} | dtype {bk.compute_dtype()}", flush=True)
    print(f"model: depth {cfg.n_layer}, width {cfg.n_embd}, heads {cfg.n_head}x{cfg.head_dim}, "
          f"vocab {cfg.vocab_size}, seq {cfg.sequence_len}, windows {model.windows}", flush=True)
    print("params: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()), flush=True)
    print(f"flops/token {fpt:.3e} | batch {TOTAL_BATCH_SIZE:,} tokens = {DEVICE_BATCH_SIZE} rows x "
          f"{MAX_SEQ_LEN} x {grad_accum} accum | budget {TIME_BUDGET:.1f}s", flush=True)

    # Newton-Schulz in bf16 where the backend computes in bf16 (fast, accurate enough), else fp32
    ns_dtype = torch.bfloat16 if bk.compute_dtype() == torch.bfloat16 else torch.float32
    optimizers = build_optimizers(model, ns_dtype=ns_dtype)
    scaler = bk.grad_scaler()
    train_model = model
    if USE_COMPILE and bk.compile_available() and bk.NAME != "cpu":
        train_model = torch.compile(model, dynamic=False)
    loader = prepare.make_dataloader(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train")
    budget_fpt = prepare.model_flops_per_token(model)  # FLOPs/token as a flops budget counts them

    training_seconds, step, smooth_loss, progress, lrm = 0.0, 0, 0.0, 0.0, 1.0

    def schedule():
        """This step's LR and Muon momentum, from the budget used so far."""
        nonlocal progress, lrm
        tokens = step * TOTAL_BATCH_SIZE
        progress = prepare.budget_progress(training_seconds, tokens, tokens * budget_fpt)
        lrm = lr_multiplier(progress)
        for opt in optimizers:
            for grp in opt.param_groups:
                grp["lr"] = grp["initial_lr"] * lrm
        for grp in optimizers[1].param_groups:
            grp["momentum"] = muon_momentum(step)

    while True:
        bk.synchronize()
        t0 = time.time()
        out = train_step(train_model, model, optimizers, scaler, loader, grad_accum, bk, schedule)
        if out is None:  # a token budget ran out on a step boundary: nothing left to step
            break
        loss_f, epoch, ended = out
        if not math.isfinite(loss_f) or loss_f > 100:
            print(f"FAIL: loss is {loss_f} at step {step}", flush=True)
            sys.exit(1)
        bk.synchronize()
        dt = time.time() - t0
        if step >= WARMUP_STEPS_UNTIMED:
            training_seconds += dt
        smooth_loss = 0.9 * smooth_loss + 0.1 * loss_f
        if step % PRINT_EVERY == 0:
            debiased = smooth_loss / (1 - 0.9 ** (step + 1))
            print(f"step {step:05d} | loss {debiased:.4f} | lrm {lrm:.3f} | tok/s {TOTAL_BATCH_SIZE / dt:,.0f} "
                  f"| epoch {epoch} | {100 * progress:.0f}% of budget | {training_seconds:.1f}s", flush=True)
        step += 1
        # the budget's own measure: seconds (wall, normalized), tokens or FLOPs (tokens, flops)
        tokens = step * TOTAL_BATCH_SIZE
        if prepare.budget_progress(training_seconds, tokens, tokens * budget_fpt) >= 1 or ended:
            break

    timed_steps = max(step - WARMUP_STEPS_UNTIMED, 0)
    peak = bk.peak_flops(bk.compute_dtype())
    if peak and training_seconds > 0:
        mfu = f"{100 * fpt * TOTAL_BATCH_SIZE * timed_steps / training_seconds / peak:.2f}"
    else:
        mfu = "n/a"
    # This script's own figures (under the harness, whose own figures are the ones that count,
    # the process ends inside evaluate_bpb: they are printed first, and kept as train.py's).
    report = [
        f"training_seconds: {training_seconds:.1f}",
        f"total_seconds:    {time.time() - t_start:.1f}",
        f"peak_memory_mb:   {bk.max_memory_allocated() / 1024 / 1024:.1f}",
        f"mfu_percent:      {mfu}",
        f"total_tokens_M:   {step * TOTAL_BATCH_SIZE / 1e6:.1f}",
        f"num_steps:        {step}",
        f"num_params_M:     {counts['total'] / 1e6:.1f}",
        f"backend:          {bk.NAME}",
        f"device:           {bk.device_name()}",
    ]
    print("\n".join(["---", *report]), flush=True)
    model.eval()
    with torch.no_grad(), bk.autocast():
        val_bpb = prepare.evaluate_bpb(model, tokenizer, DEVICE_BATCH_SIZE)
    try:
        bpb = f"{float(val_bpb):.6f}"
    except (TypeError, ValueError):
        bpb = "nan"
    print("\n".join(["---", f"val_bpb:          {bpb}", *report]), flush=True)


if __name__ == "__main__":
    main()
