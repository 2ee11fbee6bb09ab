#!/usr/bin/env python
"""Predict a split (the test split by default) and write the task's submission files.

OCT: per volume ``segment/<PID>_labelMark_volumes.npy`` (uint8 N x H x W class indices) and
``segment/<PID>_labelMark_detections.npy`` (float32 N x 3 probabilities of REA, SRF, PED), plus ``submission.zip``.
Vessel: ``<name>_mask.png`` (0/255) per photo.

    python test.py --seg --det --seg-path runs/unet_nested_mix_33/checkpoint/model_best.pth.tar
"""

from __future__ import annotations

import argparse
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from engine.cli import HelpFormatter, add_checkpoint_args, add_data_args, add_inference_args, add_output_args

log = logging.getLogger("test")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="test.py", description=__doc__, formatter_class=HelpFormatter)
    add_checkpoint_args(p)
    g = p.add_argument_group("what to write")
    g.add_argument("--seg", action="store_true", help="write segmentations")
    g.add_argument("--det", action="store_true", help="write detection scores (models with a detection head)")
    add_data_args(p, "split to predict", "test")
    add_inference_args(p)
    add_output_args(
        p, "output folder [default: <run>/<split>; runs/<checkpoint name>/<split> for a checkpoint outside a run]"
    )
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    a = p.parse_args(argv)
    if not (a.seg or a.det):
        p.error("nothing to write: pass --seg and/or --det")
    return a


def main(argv: list[str] | None = None) -> Path:
    from engine.cli import driver_session, open_inference
    from utils.distributed import barrier, shard, shared_staged_output_dir
    from utils.io import prefetched

    args = parse_args(argv)
    with driver_session() as info:

        def check(paths, task, split, data_dir):
            if args.det and not task.detects:
                raise ValueError(f"{paths[0]}: a {task.name} model gives no detection scores; drop --det")

        run = open_inference(args, info, "{split}", check)
        task, predictor = run.task, run.predictor
        t0 = time.time()
        with shared_staged_output_dir(run.out, args.force, info, run.protected) as out:
            # -j threads decode the next records and another writes the last one while the model works on this one
            with ThreadPoolExecutor(max(1, args.workers)) as loader, ThreadPoolExecutor(1) as writer:
                written = []
                mine = shard(run.records, info)  # each record on one process
                for rec, sample in prefetched(mine, task.load, loader, ahead=args.workers):
                    prediction = task.predict(predictor, sample)
                    written.append(writer.submit(task.write_prediction, out, rec.name, prediction, args.seg, args.det))
                    if args.vis:
                        task.save_pictures(out / "vis", rec.name, sample, prediction)
                    log.info(f"{rec.name}: predicted")
                for w in written:
                    w.result()  # a failed write fails the run (and the staged folder is discarded)
            barrier(info)  # every process's files are in place
            if info.is_main:
                task.finish_submission(out)
        if info.is_main:
            log.info(f"{len(run.records)} {task.noun} in {time.time() - t0:.1f}s; wrote {run.out}")
        return run.out


if __name__ == "__main__":
    from engine.cli import cli_main

    cli_main(__file__, parse_args, main)
