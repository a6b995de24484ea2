"""harness.modelfile's num_weights: what a handed-over file (and its train.py) can hold as
weights, whatever form they take; and train.py's side of the rule (trainer/weights.py,
prepare.model_flops_per_token), which must count the same for an honest model."""
import os
import zipfile

import pytest
import torch

from harness.modelfile import ModelFileError, byte_weights, inspect
from tests.test_modelfile import agent, forget, live_counts  # noqa: F401 (agent: a fixture)
from trainer import weights

N = 4096  # float32 weights of the packed models below: 16 KiB, far above any file's overhead


def save(obj, path):
    """As prepare.evaluate_bpb saves: through a file object (the archive is named `archive`)."""
    with open(path, "wb") as f:
        torch.save(obj, f)
    return path


def floats_only(path) -> int:
    """The bytes of the file's floating-point tensors (what num_float_elements pays for)."""
    facts = inspect(path)
    return facts.bytes - facts.other_bytes


class Plain(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)


class Bits(torch.nn.Module):
    """The same weights as int32 bit-casts, turned back into floats only when used."""

    def __init__(self, w):
        super().__init__()
        self.register_buffer("bits", w.view(torch.int32).clone())

    def weight(self):
        return self.bits.view(torch.float32)


class Blob(torch.nn.Module):
    """The same weights as a Python bytes attribute (a scalar tensor so the file has one)."""

    def __init__(self, w):
        super().__init__()
        self.blob = w.numpy().tobytes()
        self.register_buffer("scale", torch.ones(()))


def test_floating_tensors_count_as_before_and_the_rest_by_its_bytes(agent, tmp_path):  # noqa: F811
    for dtype in (torch.float32, torch.bfloat16):
        model = agent.GPT().to(dtype)
        facts = inspect(save(model, tmp_path / "m.pt"))
        params, floats = live_counts(model)
        assert (facts.num_params, facts.num_float_elements) == (params, floats)
        assert facts.dtypes == {str(dtype).removeprefix("torch."): floats}
        # other: the bool mask (64 B), the long step (8 B), the pickle and the zip's own bytes
        assert facts.other_bytes == facts.bytes - floats * dtype.itemsize
        assert 64 + 8 < facts.other_bytes < 16 << 10
        assert facts.num_weights == floats + (facts.other_bytes + 1) // 2 and facts.source_bytes == 0


def test_weights_bit_cast_to_int32_count_twice_their_float_count(tmp_path):
    w = torch.randn(N)
    plain, bits = inspect(save(Plain(w), tmp_path / "p.pt")), inspect(save(Bits(w), tmp_path / "b.pt"))
    assert plain.num_float_elements == N and bits.num_float_elements == 0  # all a float count would see
    assert bits.num_weights >= 2 * N > plain.num_weights >= N
    assert torch.equal(torch.load(tmp_path / "b.pt", weights_only=False).weight(), w)  # control: they are weights


def test_weights_in_a_bytes_attribute_are_counted(tmp_path):
    w = torch.randn(N)
    facts = inspect(save(Blob(w), tmp_path / "blob.pt"))
    assert facts.num_float_elements == 1 and facts.num_weights >= 1 + 2 * N  # 4 bytes a weight: 2 weights
    blob = torch.load(tmp_path / "blob.pt", weights_only=False).blob
    assert torch.equal(torch.frombuffer(bytearray(blob), dtype=torch.float32), w)  # control


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor")
def test_the_gaps_of_a_strided_view_and_other_tensors_count_as_bytes(tmp_path):
    base = torch.randn(2 * N)
    facts = inspect(save({"every_other": base[::2]}, tmp_path / "s.pt"))  # the whole storage is saved
    assert facts.num_float_elements == N and facts.other_bytes >= 4 * N
    q = torch.quantize_per_tensor(torch.randn(N), 0.1, 0, torch.qint8)  # no plain tensor: only bytes
    facts = inspect(save({"q": q, "scale": torch.ones(())}, tmp_path / "q.pt"))
    assert facts.num_float_elements == 1 and facts.other_bytes >= N
    sparse = torch.randn(64, 64).relu().to_sparse()  # values float, indices int64 (16 B each)
    facts = inspect(save({"s": sparse}, tmp_path / "sp.pt"))
    nnz = sparse._nnz()
    assert facts.num_float_elements == nnz and facts.other_bytes >= 16 * nnz


def test_every_byte_of_the_file_counts_not_only_its_records(tmp_path):
    """The model's own code in the runner may open the file and read any byte of it: a record
    the pickle never names, or bytes after the zip's end, which torch's reader ignores."""
    path = save(Plain(torch.randn(16)), tmp_path / "m.pt")
    before = inspect(path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("archive/notes", bytes(16 << 10))
    with open(path, "ab") as f:
        f.write(bytes(8 << 10))
    after = inspect(path)
    assert after.other_bytes - before.other_bytes == after.bytes - before.bytes >= 24 << 10
    assert after.num_weights - before.num_weights >= 12 << 10
    assert torch.load(path, weights_only=False).w.shape == (16,)  # control: torch still reads the file


def test_the_source_counts_half_a_weight_a_byte(tmp_path):
    path = save(Plain(torch.randn(16)), tmp_path / "m.pt")
    src = tmp_path / "train.py"
    src.write_text("W = " + repr(list(range(3000))) + "\n")  # weights as literals
    facts = inspect(path, source=src)
    assert facts.source_bytes == src.stat().st_size
    assert facts.num_weights == 16 + byte_weights(facts.other_bytes + facts.source_bytes)
    assert facts.num_weights - inspect(path).num_weights >= src.stat().st_size // 2
    (tmp_path / "adir").mkdir()
    for bad in ("missing.py", "adir"):
        with pytest.raises(ModelFileError):
            inspect(path, source=tmp_path / bad)


@pytest.mark.parametrize("kind", ["gpt", "gpt-bf16", "bits", "blob"])
def test_train_pys_side_counts_what_the_harness_counts(agent, tmp_path, kind):  # noqa: F811
    """prepare.model_flops_per_token (trainer/weights.py) on the live model = 6 x the harness's
    count of the file evaluate_bpb hands over: an honest declaration is never refused."""
    w = torch.randn(N)
    model = {"gpt": lambda: agent.GPT(), "gpt-bf16": lambda: agent.GPT().to(torch.bfloat16),
             "bits": lambda: Bits(w), "blob": lambda: Blob(w)}[kind]()
    src = tmp_path / "train.py"
    src.write_text("# the script\n" * 500)
    live = weights.count(model, source=src)
    from trainer import prepare

    assert prepare.model_flops_per_token(model, source=src) == 6.0 * live
    out = tmp_path / "model.pt"
    os.environ[prepare.ENV_HANDOVER] = str(out)
    try:
        prepare.evaluate_bpb(model, None, 4)  # no feed here: it only saves
    finally:
        del os.environ[prepare.ENV_HANDOVER]
    forget(agent)
    assert inspect(out, source=src).num_weights == live


def test_train_pys_side_counts_the_running_script_by_default(monkeypatch, tmp_path):
    import sys
    import types

    script = tmp_path / "train.py"
    script.write_text("x = 1\n" * 1000)  # 6000 bytes
    model = Plain(torch.randn(16))
    file_other = weights.saved_bytes(model) - 16 * 4  # all but the parameter's 64 bytes
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__file__=str(script)))
    assert weights.count(model) == 16 + byte_weights(file_other + 6000)
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace())  # `python -c`: no script
    assert weights.count(model) == 16 + byte_weights(file_other)
