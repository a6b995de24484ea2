"""Datasheet peak FLOP/s per device and dtype, for MFU.

Dense figures only (the "with sparsity" numbers halved). Rows are matched in
order against the name the driver reports (torch.cuda.get_device_name()), so a
specific variant ("H100 PCIe", "H100 NVL", "GH200") comes before the generic
name it contains. The first matching row decides: a dtype missing from it is
unknown (None), it never falls through to another row. Unknown devices, Apple
chips and CPUs are not here on purpose: MFU is then "n/a", never a guess.

Keys: "bf16", "fp16" (tensor cores, fp32 accumulate), "tf32", and "fp32" (for
NVIDIA the non-tensor CUDA-core rate; for AMD the fp32 matrix-core rate, what
an fp32 GEMM can reach).
"""
from __future__ import annotations

import re

import torch

T = 1e12  # FLOP/s per TFLOP/s


def _row(pattern: str, **flops: float) -> tuple[re.Pattern[str], dict[str, float]]:
    return re.compile(pattern, re.IGNORECASE), {k: v * T for k, v in flops.items()}


# (name pattern, {dtype: FLOP/s}); order matters, see the module docstring.
TABLE: tuple[tuple[re.Pattern[str], dict[str, float]], ...] = (
    # NVIDIA H100 datasheet, PCIe column (sparse 1513/756 halved); whitepaper 756 dense.
    _row(r"\bH100\b.*\bPCIe\b", bf16=756, fp16=756, tf32=378, fp32=51.2),
    # NVIDIA H100 datasheet (2024 rev.), NVL column: 1671 bf16 / 835 tf32 sparse, fp32 60.
    _row(r"\bH100\b.*\bNVL\b", bf16=835.5, fp16=835.5, tf32=417.5, fp32=60),
    # NVIDIA H100 SXM5 (whitepaper: 528 tensor cores x 1830 MHz): "NVIDIA H100 80GB HBM3".
    _row(r"\bH100\b", bf16=989.4, fp16=989.4, tf32=494.7, fp32=66.9),
    # NVIDIA GH200 datasheet: same Hopper GPU and clocks as H100 SXM (990 / 1979 sparse).
    # (\b keeps "GH200" from matching the H200 rows below.)
    _row(r"\bGH200\b", bf16=989.4, fp16=989.4, tf32=494.7, fp32=66.9),
    # NVIDIA H200 datasheet, NVL column: 1671 bf16 / 835 tf32 sparse, fp32 60.
    _row(r"\bH200\b.*\bNVL\b", bf16=835.5, fp16=835.5, tf32=417.5, fp32=60),
    # NVIDIA H200 datasheet, SXM column: 1979 bf16 / 989 tf32 sparse (H100 SXM compute).
    _row(r"\bH200\b", bf16=989.4, fp16=989.4, tf32=494.7, fp32=66.9),
    # NVIDIA A100 datasheet (SXM4 and PCIe alike): 312 bf16/fp16, 156 tf32, 19.5 fp32.
    _row(r"\bA100\b", bf16=312, fp16=312, tf32=156, fp32=19.5),
    # NVIDIA A10 datasheet: 125 bf16/fp16 (250 sparse), 62.5 tf32, 31.2 fp32.
    # The AWS-only A10G has other clocks and no public datasheet: left out (\b stops
    # "A10G" matching here).
    _row(r"\bA10\b", bf16=125, fp16=125, tf32=62.5, fp32=31.2),
    # NVIDIA L40S datasheet: 362.05 bf16/fp16 (733 sparse), 183 tf32, 91.6 fp32.
    _row(r"\bL40S\b", bf16=362.05, fp16=362.05, tf32=183, fp32=91.6),
    # NVIDIA L4 datasheet: 242 bf16/fp16 and 120 tf32 sparse; 30.3 fp32.
    _row(r"\bL4\b", bf16=121, fp16=121, tf32=60, fp32=30.3),
    # NVIDIA Ada whitepaper, GeForce RTX 4090 (fp32 accumulate: half the fp16-acc rate).
    # Anchored at the end so "4090 D" / "Laptop GPU" variants stay unknown.
    _row(r"\bRTX 4090\s*$", bf16=165.2, fp16=165.2, tf32=82.6, fp32=82.6),
    # NVIDIA GA102 whitepaper, GeForce RTX 3090 (fp32 accumulate); not the 3090 Ti.
    _row(r"\bRTX 3090\s*$", bf16=71, fp16=71, tf32=35.6, fp32=35.6),
    # NVIDIA V100 datasheet: V100S PCIe 130/16.4, V100 PCIe 112/14, V100 SXM2 125/15.7.
    # Volta has no bf16 and no tf32. Other V100 variants (SXM3, FHHL) stay unknown.
    _row(r"\bV100S\b", fp16=130, fp32=16.4),
    _row(r"\bV100-PCIE\b", fp16=112, fp32=14),
    _row(r"\bV100-SXM2\b", fp16=125, fp32=15.7),
    # NVIDIA T4 datasheet: 65 mixed fp16/fp32, 8.1 fp32; no bf16/tf32 on Turing.
    _row(r"\bT4\b", fp16=65, fp32=8.1),
    # AMD Instinct MI325X datasheet: same compute as MI300X.
    _row(r"\bMI325X\b", bf16=1307.4, fp16=1307.4, tf32=653.7, fp32=163.4),
    # AMD Instinct MI300X datasheet: 1307.4 bf16/fp16, 653.7 tf32, 163.4 fp32 matrix.
    _row(r"\bMI300X\b", bf16=1307.4, fp16=1307.4, tf32=653.7, fp32=163.4),
    # AMD Instinct MI250X datasheet: 383 bf16/fp16, 95.7 fp32 matrix; no tf32 (CDNA2).
    _row(r"\bMI250X\b", bf16=383, fp16=383, fp32=95.7),
    # AMD Instinct MI210 datasheet: 181 bf16/fp16, 45.3 fp32 matrix.
    _row(r"\bMI210\b", bf16=181, fp16=181, fp32=45.3),
)

_DTYPE_KEYS = {
    torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32",
    "bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16",
    "half": "fp16", "fp32": "fp32", "float32": "fp32", "float": "fp32", "tf32": "tf32",
}


def dtype_key(dtype: torch.dtype | str) -> str | None:
    """Table key for a torch dtype or a name ("bf16", "bfloat16", "tf32", ...)."""
    if isinstance(dtype, str):
        dtype = dtype.strip().lower().removeprefix("torch.")
    return _DTYPE_KEYS.get(dtype)


def lookup(device_name: str, dtype: torch.dtype | str, allow_tf32: bool = False) -> float | None:
    """Dense peak FLOP/s of one device in this dtype, or None when not known.

    allow_tf32: fp32 matmuls run on TF32 tensor cores (torch's "high" matmul
    precision), so fp32 takes the device's tf32 figure where it has one.
    """
    key = dtype_key(dtype)
    if key is None or not device_name:
        return None
    for pattern, flops in TABLE:
        if pattern.search(device_name):
            if key == "fp32" and allow_tf32 and "tf32" in flops:
                key = "tf32"
            return flops.get(key)  # first match decides, even when it lacks this dtype
    return None
