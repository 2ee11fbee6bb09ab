"""Calibrate how much fluid an OCT model reports: the offset of its background logit against the lesions' that
makes the predicted / true fluid area on labelled data equal ``--target`` (1 by default), written into a copy of the
checkpoint (``class_bias``), which eval.py, test.py and predict.py then apply alike (``inference.predictor``).

    python -m tools.calibrate --seg-path runs/x/checkpoint/model_best.pth.tar -d CALIBRATION_DATA \\
        --layout bscans --label-map 255:fluid --split test --out runs/x/calibrated.pth.tar

Calibrate on labelled data unlike the training data (another generator, publishers' copies): the training set's own
validation split shares its biases. The offset moves every pixel's odds of "background" against "any lesion" alike,
so it keeps the model's ranking of pixels; the area is what it fixes, and ``--target`` says how much fluid is right.
Each case is predicted once, keeping per pixel the margin the fluid decision thresholds (``OctTask.fluid_margin``);
the predicted area falls as the offset rises, so a bisection over those margins finds it, and one more pass through
eval.py's own path (``OctTask.predict`` with the offset in the model) gives the figures recorded.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import numpy as np

from metrics import fluid_counts, fluid_summary

log = logging.getLogger("calibrate")

# the offsets searched, in logits: e^8 is about 3000 times the odds either way, far beyond any useful correction
BIAS_RANGE = 8.0
STEPS = 30  # bisection steps (each a count over the stored margins, not a prediction)
CLOSE_ENOUGH = 1.1  # the area ratio reached must lie within this factor of the target
MAX_PIXELS = 4e8  # margins kept in memory: 1.6 GB of float32


def build_parser() -> argparse.ArgumentParser:
    from engine.cli import HelpFormatter, add_data_args, add_inference_args

    p = argparse.ArgumentParser(prog="python -m tools.calibrate", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--seg-path", "--checkpoint", required=True, help="the OCT checkpoint to calibrate")
    add_data_args(p, "labelled split to calibrate on [default: test]", "test")
    add_inference_args(p)
    p.add_argument("--target", type=float, default=1.0, help="predicted / true fluid area to reach [default: 1]")
    p.add_argument("--out", required=True, help="the calibrated checkpoint to write (never the one read)")
    p.add_argument("--force", action="store_true", help="replace --out when this toolkit wrote it")
    p.set_defaults(fusion_weights=None)  # one model (build_predictor's fusion weights)
    return p


def margins(task, predictor, samples: list) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per case (the fluid margin (N, H, W) float32, the reference's fluid (N, H, W) bool): one prediction each."""
    out = []
    for _, sample in samples:
        margin = task.fluid_margin(predictor, sample).cpu().numpy()
        out.append((margin, np.asarray(sample.labels) > 0))  # fluid as the evaluator counts it (label > 0)
    return out


def fluid_figures(cases: list[tuple[np.ndarray, np.ndarray]], offset: float) -> dict[str, float]:
    """The any-fluid figures (``metrics.fluid_summary``) with the background logit offset by ``offset``."""
    return fluid_summary(np.concatenate([fluid_counts(margin > offset, truth) for margin, truth in cases]))


def calibrate(cases: list[tuple[np.ndarray, np.ndarray]], target: float = 1.0) -> tuple[float, dict, dict]:
    """(offset, figures without it, figures with it) such that the fluid area ratio is ``target`` to the bisection's
    precision; a ``ValueError`` where no offset within ``BIAS_RANGE`` comes within ``CLOSE_ENOUGH`` of it."""
    if not math.isfinite(target) or target <= 0:
        raise ValueError(f"--target must be a positive number, got {target}")
    before = fluid_figures(cases, 0.0)
    ratio = before["fluid_area_ratio"]
    if not math.isfinite(ratio):
        raise ValueError("the calibration data hold no fluid: no area ratio to calibrate against")
    lo, hi = (0.0, BIAS_RANGE) if ratio > target else (-BIAS_RANGE, 0.0)  # a higher offset, less fluid
    best = (0.0, before)
    for _ in range(STEPS):
        mid = (lo + hi) / 2
        figures = fluid_figures(cases, mid)
        r = figures["fluid_area_ratio"]
        if abs(math.log(max(r, 1e-9) / target)) < abs(math.log(max(best[1]["fluid_area_ratio"], 1e-9) / target)):
            best = (mid, figures)
        lo, hi = (mid, hi) if r > target else (lo, mid)
    reached = best[1]["fluid_area_ratio"]
    if not target / CLOSE_ENOUGH <= reached <= target * CLOSE_ENOUGH:
        raise ValueError(
            f"no offset within +-{BIAS_RANGE:g} logits brings the fluid area ratio to {target:g} (from {ratio:.3f} "
            f"at no offset to {reached:.3f} at {best[0]:+.3f}): the model does not rank fluid above background on "
            "these data; nothing written"
        )
    return best[0], before, best[1]


def pipeline_figures(task, predictor, samples: list) -> dict[str, float]:
    """The evaluator's figures over ``samples`` through ``task.predict``, as eval.py computes them."""
    evaluator = task.evaluator()
    for rec, sample in samples:
        evaluator.update(rec, sample, task.predict(predictor, sample))
    return evaluator.aggregate()


def main(argv: list[str] | None = None) -> dict:
    import hashlib

    import torch

    from engine.cli import build_predictor, protected_paths, task_for, task_overrides
    from inference.predictor import flush_denormals
    from utils.checkpoint import FORMAT_VERSION, load_checkpoint
    from utils.io import check_output_file, output_file
    from utils.log import setup_logging

    flush_denormals()  # before reading the records, whose decoding may start PyTorch's threads
    setup_logging()
    args = build_parser().parse_args(argv)
    if not math.isfinite(args.target) or args.target <= 0:
        raise ValueError(f"--target must be a positive number, got {args.target}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    src, dst = Path(args.seg_path), Path(args.out)
    digest = hashlib.sha256(src.read_bytes()).hexdigest() if src.is_file() else None
    settings, task = task_for([str(src)], args.cache_dir, None, task_overrides(args))
    if task.name != "oct":
        raise ValueError(f"{src}: a {task.name} model; tools.calibrate calibrates the fluid of OCT models")
    data_dir = args.data_dir or settings.data_dir
    records = task.records(args.split, data_dir, args.list_dir)
    protected = [
        ("the checkpoint being calibrated", src),
        *protected_paths(data_dir, [str(src)], task, records, args.list_dir),
    ]
    check_output_file(dst, args.force, protected)  # before the slow part
    if not records:
        raise ValueError(f"{data_dir}: no {args.split} records to calibrate on")
    samples = [(rec, task.load(rec)) for rec in records]
    unlabelled = [rec.name for rec, s in samples if s.labels is None]
    if unlabelled:
        raise ValueError(
            f"{data_dir}: {len(unlabelled)} {args.split} case(s) without labels ({', '.join(unlabelled[:3])}); "
            "calibrate on labelled data"
        )
    pixels = sum(np.asarray(s.image).size for _, s in samples)
    if pixels > MAX_PIXELS:
        raise ValueError(
            f"{data_dir}: {pixels / 1e6:.0f} million pixels in the {args.split} split; calibration keeps a margin "
            f"per pixel and takes at most {MAX_PIXELS / 1e6:.0f} million: calibrate on B-scans or fewer volumes"
        )
    predictor = build_predictor(args, [str(src)])
    # the scale estimate does not depend on the offset: made once per case for both passes
    factors: dict[int, tuple[float, float]] = {}
    scale_factors = task.scale_factors

    def once(sample):
        if id(sample) not in factors:
            factors[id(sample)] = scale_factors(sample)
        return factors[id(sample)]

    task.scale_factors = once
    log.info(f"calibrating {src} on {len(samples)} {args.split} {task.noun} of {data_dir} to area ratio {args.target}")
    bias, before, _ = calibrate(margins(task, predictor, samples), args.target)
    for member in predictor.members:
        base = member.class_bias or (0.0,) * settings.num_classes
        member.class_bias = (base[0] + bias, *base[1:])
    after = pipeline_figures(task, predictor, samples)  # eval.py's own path, with the offset in the model
    reached = after["fluid_area_ratio"]
    if not args.target / CLOSE_ENOUGH <= reached <= args.target * CLOSE_ENOUGH:
        raise ValueError(
            f"with the offset {bias:+.3f} found, eval.py's path gives a fluid area ratio of {reached:.3f}, not "
            f"{args.target:g} (flip TTA or resizing inside the model blur the margins): nothing written"
        )

    if digest is None or hashlib.sha256(src.read_bytes()).hexdigest() != digest:
        raise ValueError(
            f"{src} changed while it was being calibrated (a training replacing its best checkpoint?): the offset "
            "fits the weights read before; nothing written. Calibrate a copy that nothing writes to"
        )
    state = load_checkpoint(src)
    base = list(state.get("class_bias") or [0.0] * settings.num_classes)
    state["class_bias"] = [base[0] + bias, *base[1:]]
    keys = ("fluid_area_ratio", "fluid_dice", "fluid_dice_bscan", "fluid_false_bscans")
    state["calibration"] = {
        "tool": "tools.calibrate",
        "checkpoint": str(src),
        "checkpoint_sha256": digest,
        "data_dir": str(data_dir),
        "split": args.split,
        "records": len(samples),
        "target": args.target,
        "background_offset": bias,
        "options": {"tta": args.tta, "amp": args.amp, **task.applied_options()},
        "before": {k: before.get(k) for k in keys},
        "after": {k: after.get(k) for k in keys},
    }
    # a calibrated model is for inference: resuming its training would keep the offset for other weights
    drop = ("format_version", "optimizer", "rng_states", "train_sums", "step")
    with output_file(dst, args.force, protected) as tmp:
        torch.save({"format_version": FORMAT_VERSION, **{k: v for k, v in state.items() if k not in drop}}, tmp)
    log.info(
        f"background logit offset {bias:+.3f}: fluid area ratio {before['fluid_area_ratio']:.3f} -> "
        f"{after['fluid_area_ratio']:.3f}, fluid Dice {before['fluid_dice']:.4f} -> {after['fluid_dice']:.4f}, "
        f"fluid-free B-scans with fluid {before['fluid_false_bscans']:.3f} -> {after['fluid_false_bscans']:.3f}; "
        f"wrote {dst}"
    )
    return state["calibration"]


if __name__ == "__main__":
    from utils.checkpoint import CheckpointError

    try:
        main()
    except (CheckpointError, OSError, RuntimeError, ValueError) as e:
        sys.exit("error: " + " ".join(str(e).split()))
