"""A training script in the shape of upstream autoresearch's train.py, for CPU.

Written for this project's tests (not upstream's file): what matters is its shape, which
is the shape of the scripts users bring. It is a top-level script with no `main()`; it
fetches FlashAttention through `from kernels import get_kernel`; it builds the model under
`with torch.device("meta"):` and then uses `model` in top-level assignments; its
embeddings are bf16; it wraps the model with `torch.compile`; its loss calls
`targets.view(-1)`; it stops on its own clock against TIME_BUDGET and prints upstream's
summary block. Only its device lines are CPU's.
"""
import gc
import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from kernels import get_kernel

fa = get_kernel("varunneal/flash-attention-3").flash_attn_interface  # CPU: no capability check

from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, evaluate_bpb, make_dataloader  # noqa: E402


@dataclass
class GPTConfig:
    sequence_len: int = 256
    vocab_size: int = 4096
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 128
    window_pattern: str = "SL"


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos + b * sin, b * cos - a * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.n_embd // config.n_head
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x, cos_sin, window_size):
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        cos, sin = cos_sin
        q, k = norm(rotate(q, cos, sin)), norm(rotate(k, cos, sin))
        y = fa.flash_attn_func(q, k, v, causal=True, window_size=window_size)
        return self.c_proj(y.contiguous().view(B, T, -1))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attn = Attention(config)
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x, cos_sin, window_size):
        x = x + self.attn(norm(x), cos_sin, window_size)
        return x + self.proj(F.relu(self.fc(norm(x))).square())


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        long = config.sequence_len
        self.window_sizes = [((long if c == "L" else long // 2), 0) for c in config.window_pattern]
        self.window_sizes[-1] = (long, 0)
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(config.vocab_size, config.n_embd),
            "h": nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
        })
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))
        cos, sin = self._rotary(config.sequence_len, config.n_embd // config.n_head)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _rotary(self, seq_len, head_dim, base=10000, device=None):
        inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
        freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv)
        return freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]

    @torch.no_grad()
    def init_weights(self):
        s = 3 ** 0.5 * self.config.n_embd ** -0.5
        torch.nn.init.normal_(self.transformer.wte.weight, std=1.0)
        torch.nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.transformer.h:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.fc):
                torch.nn.init.uniform_(lin.weight, -s, s)
            torch.nn.init.zeros_(block.attn.c_proj.weight)
            torch.nn.init.zeros_(block.proj.weight)
        self.resid_lambdas.fill_(1.0)
        cos, sin = self._rotary(self.config.sequence_len, self.config.n_embd // self.config.n_head,
                                device=self.lm_head.weight.device)
        self.cos, self.sin = cos, sin
        self.transformer.wte.to(dtype=torch.bfloat16)  # bf16 embeddings, as upstream

    def num_scaling_params(self):
        total = sum(p.numel() for p in self.parameters())
        return {"wte": self.transformer.wte.weight.numel(), "total": total}

    def estimate_flops(self):
        return 6 * (sum(p.numel() for p in self.parameters()) - self.transformer.wte.weight.numel())

    def setup_optimizer(self, lr=3e-3, weight_decay=0.0):
        groups = [{"params": [p for p in self.parameters() if p.dim() >= 2], "lr": lr, "weight_decay": weight_decay},
                  {"params": [p for p in self.parameters() if p.dim() < 2], "lr": lr, "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, betas=(0.8, 0.95), eps=1e-10)
        for group in optimizer.param_groups:
            group["initial_lr"] = group["lr"]
        return optimizer

    def forward(self, idx, targets=None, reduction="mean"):
        B, T = idx.size()
        cos_sin = self.cos[:, :T], self.sin[:, :T]
        x = norm(self.transformer.wte(idx).float())  # upstream's bf16 autocast does this cast; CPU runs fp32
        for i, block in enumerate(self.transformer.h):
            x = block(self.resid_lambdas[i] * x, cos_sin, self.window_sizes[i])
        logits = self.lm_head(norm(x)).float()
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)
        if targets is not None:
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1,
                                   reduction=reduction)
        return logits


# Hyperparameters
DEPTH = 2
N_EMBD = 128
N_HEAD = 2
SOFTCAP = 15
LEARNING_RATE = 3e-3
WARMDOWN_RATIO = 0.5
DEVICE_BATCH_SIZE = 8
TOTAL_BATCH_SIZE = DEVICE_BATCH_SIZE * MAX_SEQ_LEN

# Setup (upstream: cuda, its bf16 autocast and torch.cuda calls; here: the CPU's)
t_start = time.time()
torch.manual_seed(42)
device = torch.device("cpu")
autocast_ctx = torch.amp.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=False)  # bf16 is slow on most CPUs

tokenizer = Tokenizer.from_directory()
vocab_size = tokenizer.get_vocab_size()
config = GPTConfig(sequence_len=MAX_SEQ_LEN, vocab_size=vocab_size, n_layer=DEPTH, n_head=N_HEAD, n_embd=N_EMBD)
print(f"Model config: {asdict(config)}")

with torch.device("meta"):
    model = GPT(config)
model.to_empty(device=device)
model.init_weights()

param_counts = model.num_scaling_params()
num_params = param_counts["total"]
num_flops_per_token = model.estimate_flops()
grad_accum_steps = TOTAL_BATCH_SIZE // (DEVICE_BATCH_SIZE * MAX_SEQ_LEN)
optimizer = model.setup_optimizer(lr=LEARNING_RATE)
model = torch.compile(model, dynamic=False)

train_loader = make_dataloader(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train")
x, y, epoch = next(train_loader)
print(f"Time budget: {TIME_BUDGET}s")


def get_lr_multiplier(progress):
    return 1.0 if progress < 1.0 - WARMDOWN_RATIO else (1.0 - progress) / WARMDOWN_RATIO


t_start_training = time.time()
total_training_time = 0.0
step = 0
while True:
    t0 = time.time()
    for micro_step in range(grad_accum_steps):
        with autocast_ctx:
            loss = model(x, y)
        train_loss = loss.detach()
        (loss / grad_accum_steps).backward()
        x, y, epoch = next(train_loader)
    progress = min(total_training_time / TIME_BUDGET, 1.0)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * get_lr_multiplier(progress)
    optimizer.step()
    model.zero_grad(set_to_none=True)
    train_loss_f = train_loss.item()
    if math.isnan(train_loss_f) or train_loss_f > 100:
        print("FAIL")
        exit(1)
    dt = time.time() - t0
    if step > 2:
        total_training_time += dt
    print(f"\rstep {step:05d} | loss: {train_loss_f:.6f} | dt: {dt * 1000:.0f}ms", end="", flush=True)
    if step == 0:
        gc.collect()
        gc.freeze()
        gc.disable()
    step += 1
    if step > 2 and total_training_time >= TIME_BUDGET:
        break
print()

model.eval()
with autocast_ctx:
    val_bpb = evaluate_bpb(model, tokenizer, DEVICE_BATCH_SIZE)

t_end = time.time()
print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {total_training_time:.1f}")
print(f"total_seconds:    {t_end - t_start:.1f}")
print(f"total_tokens_M:   {step * TOTAL_BATCH_SIZE / 1e6:.1f}")
print(f"num_steps:        {step}")
print(f"num_params_M:     {num_params / 1e6:.1f}")
print(f"depth:            {DEPTH}")
