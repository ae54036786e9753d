#!/usr/bin/env bash
# GPU verification of the feedback-SNN ops (ttfs_ext.spide) in one call (< 10 min on an H100/H200):
# CUDA build for Hopper (sm_90), the spide tests (CUDA kernels against the reference included),
# the registration and raw-op tests, then the iteration benchmark on CUDA, with the T-step
# forward and the T_b-step backward loop also captured as CUDA graphs. Logs and JSON go to
# $OUT (the device tool's output folder) or benchmarks/results/.
set -uo pipefail
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nvcc --version | tail -1
  TORCH_CUDA_ARCH_LIST="9.0" TTFS_CUDA=ON pip install --no-build-isolation -v . 2>&1 \
    | grep -E "ttfs_ext:|error|Successfully installed"
  ttfs info
  python -m pytest -q -rs tests/test_spide.py tests/test_spike_conv.py tests/test_registration.py tests/test_raw_ops.py
} 2>&1 | tee "$out/gpu_spide_tests.log"
# Batch 128 (the papers'), ConvNet-F and AlexNet-F; eager kernels vs the reference loop, then
# the forward and the T_b loop each as a CUDA graph (kernel path) against eager launches.
python benchmarks/bench_spide.py --device cuda --batch 128 --repeats 5 --cuda-graphs --threads 0 \
  --out "$out/spide_cuda.json" 2>&1 | tee "$out/spide_cuda.log"
