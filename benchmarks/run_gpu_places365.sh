#!/usr/bin/env bash
# Issue 17, the GPU measurements in one call (under 10 minutes, no network): build with CUDA for
# Hopper (sm_90), write a synthetic dataset in the official Places365 layout, run a short
# bfloat16 + channels_last DDP training on 1 GPU through torchrun, the training throughput of the
# TTFS VGG16 against the ReLU VGG16 (bench_places365_train.py: every precision x layout), and
# the data pipeline with and without GPU decoding. Logs and JSON go to $OUT (the device tool's
# output folder) or benchmarks/results/gpu_places365/. Every part runs even if one before failed;
# the script exits non-zero if any did, naming them. Estimates (not measured): build 3-4 min,
# training 1 min, throughput 2 min, data pipeline 1 min.
# Knobs: BATCH (throughput batch, default 64), STEPS (per repeat, default 10), REPEATS (default 5).
set -euo pipefail
out=${OUT:-benchmarks/results/gpu_places365}
data=${TMPDIR:-/tmp}/ttfs_places365_synthetic
mkdir -p "$out"
export PYTHONUNBUFFERED=1
failed=()

part() {  # part <name> <command...>: run it, log to $out/<name>.log, remember a failure
  local name=$1
  shift
  echo "=== $name: $*" | tee "$out/$name.log"
  local start=$SECONDS
  if "$@" 2>&1 | tee -a "$out/$name.log"; then
    echo "=== $name: ok in $((SECONDS - start)) s" | tee -a "$out/$name.log"
  else
    echo "=== $name: FAILED (exit ${PIPESTATUS[0]}) after $((SECONDS - start)) s" | tee -a "$out/$name.log"
    failed+=("$name")
  fi
}

build() {  # in a part (an `if` condition) set -e is off: every step returns on failure itself
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || return 1
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" || return 1
  python -c "import torchvision; print('torchvision', torchvision.__version__)" || echo "torchvision: not installed"
  python -c "import nvidia.dali as d; print('dali', d.__version__)" || echo "nvidia.dali: not installed"
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) TORCH_CUDA_ARCH_LIST="9.0" TTFS_CUDA=ON \
    pip install --no-build-isolation --no-deps -v . > "$out/build_pip.log" 2>&1 || { tail -n 40 "$out/build_pip.log"; return 1; }
  grep -E "ttfs_ext:|Successfully installed" "$out/build_pip.log"
  python -c "import ttfs_ext, json; s = ttfs_ext.status(); print(json.dumps(s)); assert s['with_cuda'], s"
}

synthetic_data() {
  rm -rf "$data"
  python - "$data" <<'EOF'
import sys
from ttfs_ext.data.places365 import make_synthetic_places365
make_synthetic_places365(sys.argv[1], train_per_class=40, val_per_class=8, test_count=8, size=(256, 256))
print("synthetic Places365 in", sys.argv[1])
EOF
}

train() {  # the distributed command of the README, 1 process, bfloat16 + channels_last: from scratch, then
  # fine-tuning a converted VGG16 (a torchvision-layout ReLU checkpoint, random weights: none can be downloaded)
  torchrun --standalone --nproc-per-node 1 -m ttfs_ext train --dataset places365 --data-dir "$data" \
    --model vgg16 --device cuda --precision bf16 --channels-last --epochs 2 --batch-size 32 --workers 8 \
    --checkpoint-every 2 --no-progress --json --out "$out/train_vgg16_bf16" || return 1
  python -c "import sys, torch; from ttfs_ext.train.vgg16 import vgg16_relu; torch.manual_seed(0); \
torch.save(vgg16_relu(4).state_dict(), sys.argv[1])" "$data/vgg16_relu_random.pth" || return 1
  torchrun --standalone --nproc-per-node 1 -m ttfs_ext train --dataset places365 --data-dir "$data" \
    --model vgg16 --relu-checkpoint "$data/vgg16_relu_random.pth" --calibration-images 16 --device cuda \
    --precision bf16 --channels-last --epochs 1 --batch-size 32 --workers 8 --no-progress --json \
    --out "$out/finetune_vgg16_bf16" || return 1
  torchrun --standalone --nproc-per-node 1 -m ttfs_ext validate --checkpoint "$out/finetune_vgg16_bf16/checkpoint.pt" \
    --data-dir "$data" --device cuda --precision bf16 --json --out "$out/validate_vgg16_bf16.json"
}

throughput() {
  python benchmarks/bench_places365_train.py --device cuda --sweep --batch "${BATCH:-64}" \
    --steps "${STEPS:-10}" --repeats "${REPEATS:-5}" --warmup 3 --out "$out/places365_train_cuda.json"
}

part build build
part synthetic_data synthetic_data
part train_vgg16_bf16 train
part throughput throughput
part data_pipeline python benchmarks/bench_data_pipeline.py --out "$out/data_pipeline_gpuhost.json"
part data_pipeline_gpu_decode python benchmarks/bench_data_pipeline.py --gpu-decode \
  --out "$out/data_pipeline_gpu_decode.json"

if ((${#failed[@]})); then
  echo "failed parts: ${failed[*]}" | tee "$out/FAILED"
  exit 1
fi
echo "all parts ok; results in $out"
