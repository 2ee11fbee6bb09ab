"""Command-line pieces shared by eval.py and test.py: which checkpoints, which data, which device."""

from __future__ import annotations

import argparse
from pathlib import Path

from utils.checkpoint import load_checkpoint
from utils.config import Settings
from utils.distributed import DistInfo, device_for
from utils.inference import Predictor


def add_inference_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--seg-path", help="checkpoint of one model (e.g. runs/x/checkpoint/model_best.pth.tar)")
    g.add_argument("--fusion", nargs="+", metavar="CKPT", help="several checkpoints whose probabilities are averaged")
    p.add_argument("--fusion-weights", type=float, nargs="+", help="one weight per --fusion checkpoint")
    p.add_argument("-d", "--data-dir", help="dataset root (default: the one the first checkpoint was trained on)")
    p.add_argument("-l", "--list-dir", help="optional folder with <split>_images.txt-style lists")
    p.add_argument("--cache-dir", help="where decoded volumes are kept")
    p.add_argument("--out", help="output folder")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--tta", action="store_true", help="average with horizontally flipped inputs")
    p.add_argument("--batch-size", type=int, default=16, help="slices per forward pass")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: GPU)")
    p.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile (default: on a GPU)"
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("-j", "--workers", type=int, default=0, help="accepted for compatibility; volumes load lazily")


def checkpoints(args: argparse.Namespace) -> list[str]:
    paths = args.fusion or [args.seg_path]
    if args.fusion_weights is not None and len(args.fusion_weights) != len(paths):
        raise ValueError(f"{len(args.fusion_weights)} --fusion-weights for {len(paths)} checkpoints")
    return paths


def first_settings(paths: list[str]) -> Settings:
    return Settings.from_dict(load_checkpoint(paths[0])["settings"], source=paths[0])


def default_out(paths: list[str], leaf: str) -> Path:
    if len(paths) == 1:
        ckpt = Path(paths[0]).resolve()
        run = ckpt.parent.parent if ckpt.parent.name == "checkpoint" else ckpt.parent
        return run / leaf
    return Path("runs") / "fusion" / leaf


def build_predictor(args: argparse.Namespace, paths: list[str], info: DistInfo | None = None) -> Predictor:
    device = args.device
    if device is None and info is not None and info.enabled:
        device = device_for(info)  # one GPU per process
    return Predictor.from_checkpoints(
        paths,
        args.fusion_weights,
        device=device,
        batch_size=args.batch_size,
        amp=args.amp,
        tta_flip=args.tta,
        compile=args.compile,
    )


def run_main(main, script: str) -> None:
    """``__main__`` of eval.py / test.py: one process per visible GPU when there are several, clear errors."""
    import sys

    from utils.distributed import relaunch_on_all_gpus

    code = relaunch_on_all_gpus(script, sys.argv[1:])
    if code is not None:
        sys.exit(code)
    try:
        main()
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:  # DatasetError is a ValueError
        sys.exit(f"error: {e}")
