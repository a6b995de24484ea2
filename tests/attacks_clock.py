"""Planted train.py code for the warm-up and clock attacks (tests/test_attacks_clock.py):
`before_eval` blocks for tests/fakes.py (steps=0), with `model`, `opt`, `loader` (4 rows
x MAX_SEQ_LEN a batch) and `tok` in scope. Both buy compute off the clock: the harness
must give them nothing of the data set before it, and time every token after."""

# Guesses the warm-up from the preset (the default: two optimizer steps of
# model.total_batch_size), takes exactly that many tokens, trains 13 epochs over them
# before asking for anything more (all before the clock), and keeps a copy of what it got
# in its scratch and in its log (the scratch is removed after the run; the log is kept).
TRAIN_ON_WARMUP = '''
import base64
import numpy as np
from trainer.feed import Client
client = Client.from_env()
warm = []
while sum(x.numel() for x, _ in warm) < 2 * prepare.MODEL["total_batch_size"]:
    x, y, _ = next(loader)
    warm.append((x, y))
    print(f"WARMUP_BATCH clock {client.last.training_seconds}", flush=True)
steps = 0
for _ in range(13):
    for x, y in warm:
        loss = F.cross_entropy(model(x).view(-1, VOCAB_SIZE), y.view(-1))
        opt.zero_grad(); loss.backward(); opt.step()
        steps += 1
print(f"WARMUP_STEPS {steps} clock {client.last.training_seconds} loss {loss.item():.3f}", flush=True)
rows = np.concatenate([torch.cat([x, y[:, -1:]], dim=1).numpy() for x, y in warm]).astype(np.int32)
np.save("warmup_rows.npy", rows)
print("WARMUP_ROWS " + ",".join(map(str, rows.shape)) + " " + base64.b64encode(rows.tobytes()).decode(), flush=True)
while prepare.budget_progress(0.0, 0) < 1:
    x, y, _ = next(loader)
    loss = F.cross_entropy(model(x).view(-1, VOCAB_SIZE), y.view(-1))
    opt.zero_grad(); loss.backward(); opt.step()
'''

# A first request of 64 rows x MAX_SEQ_LEN (16,384 tokens: four times model=tiny's warm-up)
# and nothing after it: trains on slices of it until the harness's clock says stop.
HUGE_FIRST_BATCH = '''
big = make_dataloader(tok, 64, MAX_SEQ_LEN, "train")
x, y, _ = next(big)
steps = 0
while prepare.budget_progress(0.0, 0) < 1:
    i = 4 * (steps % 16)
    loss = F.cross_entropy(model(x[i:i + 4]).view(-1, VOCAB_SIZE), y[i:i + 4].reshape(-1))
    opt.zero_grad(); loss.backward(); opt.step()
    steps += 1
print(f"HUGE_STEPS {steps}", flush=True)
'''
