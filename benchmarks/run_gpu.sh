#!/usr/bin/env bash
# GPU verification in one call: build with CUDA for Hopper (sm_90), run `ttfs check` and the
# whole test suite (CUDA tests included), then the layer benchmark. Logs and JSON go to
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
  ttfs check
  python -m pytest -q -rs
} 2>&1 | tee "$out/gpu_tests.log"
python benchmarks/bench_layers.py --device cuda --out "$out/layers_cuda.json" 2>&1 | tee "$out/layers_cuda.log"
# The performance suite, split so that each part stays under the device tool's 10-minute limit
# (run the parts in separate calls with PART=layers|networks|events|all).
case "${PART:-all}" in
  layers|all) python benchmarks/bench_suite.py --device cuda --preset full --only layer/ --out "$out" 2>&1 \
                | tee "$out/suite_cuda_layers.log" ;;&
  networks|all) python benchmarks/bench_suite.py --device cuda --preset full --only network/ --only timestepped \
                  --out "$out" 2>&1 | tee "$out/suite_cuda_networks.log" ;;&
  events|all) python benchmarks/bench_suite.py --device cuda --preset full --only event/ --only simulate/ \
                --out "$out" 2>&1 | tee "$out/suite_cuda_events.log" ;;
esac
