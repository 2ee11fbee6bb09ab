#!/usr/bin/env python
"""Train a segmentation + detection model on OCT B-scans.

    python train.py --name unet_nested -d ./data/dataset/ --batch-size 16 -j 16 --epochs 100 \
        -o Adam --lr 0.001 --lr-mode poly --loss mix_33
"""

from __future__ import annotations

import argparse
import sys

from models import list_models

S = argparse.SUPPRESS  # only options given on the command line override the config file


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=S
    )
    p.add_argument("--config", help="JSON or YAML file of settings; command-line options win")
    p.add_argument("--task", choices=["oct", "vessel"], help="oct (default) or vessel (fundus photos, DRIVE)")
    p.add_argument("--val-count", type=int, help="vessel: training photos held out for validation")
    p.add_argument("--patience", type=int, help="early stopping after this many epochs without a better score")
    p.add_argument("--name", help=f"model: {', '.join(list_models())}")
    p.add_argument("--channels", type=int, nargs="+", help="encoder widths (default 16 32 64 128 256)")
    p.add_argument("-d", "--data-dir", help="dataset root holding Edema_trainingset/ and Edema_validationset/")
    p.add_argument("-l", "--list-dir", help="optional folder with train_images.txt-style lists")
    p.add_argument("--cache-dir", help="where decoded volumes are kept (default $OCT_CACHE_DIR or ~/.cache)")
    p.add_argument("--out", help="run folder (default runs/<name>_<loss>)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("-j", "--workers", type=int, help="data-loading processes")
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps-per-epoch", type=int, help="optimiser steps per epoch (default: one pass)")
    p.add_argument("-o", "--optimizer", help="Adam, AdamW or SGD")
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-mode", choices=["step", "poly"])
    p.add_argument("--step", type=int, help="epochs between x0.1 decays with --lr-mode step")
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", "--wd", type=float)
    p.add_argument("--loss", help="mix_3, mix_33, a part (wce, dice, eldice, bce) or e.g. 'wce+0.5*eldice+bce'")
    p.add_argument("--class-weights", type=float, nargs="+")
    p.add_argument("--el-dice-gamma", type=float)
    p.add_argument("--no-deep-supervision", dest="deep_supervision", action="store_false")
    p.add_argument("--resume", help="checkpoint path, or 'auto' for the newest checkpoint of the run folder")
    p.add_argument("--random-rotate", type=float, help="max rotation in degrees")
    p.add_argument("--random-scale", type=float, help="max relative scale change")
    p.add_argument("--resize", type=int, nargs="+", help="N (square) or H W: resize slices before the model")
    p.add_argument("-s", "--crop-size", type=int, help="random square crops for training")
    p.add_argument("--no-flip", dest="flip", action="store_false", help="turn off random horizontal flips")
    p.add_argument("--vflip", action=argparse.BooleanOptionalAction, help="random vertical flips (vessel default)")
    p.add_argument("--random-brightness", type=float, help="add U(-b, b) of full scale")
    p.add_argument("--random-contrast", type=float, help="scale contrast by 1 + U(-c, c)")
    p.add_argument("--random-gamma", type=float, help="gamma 1 + U(-g, g)")
    p.add_argument("--save-every-checkpoint", action="store_true")
    p.add_argument("--seed", type=int)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, help="bf16 autocast (default: on a GPU)")
    p.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, help="torch.compile the model (default: on a GPU)"
    )
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across GPUs under DDP")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bitwise-repeatable on CPU)")
    p.add_argument("--val-batch-size", type=int)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    from utils.config import resolve_settings
    from utils.distributed import cleanup, init_distributed
    from utils.engine import Trainer

    args = parse_args(argv)
    resume = vars(args).pop("resume", None)
    settings = resolve_settings(args)
    info = init_distributed()
    try:
        return Trainer(settings, resume=resume, dist_info=info).fit()
    finally:
        cleanup(info)


if __name__ == "__main__":
    from utils.distributed import relaunch_on_all_gpus

    code = relaunch_on_all_gpus(__file__, sys.argv[1:])  # several visible GPUs: one DDP process per GPU
    if code is not None:
        sys.exit(code)
    try:
        main()
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, FloatingPointError) as e:
        sys.exit(f"error: {e}")
