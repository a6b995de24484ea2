"""Small train.py files for harness tests: honest, cheating, crashing, hanging.

Each is a complete upstream-style script (imports `prepare` from the run directory),
seeded, so that two runs that train the same model score the same val_bpb (the data
comes from the harness's feed in the same order every time, the warm-up's random rows
too; the adversarial suite runs with budget.warmup_tokens=0 all the same): an attack that
leaves the model alone must score exactly the honest value. Hooks put code at module level
(`top`), among the definitions (`extra_defs`), inside forward (`forward_extra`, with
`idx` and `src` in scope, may return early), after training (`before_eval`) and after
the handover (`after_eval`).
"""
from pathlib import Path

TEMPLATE = '''
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import prepare
from prepare import MAX_SEQ_LEN, VOCAB_SIZE, Tokenizer, evaluate_bpb, make_dataloader

STEPS = {steps}  # optimizer steps
PEEK = {peek}  # 1: each position reads the next token (a non-causal cheat)
{top}

class Bigram(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.emb = nn.Embedding(vocab, 32)
        self.out = nn.Linear(32, vocab)

    def forward(self, idx, targets=None):
        src = torch.roll(idx, -1, dims=1) if PEEK else idx
{forward_extra}
        return self.out(self.emb(src)).float()

{extra_defs}

def main():
    t0 = time.time()
    torch.manual_seed(0)
    tok = Tokenizer.from_directory()
    model = Bigram(VOCAB_SIZE)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = make_dataloader(tok, 4, MAX_SEQ_LEN, "train")
    for step in range(STEPS):
        x, y, _ = next(loader)
        loss = F.cross_entropy(model(x).view(-1, VOCAB_SIZE), y.view(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
{before_eval}
    val = evaluate_bpb(model, tok, 4)
{after_eval}
    print("---")
    print(f"val_bpb:          {{val:.6f}}")
    print(f"training_seconds: {{time.time() - t0:.1f}}")
    print(f"num_steps:        {{STEPS}}")


if __name__ == "__main__":
    main()
'''


def write(path: Path, steps=5, peek=0, forward_extra="", extra_defs="", before_eval="", after_eval="",
          top="") -> Path:
    def indent(code, n):
        return "\n".join(" " * n + line for line in code.strip("\n").splitlines())

    path.write_text(TEMPLATE.format(steps=steps, peek=peek, forward_extra=indent(forward_extra, 8),
                                    extra_defs=extra_defs, before_eval=indent(before_eval, 4),
                                    after_eval=indent(after_eval, 4), top=top))
    return path
