"""Launch settings shared by the row-wise Triton kernels (rms_norm, rotary).

One configuration per shape, chosen by arithmetic rather than `@triton.autotune`:
autotuning with several configs breaks under Triton's CPU interpreter, and a row-wise
kernel is memory-bound, so one sensible tile is within noise of the best one.

Every kernel here works on a 2-D tile of BLOCK_ROWS rows x BLOCK_COLS columns. The
two places it runs want very different tiles:

- on a GPU, a tile of about 2048 elements with 8 elements per lane (8 warps of 32
  lanes) keeps the backward's live values (x, dy, their products, the 64-bit addresses)
  in registers; measured with cuobjdump on sm_90, 32 elements per lane took the rotary
  kernels to 200-254 registers, one block per multiprocessor. A small row still gets
  many rows per program, so a (B*T*H, 128) head tensor is not one tiny program per row;
- under the interpreter (`TRITON_INTERPRET=1`), program instances run one after
  another in Python and every tile operation is one numpy call, so the cost is the
  number of programs: a row-wise norm over 4096 x 768 took 12.9 s with one row per
  program and 0.45 s with 256. There the tile is as large as numpy handles well.
"""
import os

import torch
import triton

# Read once, at import: the interpreter also decides, at decoration time, whether the
# kernels below are compiled or interpreted, so the two cannot disagree later.
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

GPU_TILE = 2048  # elements per program on a GPU
LANE_SHARE = 8  # elements per lane on a GPU
INTERPRET_TILE = 1 << 17  # elements per program under the interpreter (numpy arrays of 512 KiB)
# A row must fit in one program. Past 8192 columns (32 elements per lane) the backward
# spills registers: slower, still correct; past this it would be too slow to be worth it.
MAX_COLS = 1 << 16


def check_device(x: torch.Tensor, name: str) -> None:
    """Fail with a sentence rather than Triton's pointer error when x cannot run here."""
    if INTERPRET:
        if x.device.type != "cpu":
            raise ValueError(f"{name}: TRITON_INTERPRET=1 runs on CPU tensors, got {x.device}")
    elif x.device.type != "cuda":  # ROCm tensors report "cuda" too
        raise ValueError(f"{name}: Triton needs a CUDA/ROCm tensor (or TRITON_INTERPRET=1 with a CPU "
                         f"tensor), got {x.device}")


def block_cols(n_cols: int, name: str) -> int:
    if n_cols > MAX_COLS:
        raise ValueError(f"{name}: rows of {n_cols} elements exceed the {MAX_COLS} one program holds")
    return triton.next_power_of_2(n_cols)


def block_rows(cols: int, n_rows: int) -> int:
    """Rows per program for a tile `cols` elements wide (a power of two, so the result is one too)."""
    if INTERPRET:
        # Padding rows cost numpy work here, so a small input gets a tile its own size.
        return max(1, min(INTERPRET_TILE // cols, triton.next_power_of_2(max(n_rows, 1))))
    # On a GPU the value depends on the width only: one compiled kernel per width.
    return max(1, GPU_TILE // cols)


def num_warps(tile: int, lanes: int | None = None) -> int:
    """Warps for a tile of `tile` elements: LANE_SHARE elements per lane, 1 to 8 warps.

    An AMD CDNA wavefront has 64 lanes, so the same share per lane takes half as many.
    `lanes` overrides this machine's warp width (to compile for another target).
    """
    lanes = lanes or (64 if torch.version.hip else 32)
    return max(1, min(8, tile // (LANE_SHARE * lanes)))


def persistent_programs(x: torch.Tensor, n_blocks: int) -> int:
    """How many programs a persistent kernel (one looping over row blocks) launches.

    On a GPU: about two per multiprocessor, enough to fill it, few enough that per-program
    partial sums stay small. Under the interpreter the loop and the grid cost the same,
    so every block gets its own program.
    """
    if INTERPRET or x.device.type != "cuda":
        return max(1, n_blocks)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    return max(1, min(n_blocks, 2 * sms))
