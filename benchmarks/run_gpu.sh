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
# (estimates, not yet measured: paired cycles with 0.3 s per implementation and mode, at least 3 cycles,
# ~10 s per torch.compile).
# Run the parts in separate calls: PART=layers-a|layers-b|layers-lowp|networks|events; each writes
# its own folder $out/<part>/ (suite_cuda_partial.json, .png, log). Merge the tables with
# `python benchmarks/bench_suite.py --from-json <the parts' JSON files> --readme README.md`.
suite() {  # suite <part> <bench_suite arguments...>
  mkdir -p "$out/$1"
  python benchmarks/bench_suite.py --device cuda --preset full --min-run-time 0.3 --out "$out/$1" "${@:2}" 2>&1 \
    | tee "$out/$1/suite.log"
}
case "${PART:-all}" in
  layers-a|all) suite layers-a --precisions float32 --only layer/fc2 --only layer/vgg16-dense \
                  --only layer/vgg16-cifar ;;&
  layers-b|all) suite layers-b --precisions float32 --only layer/vgg16-places ;;&
  layers-lowp|all) suite layers-lowp --precisions tf32,bfloat16 --no-compile --only layer/ ;;&
  networks|all) suite networks --only network/ --only timestepped ;;&
  events|all) suite events --only event/ --only simulate/ ;;
esac
