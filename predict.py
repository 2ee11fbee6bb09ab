#!/usr/bin/env python
"""Predict files and folders you point at, with a trained checkpoint (or a fusion of several): fundus photos with
a vessel checkpoint (the shipped DRIVE model by default), OCT volumes (a folder of 1.bmp ... N.bmp) with an OCT one.

    python predict.py photo1.tif photo2.jpg --out predictions/
    python predict.py data/synthetic/Edema_testset/original_images/*.img \
        --checkpoint runs/demo/checkpoint/model_best.pth.tar

writes what test.py writes for each input (vessel: ``<stem>_mask.png``; OCT: ``segment/<PID>_labelMark_volumes.npy``
and ``..._detections.npy``) and pictures (vessel: ``<stem>_blend.png``; OCT: ``<PID>.gif`` and ``<PID>/<z>.png``)
unless ``--no-pictures``. From Python: ``tasks.vessel.Segmenter``, or ``Predictor`` with a task's ``predict``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from engine.cli import HelpFormatter, add_checkpoint_args, add_inference_args

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "drive_unet.pth.tar"
log = logging.getLogger("predict")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="predict.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, help="photos (vessel) or slice folders (OCT)")
    add_checkpoint_args(p, default=DEFAULT_CHECKPOINT)
    add_inference_args(p)
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (new, or empty)")
    g.add_argument("--force", action="store_true", help="replace an output folder an earlier predict.py wrote")
    g.add_argument(
        "--no-pictures", "--no-blend", dest="pictures", action="store_false", help="write no pictures (blends, GIFs)"
    )
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    from engine.cli import build_predictor, checkpoints, task_for
    from utils.io import staged_output_dir
    from utils.log import setup_logging

    args = parse_args(argv)
    setup_logging()
    paths = checkpoints(args)
    settings, task = task_for(paths, weights=args.fusion_weights, scale=args.scale, detection=args.detection)
    names: dict[str, Path] = {}
    for path in args.inputs:
        name = task.input_name(path)
        if name in names:
            raise ValueError(f"{names[name]} and {path} would both be written as {name!r}; predict them separately")
        names[name] = path
    predictor = build_predictor(args, paths)
    protected = [("a checkpoint being read", Path(p)) for p in paths]
    protected += [("an input being read", Path(i)) for i in args.inputs]
    final = args.out.resolve()
    written: list[Path] = []
    with staged_output_dir(final, args.force, protected) as out:  # complete or absent, never half-written
        for path in args.inputs:
            name, sample = task.input_name(path), task.read_input(path)
            prediction = task.predict(predictor, sample)
            files = task.write_prediction(out, name, prediction, seg=True, det=task.detects)
            if args.pictures:
                files += task.save_pictures(out, name, sample, prediction)
            written += [final / f.relative_to(out) for f in files]
            log.info(f"{path} -> {', '.join(str(f.relative_to(out)) for f in files)}")
    log.info(f"wrote {len(written)} files to {final}")
    return written


if __name__ == "__main__":
    from engine.cli import cli_main

    cli_main(__file__, parse_args, main, relaunch=False)
