#!/usr/bin/env bash
# Issue 5's GPU check: `torchrun --nproc_per_node=1 train.py` must train at the speed of plain `python train.py`
# (within 5%). Trains unet_nested with mix_33 on full-size synthetic slices both ways and compares the second
# epoch's time (the first one warms up cuDNN and the cache).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/tmp/oct_speed}
OUT=${OUT:-runs/ddp_speed}
[ -d "$DATA" ] || python -m data.synthetic --out "$DATA" --seed 5 --train 4 --val 1 --test 0 \
    --slices 128 --height 1024 --width 512 --jobs "$(nproc)"
rm -rf "$OUT"
ARGS=(--name unet_nested -d "$DATA" --cache-dir /tmp/oct_speed_cache --batch-size 16 -j 8 --epochs 2
      --steps-per-epoch 60 -o Adam --lr 0.001 --loss mix_33)
python train.py "${ARGS[@]}" --out "$OUT/plain" | tail -2
python -m torch.distributed.run --standalone --nproc_per_node=1 train.py "${ARGS[@]}" --out "$OUT/torchrun" | tail -2
python - "$OUT" <<'PY'
import csv, sys
t = {k: float(list(csv.DictReader(open(f"{sys.argv[1]}/{k}/log.csv")))[-1]["epoch_time_s"]) for k in ("plain", "torchrun")}
print(f"epoch 2: plain {t['plain']:.1f}s, torchrun {t['torchrun']:.1f}s, ratio {t['torchrun'] / t['plain']:.3f}")
PY
