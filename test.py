#!/usr/bin/env python
"""Write challenge submission files for the test split: per volume
``<PID>_labelMark_volumes.npy`` (uint8 N x H x W class indices) and ``<PID>_labelMark_detections.npy``
(float32 N x 3 probabilities of REA, SRF, PED), plus ``submission.zip``.

    python test.py --seg --det --seg-path runs/unet_nested_mix_33/checkpoint/model_best.pth.tar
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from utils.cli import add_inference_args


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_inference_args(p)
    p.add_argument("--seg", action="store_true", help="write segmentation volumes")
    p.add_argument("--det", action="store_true", help="write detection scores")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    a = p.parse_args(argv)
    if not (a.seg or a.det):
        p.error("nothing to write: pass --seg and/or --det")
    return a


def main(argv=None):
    from utils.distributed import cleanup, init_distributed

    args = parse_args(argv)
    info = init_distributed()
    try:
        return _submit(args, info)
    finally:
        cleanup(info)


def _submit(args: argparse.Namespace, info):
    from data.cache import VolumeCache
    from data.oct import find_volumes
    from utils.cli import build_predictor, checkpoints, default_out, first_settings
    from utils.distributed import barrier, shard, shared_staged_output_dir
    from utils.io import prefetched, save_npy_atomic, zip_folder

    paths = checkpoints(args)
    s = first_settings(paths)
    if s.task == "vessel":
        return _segment_photos(args, info, paths, s)
    records = find_volumes(args.data_dir or s.data_dir, args.split, args.list_dir)
    cache = VolumeCache(args.cache_dir or s.cache_dir)
    predictor = build_predictor(args, paths, info)
    final = Path(args.out or default_out(paths, args.split))
    t0 = time.time()
    with shared_staged_output_dir(final, args.force, info) as out:
        seg_dir = out / "segment"
        seg_dir.mkdir(exist_ok=True)

        def save(pid: str, pred) -> None:
            if args.seg:
                save_npy_atomic(seg_dir / f"{pid}_labelMark_volumes.npy", pred.labels.numpy().astype(np.uint8))
            if args.det:
                save_npy_atomic(seg_dir / f"{pid}_labelMark_detections.npy", pred.det_scores.astype(np.float32))

        # one thread decodes the next volume and another writes the last one while the model works on this one
        with ThreadPoolExecutor(1) as loader, ThreadPoolExecutor(1) as writer:
            written = []
            for rec, image in prefetched(shard(records, info), lambda r: np.asarray(cache.load(r)[0]), loader):
                pred = predictor.predict_volume(image)  # each volume on exactly one process
                if args.det and pred.det_scores is None:
                    raise ValueError(f"{paths}: a model has no detection head; drop --det")
                written.append(writer.submit(save, rec.pid, pred))
                print(f"{rec.pid}: {image.shape[0]} slices", flush=True)
            for w in written:
                w.result()  # a failed write fails the run (and the staged folder is discarded)
        barrier(info)  # every process's files are in place before the zip
        if info.is_main:
            zip_folder(seg_dir, out / "submission.zip")
    if not info.is_main:
        return final
    print(f"{len(records)} volumes in {time.time() - t0:.1f}s; wrote {final}/segment and {final}/submission.zip")
    return final


def _segment_photos(args: argparse.Namespace, info, paths: list[str], s) -> Path:
    """Vessel task: a mask and (with --det, kept for the command line's sake, or always) a blend per photo."""
    from data.photos import read_rgb, split_photos
    from utils.cli import default_out
    from utils.distributed import shard, shared_staged_output_dir
    from utils.vessel import Segmenter, save_outputs

    records = split_photos(args.data_dir or s.data_dir, args.split, s.val_count)
    seg = Segmenter.from_checkpoint(paths[0], device=args.device)
    final = Path(args.out or default_out(paths, args.split))
    with shared_staged_output_dir(final, args.force, info) as out:
        for rec in shard(records, info):
            rgb = read_rgb(rec.image)
            _, mask = seg.predict(rgb)
            save_outputs(out, rec.name, rgb, mask)
    if info.is_main:
        print(f"{len(records)} photos: masks and blends in {final}")
    return final


if __name__ == "__main__":
    from utils.cli import run_main

    run_main(main, __file__)
