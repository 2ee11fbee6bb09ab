#!/usr/bin/env bash
# Issue 25's DRIVE experiments on the CPU: one training at a time, in the order below; stop it any time, re-running
# continues the unfinished run (--resume auto) and skips the finished ones. Each finished run is scored at DRIVE's
# native scale (fp32, no TTA) and on the copies (x1.77, x0.6, JPEG 75, a white-balance shift), one row per run and
# set in $WORK/results.tsv; the last line prints the README table (tools.drive_results).
# Each option is screened at the shipped model's length (60 epochs, patience 20: under an hour a run on 2 cores, 53 s an epoch)
# against the same recipe without it (`base`), two seeds each; `long` is that recipe trained 200 epochs (patience 60).
# The order puts the options likeliest to pay first (cross-entropy alone, larger patches, SA-UNet,
# clDice), `wide` last (3x the cost).
# `jpeg_blur` changes two settings (JPEG round trips and blur: a publisher's copy), read as one option.
#   bash scripts/drive_experiments.sh                 # everything, hours
#   ONLY=clahe bash scripts/drive_experiments.sh      # one experiment (both seeds)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-runs/drive_experiments}
DRIVE=${DRIVE:-../shared/data/DRIVE}
EPOCHS=${EPOCHS:-60}  # the screening length
ONLY=${ONLY:-}
mkdir -p "$WORK"
# no --amp: bf16 autocast trains 3x slower than fp32 on this project's CPU (README, "Fundus vessel segmentation")
BASE=(--task vessel -d "$DRIVE" --steps-per-epoch 100 -o Adam --lr 0.002 --lr-mode poly -j 2)
SCREEN=(--epochs "$EPOCHS" --patience 20)
LONG=(--epochs 200 --patience 60)

# the held-out copies of the 20 test photos, written once
copies() {
    [ -d "$WORK/sets/x1.77" ] || python -m tools.rescale_photos "$DRIVE" "$WORK/sets/x1.77" --factor 1.77
    [ -d "$WORK/sets/x0.6" ] || python -m tools.rescale_photos "$DRIVE" "$WORK/sets/x0.6" --factor 0.6
    [ -d "$WORK/sets/jpeg75" ] || python -m tools.rescale_photos "$DRIVE" "$WORK/sets/jpeg75" --jpeg 75
    [ -d "$WORK/sets/warm" ] || python -m tools.rescale_photos "$DRIVE" "$WORK/sets/warm" --gains 1.15 1.0 0.85
}

score() {  # RUN: eval.py on every set (fp32, the checkpoint's own --scale auto), a results row each
    local run=$1 ckpt="$WORK/$1/checkpoint/model_best.pth.tar"
    for set in native x1.77 x0.6 jpeg75 warm; do
        local data="$WORK/sets/$set" out="$WORK/$run/eval_$set"
        [ "$set" = native ] && data="$DRIVE"
        [ -f "$out/metrics.json" ] || python eval.py --seg-path "$ckpt" -d "$data" --split test --no-amp --backend torch \
            --out "$out" --force
        python - "$WORK/results.tsv" "$run" "$set" "$out/metrics.json" <<'EOF'
import json, sys
from pathlib import Path
table, run, name, metrics = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(Path(sys.argv[4]).read_text())
keys = ("auc_roc", "auc_pr", "f1", "iou", "sensitivity", "specificity", "threshold")
rows = Path(table).read_text().splitlines() if Path(table).exists() else ["run\tset\t" + "\t".join(keys)]
if not any(r.startswith(f"{run}\t{name}\t") for r in rows):
    rows.append(f"{run}\t{name}\t" + "\t".join(f"{metrics[k]:.4f}" for k in keys))
Path(table).write_text("\n".join(rows) + "\n")
EOF
    done
}

experiment() {  # NAME SEED TRAIN_OPTIONS...: train (or continue) run NAME_sSEED, then score it
    local name=$1 seed=$2 run="$1_s$2"; shift 2
    [ -z "$ONLY" ] || [ "$ONLY" = "$name" ] || return 0
    if [ ! -f "$WORK/$run/trained" ]; then  # written once train.py has finished (or stopped early)
        python train.py "${BASE[@]}" --out "$WORK/$run" --seed "$seed" --resume auto "$@"
        date > "$WORK/$run/trained"
    fi
    score "$run"
}

copies
R=(-s 128 --batch-size 16 --loss wce+dice)  # the shipped model's recipe
experiment long 1 "${LONG[@]}" "${R[@]}"     # begun first (before the screening order below), so it stays first
for seed in 1 2; do
    experiment base "$seed" "${SCREEN[@]}" "${R[@]}"
    experiment jpeg_blur "$seed" "${SCREEN[@]}" "${R[@]}" --random-jpeg 40 --random-blur 0.75  # publishers' copies
    experiment clahe "$seed" "${SCREEN[@]}" "${R[@]}" --preprocess clahe
    experiment ce "$seed" "${SCREEN[@]}" -s 128 --batch-size 16 --loss wce  # no Dice term: less saturated probabilities
    experiment patch192 "$seed" "${SCREEN[@]}" -s 192 --batch-size 8 --loss wce+dice  # larger patches, same pixels a step
    experiment sa_unet "$seed" "${SCREEN[@]}" "${R[@]}" --name sa_unet
    experiment cldice "$seed" "${SCREEN[@]}" -s 128 --batch-size 16 --loss "wce+dice+0.5*cldice"
    experiment green "$seed" "${SCREEN[@]}" "${R[@]}" --preprocess green
    experiment wide "$seed" "${SCREEN[@]}" "${R[@]}" --channels 32 64 128 256 512
done
experiment long 2 "${LONG[@]}" "${R[@]}"
python -m tools.drive_results "$WORK/results.tsv"   # the README table: means over seeds, losses, limits
