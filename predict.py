#!/usr/bin/env python
"""Predict files and folders you point at, with a trained checkpoint (or a fusion of several): fundus photos with
a vessel checkpoint (the shipped DRIVE model by default), OCT volumes with an OCT one: a folder of slices (such as
``<PID>.img/1.bmp ...``), a multi-page TIFF, NIfTI, MetaImage, DICOM, a raw Cirrus ``.img`` cube or a vendor file.

    python predict.py photo1.tif photo2.jpg --out predictions/
    python predict.py data/synthetic/Edema_testset/original_images/*.img \
        --checkpoint runs/demo/checkpoint/model_best.pth.tar --report --spacing 0.1875 0.0078 0.0469

writes what test.py writes for each input (vessel: ``<stem>_mask.png``; OCT: ``segment/<PID>_labelMark_volumes.npy``
and ``..._detections.npy``) and pictures (vessel: ``<stem>_blend.png``; OCT: ``<PID>.gif`` and ``<PID>/<z>.png``)
unless ``--no-pictures``; with ``--report`` (OCT) also ``quantify.csv`` (fluid volumes in nL per patient) and a
self-contained HTML page per patient with ``report/index.html``. From Python: ``tasks.vessel.Segmenter``, or
``Predictor`` with a task's ``predict``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from engine.cli import HelpFormatter, add_checkpoint_args, add_inference_args, add_task_settings

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "drive_unet.pth.tar"
log = logging.getLogger("predict")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="predict.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, help="photos (vessel) or slice folders (OCT)")
    add_checkpoint_args(p, default=DEFAULT_CHECKPOINT)
    add_inference_args(p)
    add_task_settings(p, inference=True, data=False)  # a task's own settings that shape its predictions
    g = p.add_argument_group("OCT volumes")
    g.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("DZ", "DY", "DX"),
        help="voxel size in mm: between B-scans, along depth, between A-scans [default: the file's own, or the "
        "Cirrus cube named in the file name]",
    )
    g.add_argument(
        "--cube", type=cube_arg, help="raw Cirrus .img: A-scans x B-scans, e.g. 512x128 [default: from the file name]"
    )
    g.add_argument(
        "--report",
        action="store_true",
        help="also write quantify.csv (fluid volumes in nL, affected B-scans) and an HTML report per patient",
    )
    g = p.add_argument_group("output")
    g.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (new, or empty)")
    g.add_argument("--force", action="store_true", help="replace an output folder an earlier predict.py wrote")
    g.add_argument(
        "--no-pictures", "--no-blend", dest="pictures", action="store_false", help="write no pictures (blends, GIFs)"
    )
    return p


def cube_arg(text: str) -> tuple[int, int]:
    """``--cube 512x128`` -> (512, 128)."""
    try:
        a, b = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"A-scans x B-scans such as 512x128, not {text!r}") from None
    if a < 1 or b < 1:
        raise argparse.ArgumentTypeError(f"a cube size must be positive, got {text}")
    return a, b


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    from engine.cli import build_predictor, checkpoints, task_for, task_overrides
    from utils.io import staged_output_dir
    from utils.log import setup_logging

    args = parse_args(argv)
    setup_logging()
    paths = checkpoints(args)
    settings, task = task_for(paths, weights=args.fusion_weights, overrides=task_overrides(args))
    taken: dict[str, Path] = {}  # output name -> the input whose outputs take it; checked before any prediction
    for path in args.inputs:
        for name in task.output_names(task.input_name(path)):
            if name in task.reserved_names:
                own = ", ".join(task.reserved_names)
                raise ValueError(f"{path}: its name {name!r} is one of the output folder's own ({own}); rename it")
            if name in taken:
                raise ValueError(
                    f"{taken[name]} and {path} would both be written as {name!r}; rename one or predict them separately"
                )
            taken[name] = path
    given = {k: getattr(args, k) for k in ("cube", "spacing") if getattr(args, k) is not None}
    for option in given:
        if option not in task.input_options:
            raise ValueError(f"--{option} applies to OCT volumes, not to the {task.name} task's inputs")
    if args.report and not task.reports:
        raise ValueError(f"--report: the {task.name} task has no report; leave it out")
    predictor = build_predictor(args, paths)
    protected = [("a checkpoint being read", Path(p)) for p in paths]
    protected += [("an input being read", Path(i)) for i in args.inputs]
    # a scan folder's parent holds the other scans of its data split: predictions among them break the split
    protected += [("the folder holding the scan folder " + str(i), Path(i).parent) for i in args.inputs if i.is_dir()]
    final = args.out.resolve()
    written: list[Path] = []
    rows: list[dict] = []
    with staged_output_dir(final, args.force, protected) as out:  # complete or absent, never half-written
        for path in args.inputs:
            name, sample = task.input_name(path), task.read_input(path, **given)
            if args.report and getattr(sample, "spacing", None) is None:
                raise ValueError(
                    f"{path}: the voxel spacing is unknown (not in the file, and no Cirrus cube size in its name); "
                    "fluid volumes need it: pass --spacing DZ DY DX (mm)"
                )
            prediction = task.predict(predictor, sample)
            files = task.write_prediction(out, name, prediction, seg=True, det=task.detects)
            if args.pictures:
                files += task.save_pictures(out, name, sample, prediction)
            if args.report:
                quant = task.quantify(sample, prediction)
                files.append(task.write_report(out / "report", name, sample, prediction, quant))
                rows.append({"name": name, "quant": quant, "report": files[-1].name, "slices": len(sample.image)})
            written += [final / f.relative_to(out) for f in files]
            log.info(f"{path} -> {', '.join(str(f.relative_to(out)) for f in files)}")
        if rows:
            written += [final / f.relative_to(out) for f in write_run_report(out, rows)]
    log.info(f"wrote {len(written)} files to {final}")
    return written


def write_run_report(out: Path, rows: list[dict]) -> list[Path]:
    """``quantify.csv`` (one row per patient) and ``report/index.html``."""
    from data.oct import LESION_NAMES
    from metrics.quantify import quantify_row
    from reports.html import write_index
    from utils.io import save_csv_atomic

    table = [quantify_row(r["name"], r["quant"], LESION_NAMES) for r in rows]
    csv = out / "quantify.csv"
    save_csv_atomic(csv, table)
    index = [
        {"name": r["name"], "report": r["report"], "volume_nl": r["quant"]["volume_nl"], "slices": r["slices"]}
        for r in rows
    ]
    return [csv, write_index(out / "report" / "index.html", index)]


if __name__ == "__main__":
    from engine.cli import cli_main

    cli_main(__file__, parse_args, main, relaunch=False)
