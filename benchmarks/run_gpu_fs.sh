#!/usr/bin/env bash
# GPU verification of the few-spikes neurons (issue 18) in one call (about 8 min on an H200
# box): CUDA build for sm_90 (stops here if it fails or has no CUDA kernels), the fs tests on
# CUDA (and the registration tests), then the activation benchmark on cuda at 1M-100M elements
# (GB/s against the device's copy bandwidth; the loop compiled at 100M only, since every size
# and K compiles anew) and the converted CNN. Logs and JSON go to $OUT (the device tool's output
# folder) or benchmarks/results/; then `python benchmarks/fs_readme.py --device cuda`.
set -uo pipefail
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
log="$out/gpu_fs_tests.log"
{
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  nvcc --version | tail -1
} 2>&1 | tee "$log"
TORCH_CUDA_ARCH_LIST="9.0" TTFS_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16} \
  timeout 420 pip install --no-build-isolation -v . > "$out/gpu_fs_build.log" 2>&1
rc=$?
grep -E "ttfs_ext:|error|Successfully installed" "$out/gpu_fs_build.log" | tee -a "$log"
if [ $rc -ne 0 ] || ! python -c "import sys, ttfs_ext; sys.exit(0 if 'cuda' in ttfs_ext.kernel_devices() else 1)"; then
  echo "build failed (rc $rc) or has no CUDA kernels: stopping" | tee -a "$log"
  exit 1
fi
{
  ttfs info
  timeout 240 python -m pytest -q -rs tests/test_fs.py tests/test_registration.py
} 2>&1 | tee -a "$log"
(cd benchmarks && timeout 300 python bench_fs.py --device cuda --sizes 1e6,1e7,1e8 --ks 10,12,16 --cycles 7 \
   --compile-sizes 1e8 --no-input-checks --max-eager 1e8 --max-backward 1e8 --memory-budget 6e10 \
   --out "$out/fs_cuda.json") 2>&1 | tee "$out/fs_cuda.log"
