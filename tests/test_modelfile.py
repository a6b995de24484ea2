"""harness.modelfile: facts about a torch.save'd model, read without running any of its code."""
import builtins
import collections
import importlib
import io
import os
import pickle
import re
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import torch

from harness import modelfile
from harness.modelfile import ModelFacts, ModelFileError, inspect

# The agent's train.py stand-in: imported only to SAVE, never importable while inspecting.
AGENT_SOURCE = '''
import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))


class GPT(nn.Module):
    def __init__(self, vocab=64, d=16, layers=2, ctx=8):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one tensor, two names
        self.register_buffer("rope", torch.randn(ctx, d // 2))  # floating buffer
        self.register_buffer("mask", torch.ones(ctx, ctx, dtype=torch.bool))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, idx):
        x = self.wte(idx)
        for b in self.blocks:
            x = x + b.proj(b.qkv(b.ln(x))[..., : x.shape[-1]])
        return self.lm_head(self.ln_f(x))


class BufferGPT(nn.Module):
    """Trained weights stored as buffers, not Parameters."""
    def __init__(self):
        super().__init__()
        self.register_buffer("w1", torch.randn(8, 8))
        self.register_buffer("w2", torch.randn(8))


class Marker:
    """Unpickling it writes a file: __setstate__ must never run."""
    def __init__(self, path):
        self.path = path

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        open(state["path"], "w").close()
'''


class Gadget:
    """Pickles as REDUCE(func, args): loading it calls func(*args)."""
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args

    def __call__(self, *args):  # only so a Gadget may stand as another's func
        raise AssertionError("never called at save time")


@pytest.fixture(autouse=True)
def _plain_torch_load(monkeypatch):
    """The controls call torch.load(weights_only=False); keep the environment from overriding it."""
    for var in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def agent(tmp_path):
    name = f"agent_train_{uuid.uuid4().hex[:10]}"
    folder = tmp_path / "agent"
    folder.mkdir()
    (folder / f"{name}.py").write_text(AGENT_SOURCE)
    sys.path.insert(0, str(folder))
    module = importlib.import_module(name)
    yield module
    forget(module)


def restore(module):
    """Make it importable again (for the controls that show a file really is hostile)."""
    sys.path.insert(0, str(Path(module.__file__).parent))
    importlib.invalidate_caches()


def forget(module):
    """Make the defining module unimportable: out of sys.modules and sys.path."""
    sys.modules.pop(module.__name__, None)
    folder = str(Path(module.__file__).parent)
    while folder in sys.path:
        sys.path.remove(folder)
    importlib.invalidate_caches()


def live_counts(model):
    params = sum(p.numel() for p in model.parameters())
    floats = sum(t.numel() for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())
    return params, floats


def save_forget_inspect(obj, path, agent) -> ModelFacts:
    torch.save(obj, path)
    forget(agent)
    facts = inspect(path)
    assert agent.__name__ not in sys.modules  # counted without importing the agent's code
    return facts


def test_gpt_counts_match_the_live_model(agent, tmp_path):
    model = agent.GPT()
    path = tmp_path / "model.pt"
    facts = save_forget_inspect(model, path, agent)
    with pytest.raises(ModuleNotFoundError):  # the ordinary loader would need the agent's module
        torch.load(path, weights_only=False)
    params, floats = live_counts(model)
    assert facts.num_params == params
    assert facts.num_float_elements == floats == params + model.rope.numel()  # bool/long buffers excluded
    assert facts.dtypes == {"float32": floats}
    assert facts.bytes == path.stat().st_size
    # Tied: lm_head.weight is wte.weight, counted once.
    named = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert params == named - model.wte.weight.numel()


def test_compiled_model_counts_unchanged(agent, tmp_path):
    model = agent.GPT()
    try:
        compiled = torch.compile(model)
        torch.save(compiled, tmp_path / "probe.pt")
    except Exception as e:  # noqa: BLE001 - compile or pickling it unavailable here
        pytest.skip(f"torch.compile unavailable: {e}")
    assert type(compiled).__name__ == "OptimizedModule"
    facts = save_forget_inspect(compiled, tmp_path / "compiled.pt", agent)
    assert (facts.num_params, facts.num_float_elements) == live_counts(model)


def test_bf16_model(agent, tmp_path):
    model = agent.GPT().to(torch.bfloat16)
    facts = save_forget_inspect(model, tmp_path / "bf16.pt", agent)
    params, floats = live_counts(model)
    assert (facts.num_params, facts.num_float_elements) == (params, floats)
    assert facts.dtypes == {"bfloat16": floats}


def test_meta_built_then_to_empty(agent, tmp_path):
    with torch.device("meta"):
        model = agent.GPT()
    torch.save(model, tmp_path / "meta.pt")  # shapes without bytes: nothing to count
    with pytest.raises(ModelFileError, match="no tensors"):
        inspect(tmp_path / "meta.pt")
    model = model.to_empty(device="cpu")
    facts = save_forget_inspect(model, tmp_path / "empty.pt", agent)
    assert (facts.num_params, facts.num_float_elements) == live_counts(model)


def test_weights_stored_as_buffers_are_not_parameters(agent, tmp_path):
    model = agent.BufferGPT()
    facts = save_forget_inspect(model, tmp_path / "buffers.pt", agent)
    assert facts.num_params == 0
    assert facts.num_float_elements == 8 * 8 + 8


def test_state_dict_file_has_no_parameters(agent, tmp_path):
    model = agent.GPT()
    facts = save_forget_inspect(model.state_dict(), tmp_path / "sd.pt", agent)
    assert facts.num_params == 0  # a state_dict holds plain tensors, not Parameters
    assert facts.num_float_elements == live_counts(model)[1]  # the tied pair still counted once


def test_new_dtypes_and_shared_storage(tmp_path):
    base = torch.zeros(10)
    obj = {"fp8": torch.zeros(3, 4, dtype=torch.float8_e4m3fn), "a": base[:4], "b": base[4:],
           "again": base[:4], "count": torch.zeros(5, dtype=torch.uint16)}
    torch.save(obj, tmp_path / "d.pt")
    facts = inspect(tmp_path / "d.pt")
    assert facts.dtypes == {"float8_e4m3fn": 12, "float32": 10}
    assert facts.num_params == 0


@pytest.mark.parametrize("var", ["TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"])
def test_torch_load_env_overrides_change_nothing(agent, tmp_path, monkeypatch, var):
    model = agent.GPT()
    torch.save(model, tmp_path / "m.pt")
    forget(agent)
    plain = inspect(tmp_path / "m.pt")
    monkeypatch.setenv(var, "1")
    assert inspect(tmp_path / "m.pt") == plain


# --- hostile files -------------------------------------------------------------------------

def gadgets(marker: Path):
    cmd = f"touch {marker}"
    return {
        "os.system": Gadget(os.system, cmd),
        "eval": Gadget(builtins.eval, f"__import__('os').system({cmd!r})"),
        "exec": Gadget(builtins.exec, f"import os; os.system({cmd!r})"),
        "Popen": Gadget(subprocess.Popen, ["touch", str(marker)]),
        "getattr": Gadget(Gadget(builtins.getattr, Gadget(builtins.__import__, "os"), "system"), cmd),
    }


def appeared(marker: Path, wait: float = 0.0) -> bool:
    deadline = time.monotonic() + wait
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return marker.exists()


@pytest.mark.parametrize("kind", ["os.system", "eval", "exec", "Popen", "getattr"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_reduce_gadgets_in_a_saved_model_execute_nothing(agent, tmp_path, kind, protocol):
    marker = tmp_path / f"PWNED-{uuid.uuid4().hex}"
    model = agent.GPT()
    model.payload = gadgets(marker)[kind]  # pickled inside the module's __dict__
    path = tmp_path / "evil.pt"
    torch.save(model, path, pickle_protocol=protocol)
    forget(agent)
    facts = inspect(path)
    assert not appeared(marker, wait=0.5 if kind == "Popen" else 0)
    assert (facts.num_params, facts.num_float_elements) == live_counts(model)
    restore(agent)  # control: the ordinary loader fires the gadget
    torch.load(path, weights_only=False)
    assert appeared(marker, wait=5)


def torch_zip(path: Path, pkl: bytes, records: dict[str, bytes] = {}):  # noqa: B006
    """A zip laid out as torch.save lays it out, around a hand-written data.pkl."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", b"3\n")
        for name, data in records.items():
            z.writestr(f"archive/{name}", data)


class StorageRef:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


def crafted_pickle(obj) -> bytes:
    """Pickle obj, writing StorageRef as torch's persistent storage ids."""
    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            return ("storage", torch.FloatStorage, o.key, "cpu", o.numel) if isinstance(o, StorageRef) else None
    out = io.BytesIO()
    Pickler(out, protocol=2).dump(obj)
    return out.getvalue()


def tensor_ref(numel=2, shape=(2,), stride=(1,), key="0"):
    return Gadget(torch._utils._rebuild_tensor_v2, StorageRef(key, numel), 0, shape, stride, False,
                  collections.OrderedDict())


def test_hand_written_os_system_pickle_in_a_torch_zip(tmp_path):
    marker = tmp_path / f"PWNED-{uuid.uuid4().hex}"
    raw = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    torch_zip(tmp_path / "raw.pt", raw)
    with pytest.raises(ModelFileError, match="no tensors"):
        inspect(tmp_path / "raw.pt")
    assert not marker.exists()
    # With a tensor beside it: the tensor is counted, the call is not made.
    pkl = crafted_pickle({"w": tensor_ref(), "x": Gadget(os.system, f"touch {marker}")})
    torch_zip(tmp_path / "raw2.pt", pkl, {"data/0": bytes(8)})
    assert inspect(tmp_path / "raw2.pt").dtypes == {"float32": 2}
    assert not marker.exists()
    torch.load(tmp_path / "raw.pt", weights_only=False)  # control: the file really is hostile
    assert marker.exists()


def test_setstate_of_an_importable_class_is_not_run(agent, tmp_path):
    marker = tmp_path / f"PWNED-{uuid.uuid4().hex}"
    model = agent.GPT()
    model.marker = agent.Marker(str(marker))
    torch.save(model, tmp_path / "m.pt")  # the agent's module stays importable here
    facts = inspect(tmp_path / "m.pt")
    assert not marker.exists()
    assert facts.num_params == live_counts(model)[0]
    torch.load(tmp_path / "m.pt", weights_only=False)  # control
    assert marker.exists()


def test_lies_about_sizes_are_refused(tmp_path):
    cases = {
        "claims more than the record": crafted_pickle({"w": tensor_ref(numel=100)}),
        "view past its storage": crafted_pickle({"w": tensor_ref(shape=(3,))}),
        "missing record": crafted_pickle({"w": tensor_ref(key="7")}),
        "negative stride": crafted_pickle({"w": tensor_ref(stride=(-1,))}),
    }
    for why, pkl in cases.items():
        torch_zip(tmp_path / "lie.pt", pkl, {"data/0": bytes(8)})
        with pytest.raises(ModelFileError, match="malformed"):
            inspect(tmp_path / "lie.pt")
    torch.save({"w": torch.zeros(1).expand(1000)}, tmp_path / "expanded.pt")
    with pytest.raises(ModelFileError, match="self-overlapping"):
        inspect(tmp_path / "expanded.pt")


def test_unreadable_files(tmp_path, agent):
    good = tmp_path / "good.pt"
    torch.save(agent.GPT(), good)
    data = good.read_bytes()
    (tmp_path / "text.pt").write_text("hello")
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "adir").mkdir()
    torch.save({"w": torch.zeros(3)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("notes/readme.txt", "hi")
    with zipfile.ZipFile(tmp_path / "deflated.pt", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    cases = {
        "text.pt": "not a zip file", "truncated.pt": "not a zip file", "empty.pt": "is empty",
        "adir": "not a regular file", "missing.pt": "cannot open",
        "legacy.pt": "legacy (non-zip) torch.save file, which is not supported",
        "other.zip": "without data.pkl", "deflated.pt": "compressed record",
    }
    for name, message in cases.items():
        with pytest.raises(ModelFileError, match=re.escape(message)):
            inspect(tmp_path / name)
    with pytest.raises(ModelFileError, match="over the limit"):
        inspect(good, max_bytes=len(data) - 1)
    assert inspect(good, max_bytes=len(data)).bytes == len(data)


def test_walk_is_iterative_and_cycle_safe():
    deep = inner = []
    for _ in range(100_000):
        inner.append([])
        inner = inner[0]
    cyclic = [deep]
    cyclic.append(cyclic)
    assert modelfile._collect(cyclic, object) == {}
