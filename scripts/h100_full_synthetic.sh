#!/usr/bin/env bash
# The full-size run of issue 2 on one GPU: 20 training patients x 128 slices x 1024x512, unet_nested with mix_33,
# then evaluation and a submission. Prints the training time and writes everything under $OUT (or runs/full).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/full}
DATA=${DATA:-/tmp/oct_full}
EPOCHS=${EPOCHS:-20}
mkdir -p "$OUT"
[ -d "$DATA" ] || python -m data.synthetic --out "$DATA" --seed 2018 --train 20 --val 4 --test 4 \
    --slices 128 --height 1024 --width 512 --jobs "$(nproc)"
start=$(date +%s)
python train.py --name unet_nested -d "$DATA" --out "$OUT/train" --cache-dir /tmp/oct_cache --batch-size 16 -j 12 \
    --epochs "$EPOCHS" -o Adam --lr 0.001 --lr-mode poly --loss mix_33 --resume auto 2>&1 | tr '\r' '\n' | grep -v "it/s"
echo "training_seconds=$(( $(date +%s) - start ))" | tee "$OUT/train_time.txt"
python eval.py --seg-path "$OUT/train/checkpoint/model_best.pth.tar" --cache-dir /tmp/oct_cache --out "$OUT/eval" --force
python test.py --seg --det --seg-path "$OUT/train/checkpoint/model_best.pth.tar" --cache-dir /tmp/oct_cache \
    --out "$OUT/test" --force
