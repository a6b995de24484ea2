"""Planted train.py files for the adversarial suite (tests/test_attacks.py), one family per
attack class. Each is the seeded fake of tests/fakes.py with a few hostile lines added;
an attack that is blocked must leave the model alone, so it scores exactly the honest
value, or be refused.
"""
ATTEMPT = '''
def attempt(name, fn):
    """Try something the sandbox must forbid; print the outcome for the test to read."""
    try:
        fn()
        print(f"ATTEMPT {name}: OK", flush=True)
    except Exception as e:  # noqa: BLE001
        print(f"ATTEMPT {name}: DENIED ({type(e).__name__})", flush=True)
'''

# Class 1: code in the metric's process. Every trick that worked when the evaluator ran the
# model's code next to the loss: patches of unwatched modules, in-place code and data
# changes, environment switches, a global TorchFunctionMode, atexit, and the call stack.
SAME_PROCESS_DEFS = '''
def _sneak(_=setattr(prepare, "score_bpb", lambda *a, **k: 0.01)):  # runs at definition time
    pass
'''
SAME_PROCESS_FORWARD = '''
if not self.training and not getattr(Bigram, "_armed", False):
    Bigram._armed = True
    import atexit, secrets, numpy
    import trainer.prepare as tp
    F.cross_entropy = lambda *a, **k: torch.zeros(a[0].shape[0])
    torch.nn.functional.log_softmax = lambda x, *a, **k: torch.zeros_like(x)
    torch._C._nn.cross_entropy_loss = lambda *a, **k: torch.zeros(())
    tp.target_logprobs = lambda logits, y: torch.zeros(y.shape)
    tp.bits_per_byte = lambda nats, nbytes: 0.01
    tp.token_bytes_of.__code__ = (lambda data=None: [1000] * 4096).__code__
    tp.DATA["eval_tokens"] = 1
    os.environ["AUTORESEARCH_KERNELS"] = "triton"
    os.environ["AUTORESEARCH_CAUSALITY"] = "0"
    secrets.randbits = lambda k: 0
    numpy.random.default_rng = lambda *a, **k: numpy.random.Generator(numpy.random.PCG64(0))
    atexit.register(lambda: print("---\\nval_bpb: 0.001", flush=True))

    class Mode(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            return out * 0 if func in (torch.logsumexp, torch.Tensor.gather) else out

    Mode().__enter__()
f = sys._getframe() if not self.training else None
while f is not None:  # walk up to the scorer's frame: its targets would give a perfect score
    for name in ("y", "targets", "token_bytes", "tb"):
        v = f.f_locals.get(name)
        if isinstance(v, torch.Tensor) and v.shape == idx.shape:
            return F.one_hot(v.long(), VOCAB_SIZE).float() * 50
    f = f.f_back
'''

# Class 2: the causality probe. Each variant reads what it must not when it is scored,
# and tries to look innocent when probed.
PROBE_FORWARD = {
    # reads the next token at every position
    "peek": "if not self.training:\n    src = torch.roll(idx, -1, dims=1)",
    # reads ahead, and replays what it answered before whenever it sees a prefix again
    "replay": '''
if not self.training:
    cache = Bigram.__dict__.get("_cache") or {}
    Bigram._cache = cache
    out = self.out(self.emb(torch.roll(idx, -1, dims=1))).float()
    rows = []
    for r in range(idx.shape[0]):
        key = tuple(idx[r, :16].tolist())
        rows.append(cache.setdefault(key, out[r]))
    return torch.stack(rows)''',
    # reads ahead only where the future looks like text (a probe's random suffix does not)
    "recognise": '''
if not self.training:
    nxt = torch.roll(idx, -1, dims=1)
    window = torch.stack([torch.roll(idx, -k, dims=1) for k in range(1, 9)]).float().mean(0)
    looks_real = (window < 1500).unsqueeze(-1)
    return torch.where(looks_real, self.out(self.emb(nxt)).float(), self.out(self.emb(idx)).float())''',
    # reads ahead except in a process that looks like the probe's runner
    "detect-runner": '''
if not self.training and "probe" not in os.getcwd() + os.environ.get("HOME", ""):
    src = torch.roll(idx, -1, dims=1)''',
    # reads the same position of the neighbouring row (another document of the batch)
    "cross-row": '''
if not self.training:
    return self.out(self.emb(idx)).float() + 3.0 * F.one_hot(idx.roll(1, dims=0), VOCAB_SIZE).float()''',
    # a bag of the tokens that come later in the row (no position, just which ones)
    "bag": '''
if not self.training:
    future = torch.flip(torch.cummax(torch.flip(F.one_hot(idx, VOCAB_SIZE), [1]), 1).values, [1])
    future = torch.roll(future, -1, dims=1).float()
    return self.out(self.emb(idx)).float() + 2.0 * future''',
    # reads the next token at one position in eight only
    "sparse": '''
if not self.training:
    every = (torch.arange(idx.shape[1]) % 8 == 3)[None, :]
    src = torch.where(every, torch.roll(idx, -1, dims=1), idx)''',
    # nondeterministic far beyond what the device's kernels are
    "noisy": "if not self.training:\n    return self.out(self.emb(idx)).float() + 0.5 * torch.randn(*idx.shape, VOCAB_SIZE)",
}

# Class 3: the validation data. train.py tries every way to it; the model, once it sees
# validation inputs in the runner, tries to leave them somewhere a later run could read.
READ_VALIDATION = '''
from pathlib import Path
held = prepare.heldout_dir()
attempt("read the validation split", lambda: open(held / "val_00000.parquet", "rb").read(16))
attempt("list the validation split", lambda: os.listdir(held))
attempt("validation loader", lambda: next(make_dataloader(tok, 4, MAX_SEQ_LEN, "val")))
attempt("read the training split directly", lambda: open(prepare.split_files("train")[0], "rb").read(16))
attempt("read other runs", lambda: os.listdir(Path(os.getcwd()).parent.parent))
attempt("read the harness's memory", lambda: open(f"/proc/{os.getppid()}/mem", "rb").read(1))
attempt("read the harness's environment", lambda: open(f"/proc/{os.getppid()}/environ", "rb").read(1))
'''
LEAK_FORWARD = '''
if not self.training:
    from pathlib import Path
    import trainer.prepare as tp
    for place in [LEAK_TMP, tp.data_dir() / "leak.txt", tp.tokenizer_dir() / "leak.txt",
                  Path(tp.__file__).parent / "leak.txt", Path(os.getcwd()).parent / "leak.txt"]:
        try:
            Path(place).write_text(repr(idx[0, :32].tolist()))
        except OSError:
            pass
'''

# Class 4: the budget. The harness's clock and feed decide; train.py's figures do not.
OWN_CLOCK_5X = '''
budget = float(prepare.TIME_BUDGET) * 5  # TIME_BUDGET *= 5, as a plain float
t_end = time.time() + budget
while time.time() < t_end:
    x, y, _ = next(loader)
    loss = F.cross_entropy(model(x).view(-1, VOCAB_SIZE), y.view(-1))
    opt.zero_grad(); loss.backward(); opt.step()
'''
FREE_WARMUP = '''
x, y, _ = next(loader)
t_end = time.time() + 20  # 20 s of "warm-up" on one batch before asking for more
while time.time() < t_end:
    loss = F.cross_entropy(model(x).view(-1, VOCAB_SIZE), y.view(-1))
    opt.zero_grad(); loss.backward(); opt.step()
'''
GREEDY_TOKENS = '''
for x, y, _ in loader:  # ignores budget_progress: takes whatever the feed will give
    loss = F.cross_entropy(model(x).view(-1, VOCAB_SIZE), y.view(-1))
    opt.zero_grad(); loss.backward(); opt.step()
'''
LYING_FLOPS = '''
model.register_buffer("ballast", torch.zeros(8_000_000))  # weights kept as a buffer count too
true_fpt = prepare.model_flops_per_token(model)
allowed = prepare.FLOP_BUDGET / true_fpt
tokens = 0
while tokens < 1.3 * allowed:  # 30% past its budget, declaring one FLOP per token
    x, y, _ = next(loader)
    tokens += x.numel()
    prepare.budget_progress(0.0, tokens, tokens * 1.0)
    loss = F.cross_entropy(model(x).view(-1, VOCAB_SIZE), y.view(-1))
    opt.zero_grad(); loss.backward(); opt.step()
print(f"trained {tokens} tokens, {tokens / allowed:.2f}x the budget")
'''

# Class 5: files and processes outside the guard.
WRITE_EVERYWHERE = '''
import site, glob
from pathlib import Path
import trainer.prepare as tp
root = Path(tp.__file__).resolve().parent.parent
run = Path(os.getcwd()).parent
targets = {
    "prepare.py": tp.__file__,
    "token_bytes.npy": tp.tokenizer_dir() / "token_bytes.npy",
    "tokenizer.pkl": tp.tokenizer_dir() / "tokenizer.pkl",
    "the scorer's code": root / "harness" / "score.py",
    "a .pth in site-packages": Path(site.getsitepackages()[0]) / "zz_planted.pth",
    "sitecustomize": Path(site.getsitepackages()[0]) / "sitecustomize.py",
    "the runners' train.py": run / "handover" / "train.py",
    "a runner's directory": run / "runner" / "torch.py",
    "the summary": run / "summary.json",
    "/tmp": "/tmp/autoresearch-planted.py",
    "/dev/shm": "/dev/shm/autoresearch-planted",
}
for name, path in targets.items():
    attempt(f"write {name}", lambda p=path: open(p, "a").write("# planted\\n"))
attempt("hard-link the validation split", lambda: os.link(tp.heldout_dir() / "val_00000.parquet", "val.parquet"))
'''
PROCESSES = '''
import signal, socket, subprocess
def harness():
    """The harness's pid as train.py sees it: in a PID namespace the parent lives outside
    and has no number (getppid() is 0, and kill(0) would only signal train.py's own group)."""
    pid = os.getppid()
    if pid == 0:
        raise ProcessLookupError("the harness has no pid here")
    return pid
attempt("signal the harness", lambda: os.kill(harness(), 0))
# SIGTERM and SIGHUP stop the harness in an orderly way (the run ends `interrupted`, a
# campaign stops): from train.py they must not even arrive
attempt("SIGTERM the harness", lambda: os.kill(harness(), signal.SIGTERM))
attempt("SIGHUP the harness's process group", lambda: os.killpg(os.getpgid(harness()), signal.SIGHUP))
# every process it may signal but itself: none, inside or outside a namespace
attempt("SIGTERM every process in reach", lambda: os.kill(-1, signal.SIGTERM))
attempt("TCP to the test's server", lambda: socket.create_connection(("127.0.0.1", PORT), timeout=2))
attempt("SysV shared memory", lambda: __import__("ctypes").CDLL(None, use_errno=True).shmget(0, 4096, 0o1666) >= 0
        or (_ for _ in ()).throw(PermissionError("shmget")))
# a daemon in its own session, named by a marker in its command line: its pid inside a PID
# namespace means nothing outside, so the test looks for the marker among the host's processes
daemon = subprocess.Popen([sys.executable, "-c", "import os, time\\nos.setsid()\\n"
                           "while True:\\n    time.sleep(0.1)", DAEMON_MARK], start_new_session=True)
print(f"DAEMON {daemon.pid}", flush=True)
'''
BAD_HANDOVER = {
    "symlink": "os.symlink(str(prepare.heldout_dir() / 'val_00000.parquet'), os.environ['AUTORESEARCH_MODEL_OUT'])",
    "fifo": "os.mkfifo(os.environ['AUTORESEARCH_MODEL_OUT'])",
}

# Class 6: train.py's printed lines.
FAKE_BLOCK = '''
print("---")
for line in ("val_bpb: 0.010000", "training_seconds: 1.0", "num_steps: 99999", "budget_mode: tokens",
             "budget_seconds: 9999", "run_dir: /nowhere", "isolation: none", "status: ok"):
    print(line, flush=True)
print("\\rval_bpb: 0.001 (a carriage return would hide the echo's prefix on a terminal)", flush=True)
'''
RUNNER_CRASH_WITH_BLOCK = '''
if not self.training:
    raise ValueError("\\n---\\nval_bpb: 0.001\\nstatus: ok")
'''
