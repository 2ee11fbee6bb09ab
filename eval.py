#!/usr/bin/env python
"""Evaluate one checkpoint or a fusion of several on a labelled split with the challenge metrics.

python eval.py --seg-path runs/unet_nested_mix_33/checkpoint/model_best.pth.tar --vis
python eval.py --fusion runs/a/checkpoint/model_best.pth.tar runs/b/checkpoint/model_best.pth.tar --vis
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from utils.cli import add_inference_args


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_inference_args(p)
    p.add_argument("--split", choices=["train", "val", "test"], help="labelled split (default: val; vessel: test)")
    p.add_argument("--vis", action="store_true", help="write per-slice overlays and a GIF per volume")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    from utils.distributed import cleanup, init_distributed

    args = parse_args(argv)
    info = init_distributed()
    try:
        return _evaluate(args, info)
    finally:
        cleanup(info)


def _evaluate(args: argparse.Namespace, info) -> dict:
    from data.cache import VolumeCache
    from data.oct import detection_targets, find_volumes
    from utils.cli import build_predictor, checkpoints, default_out, first_settings
    from utils.distributed import gather_objects, shard, shared_staged_output_dir
    from utils.io import prefetched, save_json_atomic
    from utils.metrics import ChallengeMetrics
    from utils.vis import save_volume_pictures

    paths = checkpoints(args)
    s = first_settings(paths)
    if s.task == "vessel":
        return _evaluate_vessel(args, info, paths, s)
    args.split = args.split or "val"
    data_dir = args.data_dir or s.data_dir
    records = find_volumes(data_dir, args.split, args.list_dir)
    cache = VolumeCache(args.cache_dir or s.cache_dir)
    predictor = build_predictor(args, paths, info)
    final = Path(args.out or default_out(paths, f"eval_{args.split}"))
    with shared_staged_output_dir(final, args.force, info) as out:
        metrics = ChallengeMetrics()
        t0 = time.time()
        with ThreadPoolExecutor(1) as loader:  # decodes the next volume while the model works on this one
            for rec, (image, labels) in prefetched(shard(records, info), cache.load, loader):  # one process per volume
                pred = predictor.predict_volume(np.asarray(image))
                det_labels = detection_targets(np.asarray(labels)) if pred.det_scores is not None else None
                d = metrics.update(rec.pid, pred.labels, labels, pred.det_scores, det_labels)
                print(f"{rec.pid}: dice REA={d[0]:.4f} SRF={d[1]:.4f} PED={d[2]:.4f}", flush=True)
                if args.vis:
                    save_volume_pictures(
                        out / "vis", rec.pid, np.asarray(image), pred.labels.numpy(), np.asarray(labels)
                    )
        metrics = ChallengeMetrics.merge(gather_objects(metrics.volumes, info))
        result = metrics.compute()
        result.update(
            {
                "checkpoints": paths,
                "split": args.split,
                "data_dir": str(data_dir),
                "volumes": len(records),
                "seconds": round(time.time() - t0, 2),
                "tta": args.tta,
            }
        )
        if info.is_main:
            save_json_atomic(out / "metrics.json", result)
            rows = metrics.per_volume_rows()
            with (out / "per_volume.csv").open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
    if not info.is_main:
        return result
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("dice", "auc"))}, indent=1))
    print(f"wrote {final}/metrics.json and per_volume.csv" + (f", pictures in {final}/vis" if args.vis else ""))
    return result


def _evaluate_vessel(args: argparse.Namespace, info, paths: list[str], s) -> dict:
    """Pixels inside the field of view, pooled over the split's photos, at the threshold chosen on validation."""
    from data.photos import load_photo, split_photos
    from utils.checkpoint import load_checkpoint
    from utils.cli import build_predictor, default_out
    from utils.distributed import gather_objects, shard, shared_staged_output_dir
    from utils.io import save_json_atomic
    from utils.metrics import binary_metrics, curves
    from utils.vessel import plot_curves, save_outputs

    split = args.split or "test"
    threshold = float(np.mean([load_checkpoint(p).get("threshold", 0.5) for p in paths]))
    records = split_photos(args.data_dir or s.data_dir, split, s.val_count)
    predictor = build_predictor(args, paths, info)
    final = Path(args.out or default_out(paths, f"eval_{split}"))
    t0 = time.time()
    with shared_staged_output_dir(final, args.force, info) as out:
        mine = []
        for rec in shard(records, info):
            photo = load_photo(rec)
            if photo.label is None:
                raise ValueError(f"{rec.image}: no label to evaluate against")
            prob = predictor.predict_image(photo.rgb)[1]
            mine.append((rec.name, prob[photo.fov].astype(np.float32), photo.label[photo.fov]))
            if args.vis:
                save_outputs(out / "vis", rec.name, photo.rgb, (prob >= threshold) & photo.fov)
        pooled = sorted((x for part in gather_objects(mine, info) for x in part), key=lambda x: x[0])
        scores = np.concatenate([x[1] for x in pooled])
        labels = np.concatenate([x[2] for x in pooled])
        result = binary_metrics(labels, scores, threshold)
        result.update(
            {
                "checkpoints": paths,
                "split": split,
                "photos": len(pooled),
                "fov_pixels": int(labels.size),
                "seconds": round(time.time() - t0, 2),
                "tta": args.tta,
            }
        )
        if info.is_main:
            save_json_atomic(out / "metrics.json", result)
            rows = [{"name": n, **binary_metrics(y, p, threshold)} for n, p, y in pooled]
            with (out / "per_image.csv").open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
            plot_curves(curves(labels, scores), result["auc_roc"], result["auc_pr"], out)
    if info.is_main:
        shown = ("auc_roc", "auc_pr", "f1", "iou", "accuracy", "sensitivity", "specificity", "threshold")
        print(json.dumps({k: result[k] for k in shown}, indent=1))
        print(f"wrote {final}/metrics.json, per_image.csv, roc.png, pr.png" + (", vis/" if args.vis else ""))
    return result


if __name__ == "__main__":
    from utils.cli import run_main

    run_main(main, __file__)
