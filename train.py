#!/usr/bin/env python
"""Train a segmentation (+ detection) model: OCT edema (default) or fundus vessels (--task vessel).

    python train.py --name unet_nested -d ./data/dataset/ --batch-size 16 -j 16 --epochs 100 \\
        -o Adam --lr 0.001 --lr-mode poly --loss mix_33

Settings come from the defaults, then the task's defaults, then --config FILE (JSON or YAML), then the options
given here. Every visible GPU is used (one DDP process each); without a GPU everything runs on the CPU.
"""

from __future__ import annotations

import argparse

from engine.cli import TOOLS, HelpFormatter, add_setting, add_task_settings

# the built-in models, named without importing torch (--help and argument errors stay fast); train.py checks --name
# against models.list_models(), which a test holds equal to this
MODELS = ("unet", "unet_nested", "unet_nested_dilated", "sa_unet")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py",
        description=__doc__,
        epilog=TOOLS,
        formatter_class=HelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    from tasks import list_tasks

    g = p.add_argument_group("task")
    add_setting(g, "--task", choices=list_tasks(), help="the task (oct: OCT edema B-scans; vessel: fundus photos)")
    g.add_argument("--config", help="JSON or YAML file of settings (same names); options given here win")

    g = p.add_argument_group("model")
    add_setting(g, "--name", metavar="NAME", help=f"model: {', '.join(MODELS)} (or one registered in models)")
    add_setting(g, "--channels", type=int, nargs="+", help="encoder widths, shallow to deep")
    add_setting(
        g,
        "--no-deep-supervision",
        dest="deep_supervision",
        action="store_false",
        help="UNet++: train the averaged head only, not each head",
    )

    g = p.add_argument_group("data")
    add_setting(g, "-d", "--data-dir", help="dataset root (oct: holds Edema_trainingset/ and Edema_validationset/)")
    add_setting(g, "-l", "--list-dir", help="oct: folder with train_images.txt-style lists (optional)")
    add_setting(g, "--cache-dir", help="oct: where decoded volumes are kept", default_text="$OCT_CACHE_DIR or ~/.cache")
    add_setting(g, "-j", "--workers", type=int, help="data-loading processes")
    add_setting(g, "--resize", type=int, nargs="+", help="N (square) or H W: resize inputs before the model")
    add_setting(g, "-s", "--crop-size", type=int, help="train on random N x N crops (0: whole inputs)")

    g = p.add_argument_group("augmentation")
    add_setting(g, "--no-flip", dest="flip", action="store_false", help="turn off random horizontal flips")
    add_setting(g, "--vflip", action=argparse.BooleanOptionalAction, help="random vertical flips")
    add_setting(g, "--random-rotate", type=float, help="max rotation in degrees")
    add_setting(g, "--random-scale", type=float, help="max relative scale change")
    add_setting(g, "--random-brightness", type=float, help="add U(-b, b) of full scale")
    add_setting(g, "--random-contrast", type=float, help="scale contrast by 1 + U(-c, c)")
    add_setting(g, "--random-gamma", type=float, help="gamma 1 + U(-g, g)")
    add_setting(g, "--random-noise", type=float, help="Gaussian noise of std U(0, n) of full scale")
    add_setting(g, "--random-blur", type=float, help="half of the time a Gaussian blur of sigma U(0, b) pixels")
    add_setting(
        g,
        "--random-jpeg",
        type=int,
        metavar="Q",
        help="half of the time a JPEG round trip at quality U(Q, 95) (0: never)",
    )

    g = p.add_argument_group("optimisation")
    add_setting(g, "--batch-size", type=int, help="global batch, split evenly over the processes")
    add_setting(g, "--epochs", type=int, help="epochs to train")
    add_setting(g, "--steps-per-epoch", type=int, help="optimiser steps per epoch (0: one pass over the data)")
    add_setting(g, "-o", "--optimizer", help="Adam, AdamW or SGD")
    add_setting(g, "--lr", type=float, help="initial learning rate")
    add_setting(g, "--lr-mode", choices=["step", "poly"], help="step: x0.1 every --step epochs; poly: power 0.9")
    add_setting(g, "--step", type=int, help="epochs between x0.1 decays with --lr-mode step")
    add_setting(g, "--momentum", type=float, help="SGD momentum")
    add_setting(g, "--weight-decay", "--wd", type=float, help="weight decay")
    add_setting(
        g, "--loss", help="mix_3, mix_33, a part (wce, dice, eldice, cldice, bce) or a sum like 'wce+0.5*eldice+bce'"
    )
    add_setting(g, "--class-weights", type=float, nargs="+", help="WCE weight per class")
    add_setting(g, "--el-dice-gamma", type=float, help="exponent of the exponential-logarithmic Dice")
    add_setting(g, "--patience", type=int, help="stop after this many epochs without a better score (0: never)")
    add_setting(
        g,
        "--select",
        help="validation figures whose sum picks the best checkpoint, e.g. dice_mean or dice_mean+auc_mean",
        default_text="the task's: oct dice_mean+auc_mean, vessel f1",
    )

    g = p.add_argument_group("run")
    add_setting(g, "--out", help="run folder", default_text="runs/<name>_<loss>")
    g.add_argument(
        "--resume",
        help="continue a run: a checkpoint, or 'auto' for the furthest checkpoint of the run folder. The run keeps its "
        "own settings; only epochs, patience, workers, logging, device, precision and compile may change",
    )
    g.add_argument(
        "--finetune",
        metavar="CKPT",
        help="start a new run (a new --out) from CKPT's weights, with any settings; its checkpoints record CKPT",
    )
    add_setting(g, "--seed", type=int, help="seed of weights, data order and augmentation")
    add_setting(g, "--amp", action=argparse.BooleanOptionalAction, help="bf16 autocast", default_text="on a GPU")
    add_setting(
        g,
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile the model and the loss (falls back to eager if compiling fails)",
        default_text="on a GPU",
    )
    add_setting(g, "--sync-bn", action="store_true", help="SyncBatchNorm across GPUs under DDP")
    add_setting(g, "--deterministic", action="store_true", help="deterministic algorithms (repeatable on the CPU)")
    add_setting(g, "--val-batch-size", type=int, help="inputs per forward pass in validation")
    add_setting(g, "--save-every-checkpoint", action="store_true", help="keep every epoch's checkpoint")
    add_setting(g, "--log-every", type=int, help="a progress line every N steps (and at least once a minute)")

    add_task_settings(p)  # each task's own settings, from its declaration
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    from engine.cli import driver_session, given_settings, train_settings
    from engine.trainer import Trainer

    args = parse_args(argv)
    settings = train_settings(args)
    resume, finetune = getattr(args, "resume", None), getattr(args, "finetune", None)
    with driver_session() as info:
        trainer = Trainer(settings, resume, dist_info=info, given=given_settings(args), finetune=finetune)
        return trainer.fit()


if __name__ == "__main__":
    from engine.cli import cli_main

    cli_main(__file__, parse_args, main)
