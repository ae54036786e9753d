#!/usr/bin/env bash
# Issue 4, item 7: train the papers' 16-layer VGG from scratch on Fashion-MNIST on a GPU, with
# its ReLU twin side by side, and keep the log and metrics. Needs the Fashion-MNIST IDX files
# (--data-dir DIR, $TTFS_EXT_DATA, or Debian's dataset-fashion-mnist); EPOCHS defaults to 3 to
# fit the device tool's 10-minute calls (continue with RESUME=1 in further calls).
set -uo pipefail
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
ttfs train --model vgg16 --dataset fashion-mnist --device cuda --dtype float32 --batch-size 64 \
  --epochs "${EPOCHS:-3}" --out "$out/vgg16_fashion_mnist" --no-progress ${DATA_DIR:+--data-dir "$DATA_DIR"} \
  ${RESUME:+--resume} 2>&1 | tee "$out/vgg16_fashion_mnist.log"
