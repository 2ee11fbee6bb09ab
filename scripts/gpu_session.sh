#!/usr/bin/env bash
# Every GPU figure the open issues ask for, in stages each meant for one 10-minute device call:
#
#   bash scripts/gpu_session.sh bench   # bench.py table (3 models x baseline/fast), issue 17's targets met or MISSED,
#                                       # torch.profiler top kernels of each fast row; JSON to $RESULTS;
#                                       # MODELS="unet" (etc.) runs some models, when all three do not fit one call
#   bash scripts/gpu_session.sh oct     # issue 2: full-size synthetic unet_nested / mix_33 run, eval, test, and
#                                       # issue 4's fast-path-vs-fp32 agreement on its validation volumes
#   bash scripts/gpu_session.sh drive   # issue 3: DRIVE training (20 training photos), test metrics, checkpoint
#   bash scripts/gpu_session.sh ddp     # issue 5: torchrun --nproc_per_node=1 vs plain python train.py
#
# DRIVE is read from $DRIVE_DIR (default ../shared/data/DRIVE; copy it into the checkout, e.g. .drive/, to carry it to
# a device machine). Results go to $RESULTS (default runs/gpu; on the device tool copy its *.txt, *.json and *.csv
# into the tool's $OUT, which takes few files). Sizes can be shrunk for a dry run on the CPU with
# SLICES, HEIGHT, WIDTH, TRAIN, EPOCHS, DRIVE_EPOCHS.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
RESULTS=${RESULTS:-runs/gpu}
SLICES=${SLICES:-128}
HEIGHT=${HEIGHT:-1024}
WIDTH=${WIDTH:-512}
TRAIN=${TRAIN:-20}
EPOCHS=${EPOCHS:-20}
DRIVE_DIR=${DRIVE_DIR:-../shared/data/DRIVE}
DRIVE_EPOCHS=${DRIVE_EPOCHS:-60}
JOBS=$(nproc)
mkdir -p "$RESULTS"
# On the device tool ($OUT set, at most 8 files come back): the stage's summaries and the re-shipped DRIVE
# checkpoint are copied there on exit, also when a stage fails or runs out of time.
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
    DEVICE_OUT=$OUT STAGE=${1:-none}
    trap 'cp "$RESULTS/$STAGE"*.* "$DEVICE_OUT"/ 2>/dev/null || true' EXIT
fi
python - <<'PY'
import torch
print("torch", torch.__version__, "device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
PY

case "${1:-}" in
bench)
    MODELS=${MODELS:-unet unet_nested unet_nested_dilated}
    tag=${MODELS// /+}
    # shellcheck disable=SC2086  # MODELS is a list of names
    python bench.py --models $MODELS --slices "$SLICES" --size "$HEIGHT" "$WIDTH" --workers "$((JOBS - 2))" --profile \
        --json "$RESULTS/bench_$tag.json" 2>&1 | grep -v "slices$" | tee "$RESULTS/bench_$tag.txt"
    ;;
oct)
    DATA=/tmp/oct_full
    [ -d "$DATA" ] || python -m data.synthetic --out "$DATA" --seed 2018 --train "$TRAIN" --val 4 --test 4 \
        --slices "$SLICES" --height "$HEIGHT" --width "$WIDTH" --jobs "$JOBS"
    start=$(date +%s)
    python train.py --name unet_nested -d "$DATA" --out "$RESULTS/oct" --cache-dir /tmp/oct_cache --batch-size 16 \
        -j "$((JOBS - 2))" --epochs "$EPOCHS" -o Adam --lr 0.001 --lr-mode poly --loss mix_33 --resume auto 2>&1 |
        tr '\r' '\n' | grep -v "it/s\]" | tee "$RESULTS/oct_train.txt"
    echo "training_seconds=$(($(date +%s) - start))" | tee -a "$RESULTS/oct_train.txt"
    ckpt="$RESULTS/oct/checkpoint/model_best.pth.tar"
    python eval.py --seg-path "$ckpt" --cache-dir /tmp/oct_cache --out "$RESULTS/oct_eval" --force | tee "$RESULTS/oct_eval.txt"
    python test.py --seg --det --seg-path "$ckpt" --cache-dir /tmp/oct_cache --out "$RESULTS/oct_test" --force |
        tail -1 | tee -a "$RESULTS/oct_eval.txt"
    python bench.py --models unet_nested --quick --reps 1 --agreement "$ckpt" -d "$DATA" --slices "$SLICES" \
        --size "$HEIGHT" "$WIDTH" 2>&1 | grep "fast path vs fp32" | tee -a "$RESULTS/oct_eval.txt"
    cp "$RESULTS/oct/log.csv" "$RESULTS/oct_log.csv"
    ;;
drive)
    start=$(date +%s)
    python train.py --task vessel -d "$DRIVE_DIR" --out "$RESULTS/drive" --epochs "$DRIVE_EPOCHS" --steps-per-epoch 100 \
        --batch-size 16 -s 128 -o Adam --lr 0.002 --lr-mode poly --loss wce+dice --patience 20 --seed 1 \
        -j "$((JOBS - 2))" --resume auto 2>&1 | tr '\r' '\n' | grep -v "it/s\]" | tee "$RESULTS/drive_train.txt"
    echo "training_seconds=$(($(date +%s) - start))" | tee -a "$RESULTS/drive_train.txt"
    python eval.py --seg-path "$RESULTS/drive/checkpoint/model_best.pth.tar" -d "$DRIVE_DIR" --out "$RESULTS/drive_eval" \
        --force --tta | tee "$RESULTS/drive_eval.txt"
    python -m utils.checkpoint "$RESULTS/drive/checkpoint/model_best.pth.tar" "$RESULTS/drive_unet.pth.tar" --dtype fp16 --force
    cp "$RESULTS/drive/log.csv" "$RESULTS/drive_log.csv"
    ;;
ddp)
    OUT="$RESULTS/ddp" bash scripts/ddp_speed_check.sh | tee "$RESULTS/ddp.txt"
    ;;
*)
    echo "usage: bash scripts/gpu_session.sh bench|oct|drive|ddp" >&2
    exit 2
    ;;
esac
