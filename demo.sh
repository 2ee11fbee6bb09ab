#!/usr/bin/env bash
# The main job on the embedded synthetic default, end to end on a CPU (or a GPU when there is one):
# install, generate a synthetic OCT set in the AI Challenger layout, train, evaluate with pictures, write a submission.
# Re-running it continues the finished run and rewrites the derived eval/test outputs.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -q -r requirements.txt
DATA=${DATA:-data/synthetic}
RUN=${RUN:-runs/demo}
EPOCHS=${EPOCHS:-12}
SEED=${SEED:-1234}
start=$(date +%s)
[ -d "$DATA" ] || python -m data.synthetic --out "$DATA" --seed 0 --train 8 --val 3 --test 3 --slices 32 --height 256 --width 128
python train.py --name unet -d "$DATA" --out "$RUN" --batch-size 8 -j 1 --epochs "$EPOCHS" -o Adam --lr 0.002 \
    --lr-mode poly --loss mix_3 --seed "$SEED" --resume auto
python eval.py --seg-path "$RUN/checkpoint/model_best.pth.tar" -d "$DATA" --vis --out "$RUN/eval_val" --force
python eval.py --seg-path "$RUN/checkpoint/model_best.pth.tar" -d "$DATA" --split test --out "$RUN/eval_test" --force
python test.py --seg --det --seg-path "$RUN/checkpoint/model_best.pth.tar" -d "$DATA" --out "$RUN/test" --force
echo "demo finished in $(( $(date +%s) - start ))s: metrics in $RUN/eval_val/ and $RUN/eval_test/metrics.json," \
     "pictures in $RUN/eval_val/vis, submission in $RUN/test/submission.zip"
