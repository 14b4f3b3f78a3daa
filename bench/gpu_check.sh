#!/usr/bin/env bash
# GPU/TPU figures of docs/performance.md in one run (under 10 minutes on one H200):
# step time, XLA FLOPs and MFU of both stages at 224 px, batch 42 and 128, in float32 and
# bfloat16 compute (parameters stay float32); then the accuracy of a short bfloat16 run
# against float32 from the same start (bench/bf16_check.py).
#
#     bash bench/gpu_check.sh [OUT_DIR]
#
# Needs jax with the accelerator's plugin, flax, optax, orbax-checkpoint, ml_collections
# and absl-py. Where ml_collections is missing and nothing can be downloaded, put its wheel
# in .whl/ first (pip download --no-deps ml_collections -d .whl). JSON lines go to stdout
# and to OUT_DIR/gpu_check.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-runs/gpu_check}}"
mkdir -p "$out"
python3 -c "import ml_collections" 2>/dev/null || python3 -m pip install -q --no-index --find-links .whl ml_collections
python3 -c "import jax; print(jax.devices())"
for batch in 42 128; do
  for dtype in float32 bfloat16; do
    python3 bench/train_step.py --config=configs/default.py --pipeline=false --steps=20 \
      --config.train.batch_size="$batch" --config.model.dtype="$dtype" | tee -a "$out/gpu_check.jsonl"
  done
done
python3 bench/bf16_check.py --config=configs/default.py --steps=100 | tee -a "$out/gpu_check.jsonl"
