#!/usr/bin/env bash
# GPU verification of the few-spikes neurons (issue 18) in one call (< 10 min on an H100/H200
# box): CUDA build for sm_90, the fs tests on CUDA (and the registration tests), then the
# activation benchmark on cuda at 1M-100M elements (GB/s against the device's copy bandwidth)
# and the converted CNN. Logs and JSON go to $OUT (the device tool's output folder) or
# benchmarks/results/.
set -uo pipefail
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nvcc --version | tail -1
  TORCH_CUDA_ARCH_LIST="9.0" TTFS_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16} \
    pip install --no-build-isolation -v . 2>&1 | grep -E "ttfs_ext:|error|Successfully installed"
  ttfs info
  python -m pytest -q -rs tests/test_fs.py tests/test_registration.py
} 2>&1 | tee "$out/gpu_fs_tests.log"
(cd benchmarks && python bench_fs.py --device cuda --sizes 1e6,1e7,1e8 --ks 10,12,16 --cycles 7 \
   --max-eager 1e8 --max-backward 1e8 --memory-budget 6e10 --out "$out/fs_cuda.json") 2>&1 | tee "$out/fs_cuda.log"
