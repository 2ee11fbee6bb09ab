#!/usr/bin/env python
"""Write challenge submission files for the test split: per volume
``<PID>_labelMark_volumes.npy`` (uint8 N x H x W class indices) and ``<PID>_labelMark_detections.npy``
(float32 N x 3 probabilities of REA, SRF, PED), plus ``submission.zip``.

    python test.py --seg --det --seg-path runs/unet_nested_mix_33/checkpoint/model_best.pth.tar
"""

from __future__ import annotations

import argparse
import sys
import time

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
    from data.cache import VolumeCache
    from data.oct import find_volumes
    from utils.cli import build_predictor, checkpoints, default_out, first_settings
    from utils.io import prepare_output_dir, save_npy_atomic, zip_folder

    args = parse_args(argv)
    paths = checkpoints(args)
    s = first_settings(paths)
    records = find_volumes(args.data_dir or s.data_dir, args.split, args.list_dir)
    out = prepare_output_dir(args.out or default_out(paths, args.split), args.force)
    seg_dir = out / "segment"
    seg_dir.mkdir()
    cache = VolumeCache(args.cache_dir or s.cache_dir)
    predictor = build_predictor(args, paths)
    t0 = time.time()
    for rec in records:
        image, _ = cache.load(rec)
        pred = predictor.predict_volume(np.asarray(image))
        if args.seg:
            save_npy_atomic(seg_dir / f"{rec.pid}_labelMark_volumes.npy", pred.labels.numpy().astype(np.uint8))
        if args.det:
            if pred.det_scores is None:
                raise ValueError(f"{paths}: a model has no detection head; drop --det")
            save_npy_atomic(seg_dir / f"{rec.pid}_labelMark_detections.npy", pred.det_scores.astype(np.float32))
        print(f"{rec.pid}: {image.shape[0]} slices", flush=True)
    zip_path = zip_folder(seg_dir, out / "submission.zip")
    print(f"{len(records)} volumes in {time.time() - t0:.1f}s; wrote {seg_dir} and {zip_path}")
    return out


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        sys.exit(f"error: {e}")
