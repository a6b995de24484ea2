"""Tests for backends/: the CPU backend for real, CUDA/ROCm/MPS with torch stubbed at
its boundary (torch.cuda.*, torch.version.hip, torch.backends.mps), attention against
a float64 reference, and one real-device test per GPU backend (marked gpu, skipped
without one). Run: python -m pytest tests/test_backends.py -q
"""
import contextlib
import importlib
import os
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import backends  # noqa: E402
from backends import _common, cpu, cuda, mps, peak_flops, rocm  # noqa: E402

attn = importlib.import_module("backends.attention")  # the module; backends.attention is the function
ENV_VARS = (backends.ENV_BACKEND, backends.ENV_THREADS, cpu.ENV_DTYPE)
AVX2_ONLY = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx avx2 fma\n"
AVX512_BF16 = "model name\t: Intel Xeon\nflags\t\t: avx2 avx512f avx512_bf16\n"
AMX = "model name\t: Intel Xeon Platinum 8480+\nflags\t\t: avx2 amx_tile amx_bf16 amx_int8\n"


@pytest.fixture(autouse=True)
def clean_state():
    """Each test starts with no active backend and none of our env vars; restores torch."""
    saved = {k: os.environ.pop(k, None) for k in ENV_VARS}
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    backends._reset()
    attn._impl_by_backend.clear()
    yield
    backends._reset()
    attn._impl_by_backend.clear()
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision(precision)
    for k, v in saved.items():
        os.environ.pop(k, None)
        if v is not None:
            os.environ[k] = v


def stub(monkeypatch, *, cuda_ok=False, hip=None, mps_ok=False, cap=(9, 0),
         name="NVIDIA H100 80GB HBM3"):
    """Pretend torch sees the given hardware (only at torch's boundary)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_ok)
    monkeypatch.setattr(torch.version, "hip", hip)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cap)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if cuda_ok else 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps_ok)


# ---------------------------------------------------------------- cpuinfo / CPU

def test_cpuinfo_flag_parsing():
    assert not _common.has_fast_bf16(AVX2_ONLY)
    assert "avx2" in _common.cpu_flags(AVX2_ONLY)
    assert _common.has_fast_bf16(AVX512_BF16) and _common.has_fast_bf16(AMX)
    assert not _common.has_fast_bf16("") and not _common.has_fast_bf16("flags : avx512f amx_tile")
    assert "bf16" in _common.cpu_flags("Features\t: fp asimd bf16 sve\n")  # ARM spelling
    assert _common.cpu_model_name(AVX2_ONLY) == "AMD EPYC 7B13"
    assert _common.cpu_model_name("flags : avx2") is None


@pytest.mark.parametrize("text, expected", [(AVX2_ONLY, torch.float32),
                                            (AVX512_BF16, torch.bfloat16),
                                            (AMX, torch.bfloat16), ("", torch.float32)])
def test_cpu_dtype_follows_flags(monkeypatch, text, expected):
    monkeypatch.setattr(_common, "read_cpuinfo", lambda: text)
    assert cpu.compute_dtype() == expected
    monkeypatch.setenv(cpu.ENV_DTYPE, "fp32")  # the override beats the flags
    assert cpu.compute_dtype() == torch.float32
    monkeypatch.setenv(cpu.ENV_DTYPE, "BF16")
    assert cpu.compute_dtype() == torch.bfloat16


def test_cpu_dtype_override_rejects_nonsense(monkeypatch):
    monkeypatch.setenv(cpu.ENV_DTYPE, "fp8")
    with pytest.raises(ValueError, match="AUTORESEARCH_CPU_DTYPE"):
        cpu.compute_dtype()


def test_cpu_real_machine():
    expected = torch.bfloat16 if _common.has_fast_bf16(_common.read_cpuinfo()) else torch.float32
    assert cpu.is_available() and cpu.device() == torch.device("cpu")
    assert cpu.compute_dtype() == expected
    assert cpu.grad_scaler() is None and cpu.synchronize() is None and cpu.peak_flops("bf16") is None
    assert (cpu.pin_memory(), cpu.triton_available(), cpu.attention_impl()) == (False, False, "sdpa")
    name = _common.cpu_model_name(_common.read_cpuinfo())
    assert cpu.device_name() == (name or cpu.device_name()) and cpu.device_name()


def test_cpu_autocast(monkeypatch):
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    monkeypatch.setenv(cpu.ENV_DTYPE, "fp32")
    assert isinstance(cpu.autocast(), contextlib.nullcontext)
    with cpu.autocast():
        assert (a @ b).dtype == torch.float32
    monkeypatch.setenv(cpu.ENV_DTYPE, "bf16")
    with cpu.autocast():
        assert (a @ b).dtype == torch.bfloat16


def test_cpu_memory():
    current = cpu.memory_allocated()
    assert current > 0 and cpu.max_memory_allocated() >= current
    x = torch.ones(2**23)  # 32 MiB, pages touched
    during = cpu.memory_allocated()
    del x
    assert cpu.max_memory_allocated() >= during  # peak survives the free
    cpu.reset_peak_memory()
    assert cpu.max_memory_allocated() >= cpu.memory_allocated() > 0


def test_cpu_fingerprint_and_setup():
    cpu.setup(threads=1)
    cpu.setup(threads=1)  # idempotent
    assert torch.get_num_threads() == 1
    fp = cpu.fingerprint()
    assert {"backend", "device_name", "device_count", "driver", "runtime", "torch", "triton",
            "compute_dtype", "threads", "logical_cores"} <= fp.keys()
    assert (fp["backend"], fp["threads"], fp["torch"]) == ("cpu", 1, torch.__version__)
    assert fp["compute_dtype"] in ("fp32", "bf16") and fp["logical_cores"] == os.cpu_count()
    with pytest.raises(ValueError):
        cpu.setup(threads=0)


def test_cpu_compile_needs_a_compiler(monkeypatch):
    monkeypatch.setattr(_common, "cxx_compiler", lambda: None)
    assert cpu.compile_available() is False
    monkeypatch.setattr(_common, "cxx_compiler", lambda: "/usr/bin/c++")
    assert cpu.compile_available() is True


# ---------------------------------------------------------------- stubbed GPUs

def test_cuda_turing_is_fp16_with_scaler(monkeypatch):
    stub(monkeypatch, cuda_ok=True, cap=(7, 5), name="Tesla T4")
    assert cuda.is_available() and not rocm.is_available()
    assert cuda.compute_dtype() == torch.float16
    assert isinstance(cuda.grad_scaler(), torch.amp.GradScaler)
    ac = cuda.autocast()
    assert isinstance(ac, torch.autocast) and ac.fast_dtype == torch.float16
    assert cuda.peak_flops(torch.float16) == 65e12 and cuda.peak_flops(torch.bfloat16) is None


def test_cuda_hopper_is_bf16_with_peak(monkeypatch):
    stub(monkeypatch, cuda_ok=True, cap=(9, 0))
    assert cuda.compute_dtype() == torch.bfloat16 and cuda.grad_scaler() is None
    assert cuda.device_name() == "NVIDIA H100 80GB HBM3"
    assert cuda.peak_flops(torch.bfloat16) == pytest.approx(989.4e12)
    cuda.setup()  # "high" precision: fp32 matmuls run as TF32
    assert cuda.peak_flops(torch.float32) == pytest.approx(494.7e12)
    assert cuda.fingerprint()["capability"] == "9.0" and cuda.pin_memory()
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA Future X1")
    assert cuda.peak_flops(torch.bfloat16) is None  # unknown device: no guess


def test_cuda_attention_impl_and_triton(monkeypatch):
    stub(monkeypatch, cuda_ok=True, cap=(9, 0))
    monkeypatch.setitem(sys.modules, "flash_attn_interface", None)  # import fails
    assert cuda.attention_impl() == "sdpa"
    monkeypatch.setitem(sys.modules, "flash_attn_interface", types.ModuleType("fai"))
    assert cuda.attention_impl() == "fa3"
    stub(monkeypatch, cuda_ok=True, cap=(8, 0))
    assert cuda.attention_impl() == "sdpa"  # FA3 is Hopper-only
    monkeypatch.setattr(_common, "triton_driver_active", lambda: True)
    monkeypatch.setattr(_common, "importable", lambda m: m == "triton")
    assert cuda.triton_available() and cuda.compile_available()


def test_rocm_detected_through_hip(monkeypatch):
    stub(monkeypatch, cuda_ok=True, hip="6.2", name="AMD Instinct MI300X")
    assert rocm.is_available() and not cuda.is_available()
    assert "ROCm" in cuda.unavailable_reason()
    assert rocm.compute_dtype() == torch.bfloat16 and rocm.grad_scaler() is None
    assert rocm.peak_flops("bf16") == pytest.approx(1307.4e12)
    assert rocm.attention_impl() == "sdpa" and rocm.device() == torch.device("cuda")
    assert rocm.fingerprint()["runtime"] == "HIP 6.2"
    with pytest.raises(RuntimeError, match="ROCm"):
        backends.get("cuda")


def test_mps_stubbed(monkeypatch):
    stub(monkeypatch, mps_ok=True)
    monkeypatch.setattr(_common, "sysctl", lambda name: "Apple M3 Max")
    monkeypatch.setattr(mps, "macos_version", lambda: (14, 5))
    assert mps.is_available() and mps.device() == torch.device("mps")
    assert mps.compute_dtype() == torch.bfloat16
    monkeypatch.setattr(mps, "macos_version", lambda: (13, 6))
    assert mps.compute_dtype() == torch.float32
    assert isinstance(mps.autocast(), contextlib.nullcontext)
    assert mps.device_name() == "Apple M3 Max" and mps.peak_flops("bf16") is None
    assert not (mps.compile_available() or mps.triton_available() or mps.pin_memory())


@pytest.mark.parametrize("cuda_ok, hip, mps_ok, expected", [
    (True, None, True, "cuda"), (True, "6.2", True, "rocm"),
    (False, None, True, "mps"), (False, None, False, "cpu")])
def test_auto_order(monkeypatch, cuda_ok, hip, mps_ok, expected):
    stub(monkeypatch, cuda_ok=cuda_ok, hip=hip, mps_ok=mps_ok)
    assert backends.get("auto").NAME == expected


def test_get_errors(monkeypatch):
    with pytest.raises(ValueError) as err:
        backends.get("tpu")
    assert all(n in str(err.value) for n in ("auto",) + backends.NAMES)
    assert backends.get(" CPU ") is cpu
    stub(monkeypatch)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(RuntimeError, match=r"'cuda' requested but torch.cuda.is_available\(\) is False"):
        backends.get("cuda")
    with pytest.raises(RuntimeError, match="mps"):
        backends.get("mps")


def test_activate_exports_choice(monkeypatch):
    stub(monkeypatch)  # no GPU, even on a GPU machine
    b = backends.activate("auto", threads=1)
    assert b is cpu and backends.current() is cpu and torch.get_num_threads() == 1
    assert os.environ[backends.ENV_BACKEND] == "cpu" and os.environ[backends.ENV_THREADS] == "1"
    backends.activate("cpu")
    assert backends.ENV_THREADS not in os.environ
    backends._reset()
    torch.set_num_threads(2)
    monkeypatch.setenv(backends.ENV_THREADS, "1")
    assert backends.current() is cpu and torch.get_num_threads() == 1  # read from the env
    backends._reset()
    monkeypatch.setenv(backends.ENV_THREADS, "many")
    with pytest.raises(ValueError, match="AUTORESEARCH_THREADS"):
        backends.current()


# ---------------------------------------------------------------- peak table

@pytest.mark.parametrize("name, dtype, expected", [
    ("NVIDIA H100 PCIe", "bf16", 756e12), ("NVIDIA H100 NVL", "bf16", 835.5e12),
    ("NVIDIA H100 80GB HBM3", torch.float16, 989.4e12), ("NVIDIA GH200 480GB", "bf16", 989.4e12),
    ("NVIDIA H200", "bf16", 989.4e12), ("NVIDIA A100-SXM4-80GB", "bfloat16", 312e12),
    ("NVIDIA A10", "bf16", 125e12), ("NVIDIA A10G", "bf16", None), ("NVIDIA L4", "fp32", 30.3e12),
    ("NVIDIA L40S", "bf16", 362.05e12), ("NVIDIA L40", "bf16", None),
    ("NVIDIA GeForce RTX 4090", "bf16", 165.2e12), ("NVIDIA GeForce RTX 4090 D", "bf16", None),
    ("Tesla V100-SXM2-16GB", "fp16", 125e12), ("Tesla V100-SXM2-16GB", "bf16", None),
    ("AMD Instinct MI250X", "tf32", None), ("AMD Instinct MI210", "bf16", 181e12),
    ("Apple M3 Max", "bf16", None), ("NVIDIA H100 80GB HBM3", "int8", None)])
def test_peak_table(name, dtype, expected):
    got = peak_flops.lookup(name, dtype)
    assert got == (pytest.approx(expected) if expected else None)


# ---------------------------------------------------------------- attention

def reference_attention(q, k, v, window):
    """Explicit masked softmax in float64; (B, H, T, D) -> (B, H, T, D)."""
    q, k, v = (t.double() for t in (q, k, v))
    T = q.size(-2)
    i, j = torch.arange(T).unsqueeze(1), torch.arange(T).unsqueeze(0)
    allowed = (j <= i) & ((j > i - window) if window else True)
    scores = (q @ k.transpose(-1, -2)) / q.size(-1) ** 0.5
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v


def qkv(T=13, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, T, 8, generator=g) for _ in range(3)]


@pytest.mark.parametrize("window", [None, 1, 4, 13, 50])
def test_attention_matches_reference(window):
    q, k, v = qkv()
    out = backends.attention(q, k, v, window=window)
    torch.testing.assert_close(out.double(), reference_attention(q, k, v, window),
                               atol=1e-5, rtol=1e-5)
    if window is None or window >= 13:
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))


@pytest.mark.parametrize("window", [None, 4])
def test_attention_is_causal(window):
    q, k, v = qkv()
    t = 7
    k2, v2 = k.clone(), v.clone()
    k2[:, :, t:], v2[:, :, t:] = 100.0, -100.0  # change the future only
    a, b = backends.attention(q, k, v, window), backends.attention(q, k2, v2, window)
    torch.testing.assert_close(a[:, :, :t], b[:, :, :t], atol=0, rtol=0)
    assert not torch.allclose(a[:, :, t:], b[:, :, t:])


def test_mask_is_cached_and_inputs_checked():
    attn.sliding_window_mask.cache_clear()
    q, k, v = qkv()
    backends.attention(q, k, v, 4)
    backends.attention(q, k, v, 4)
    assert attn.sliding_window_mask.cache_info().hits >= 1
    assert attn.sliding_window_mask(13, 4, q.device) is attn.sliding_window_mask(13, 4, q.device)
    assert backends._active is None  # CPU tensors never activate a backend
    with pytest.raises(ValueError):
        backends.attention(q, k, v, 0)
    with pytest.raises(ValueError):
        backends.attention(q, k[:, :, :5], v[:, :, :5])


@pytest.mark.parametrize("window, left", [(None, -1), (4, 3)])
def test_fa3_branch_layout(monkeypatch, window, left):
    seen = {}

    def fake_fa3(q, k, v, causal, window_size):  # FA3 semantics, (B, T, H, D) layout
        seen.update(shape=tuple(q.shape), causal=causal, window_size=window_size)
        w = None if window_size[0] < 0 else window_size[0] + 1
        out = reference_attention(*(t.transpose(1, 2) for t in (q, k, v)), w)
        return out.transpose(1, 2).float(), None

    monkeypatch.setitem(sys.modules, "flash_attn_interface",
                        types.SimpleNamespace(flash_attn_func=fake_fa3))
    q, k, v = qkv()
    out = attn._fa3(q, k, v, window)
    assert seen == {"shape": (2, 13, 3, 8), "causal": True, "window_size": (left, 0)}
    torch.testing.assert_close(out, backends.attention(q, k, v, window), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- real GPUs

@pytest.mark.gpu
@pytest.mark.parametrize("name", ["cuda", "rocm", "mps"])
def test_real_gpu_matmul_and_attention(name):
    backend = backends._module(name)
    if not backend.is_available():
        pytest.skip(f"no {name} device")
    backend.setup()
    a, b = torch.randn(64, 64, device=backend.device()), torch.randn(64, 64, device=backend.device())
    with backend.autocast():
        c = a @ b
    backend.synchronize()
    if backend.compute_dtype() != torch.float32:
        assert c.dtype == backend.compute_dtype()
    torch.testing.assert_close(c.float().cpu(), a.cpu() @ b.cpu(), atol=0.5, rtol=0.05)
    assert backend.max_memory_allocated() >= backend.memory_allocated() > 0
    assert backend.device_name() and backend.fingerprint()["device_count"] >= 1
    q, k, v = (t.to(backend.device()) for t in qkv())
    torch.testing.assert_close(backends.attention(q, k, v, 4).cpu().double(),
                               reference_attention(*qkv(), 4), atol=1e-2, rtol=1e-2)  # TF32
