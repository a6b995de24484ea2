#!/usr/bin/env bash
# GPU checks in one pass, for a lent CUDA machine (figures and logs go to $OUT):
#   1. the GPU-marked tests, the FlashAttention stand-in's, the kernels' and telemetry's tests;
#   2. `kernels check` on the GPU (every Triton kernel against its reference, compiled);
#   3. `kernels bench` at the reference preset's shapes (262,144 tokens, vocab 8192): time
#      vs eager and torch.compile, peak memory; the CSV goes to $OUT/kernel_bench.csv;
#   4. calibration of model=reference (sandbox self-test with a Triton kernel, the frozen
#      baseline trained as an experiment trains it: compile, feed throughput);
#   5. one normalized experiment of the reference preset (budget.reference_seconds=30), with its
#      telemetry (NVML: energy, power, clocks, throttling);
#   6. with WITH_UPSTREAM=1: the upstream-shaped script (tests/upstream_shape/train.py)
#      with its device lines made CUDA's: torch.compile in the sandbox, kernels.get_kernel.
# Under 8 minutes on an H200 (each step has its own timeout); runs on the machine's own
# torch/triton (older than the local pins: torch 2.11, triton 3.6 work).
# A machine without this project's dependencies takes them from .gpu/ (wheels in
# .gpu/wheels, pure-Python packages in .gpu/pure, a prepared data cache in .gpu/cache)
# when present.
#   OUT=/tmp/gpu-out bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
step() { echo; echo "=== $* ($(date +%T))"; }
PY=${PY:-python3}

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
if [ -d .gpu/cache ]; then  # a prepared data cache (the builtin corpus package is 11 MB)
  mkdir -p ~/.cache/autoresearch && cp -r .gpu/cache/* ~/.cache/autoresearch/
fi
if [ -d .gpu/wheels ]; then
  $PY -m pip install --quiet --no-deps .gpu/wheels/*.whl 2>&1 | tail -2
  export PYTHONPATH="$PWD/.gpu/pure:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

[ -n "${SKIP_TESTS:-}" ] || {
step "tests (gpu-marked, FlashAttention stand-in, sandbox)"
timeout 150 $PY -m pytest -q -p no:cacheprovider -m "not slow" tests/test_backends.py \
  tests/test_upstream_shape.py tests/test_sandbox.py tests/test_kernel_dispatch.py \
  tests/test_kernel_norm_rotary.py tests/test_kernel_lce.py tests/test_telemetry.py 2>&1 | tail -15
echo "tests rc=${PIPESTATUS[0]}"
}

step "kernels check backend=cuda (compiled Triton kernels against the references)"
timeout 120 $PY -m harness kernels check backend=cuda 2>&1 | tee "$OUT/kernels-check.txt" | tail -15
echo "kernels check rc=${PIPESTATUS[0]}"

step "kernels bench backend=cuda model=reference (eager, torch.compile, Triton; peak memory)"
timeout 180 $PY -m harness kernels bench backend=cuda model=reference kernels.csv="$OUT/kernel_bench.csv" \
  2>&1 | tail -14
echo "kernels bench rc=${PIPESTATUS[0]}"

step "calibrate backend=cuda model=reference"
timeout 150 $PY -m harness calibrate backend=cuda model=reference calibrate.force=true \
  calibrate.out="$OUT/calibration-h200-reference.json"
echo "calibrate rc=$?"

step "experiment backend=cuda model=reference budget.reference_seconds=30 (normalized)"
timeout 150 $PY -m harness experiment backend=cuda model=reference budget.reference_seconds=30 \
  budget.min_seconds=5 quiet=true hydra.run.dir=/tmp/exp-ref
echo "experiment rc=$?"
cp /tmp/exp-ref/summary.json "$OUT/experiment-reference.json" 2>/dev/null
$PY -c "import json; t = json.load(open('/tmp/exp-ref/summary.json')).get('telemetry'); print(json.dumps(t, indent=1))" \
  2>&1 | head -40  # NVML for real: energy, power, clocks, throttle reasons

[ -n "${WITH_UPSTREAM:-}" ] && {
step "upstream-shaped script on CUDA (device lines changed), model=tiny data"
sed -e 's/torch.device("cpu")/torch.device("cuda")/' \
    -e 's/autocast(device_type="cpu", dtype=torch.bfloat16, enabled=False)/autocast(device_type="cuda", dtype=torch.bfloat16)/' \
    tests/upstream_shape/train.py > /tmp/upstream_cuda_train.py
grep -n 'device(\|autocast(' /tmp/upstream_cuda_train.py | head -4
timeout 110 $PY -m harness experiment backend=cuda model=tiny train_file=/tmp/upstream_cuda_train.py \
  budget.mode=wall budget.seconds=15 budget.allowance_seconds=120 quiet=true hydra.run.dir=/tmp/exp-up
echo "upstream-shaped rc=$?"
cp /tmp/exp-up/summary.json "$OUT/experiment-upstream-shape.json" 2>/dev/null
tail -c 3000 /tmp/exp-up/train.log > "$OUT/upstream-shape-train-log-tail.txt" 2>/dev/null
}
step "done"
