#!/usr/bin/env python
"""Predict files and folders you point at, with a trained checkpoint (or a fusion of several): fundus photos with
a vessel checkpoint (the shipped DRIVE model by default), OCT with an OCT one: single B-scan images (PNG, JPEG, BMP,
TIFF), folders of independent B-scans, and volumes: a folder of numbered slices (such as ``<PID>.img/1.bmp ...``), a
multi-page TIFF, NIfTI, MetaImage, DICOM, a raw Cirrus ``.img`` cube or a vendor file. Without a checkpoint, the task
follows from the inputs (``--task`` where they do not say: a grey B-scan is OCT, a colour photo with a round field of
view is a fundus photo) and its shipped model is used.

    python predict.py photo1.tif photo2.jpg --out predictions/
    python predict.py bscan.png scans/ --checkpoint runs/demo/checkpoint/model_best.pth.tar
    python predict.py data/synthetic/Edema_testset/original_images/*.img \
        --checkpoint runs/demo/checkpoint/model_best.pth.tar --report --spacing 0.1875 0.0078 0.0469

writes what test.py writes for each input (vessel: ``<stem>_mask.png``; OCT: ``segment/<PID>_labelMark_volumes.npy``
and ``..._detections.npy``; a single B-scan: ``segment/<stem>_labels.png``, class indices 0-3 at its own size) and
pictures (vessel: ``<stem>_blend.png``; OCT: ``<PID>.gif`` and ``<PID>/<z>.png``; a B-scan: ``<stem>.png``)
unless ``--no-pictures``. Every OCT volume also gets ``segment/<PID>_labels.nii.gz`` (the class map in the input's
geometry), a DICOM input ``segment/<PID>_seg.dcm`` (a DICOM Segmentation referencing it), and every OCT input
``segment/<PID>_summary.json`` (volumes, ETDRS sectors, thickness, detection per B-scan, spacing, scan, model).
With ``--report`` (OCT) also ``quantify.csv`` (fluid volumes in nL, per ETDRS sector, CST) and a self-contained
HTML page per patient with ``report/index.html``; ``--compare V1 V2`` adds the change between two visits of one
eye. From Python: ``tasks.oct.FluidSegmenter``, ``tasks.vessel.Segmenter``, or ``Predictor`` with a task's
``predict``.

    python predict.py visit1.dcm visit2.dcm --compare --out change/
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from engine.cli import HelpFormatter, add_checkpoint_args, add_inference_args, add_task_settings

TASKS = ("oct", "vessel")  # the built-in tasks (tasks.list_tasks, without importing them)
log = logging.getLogger("predict")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="predict.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, help="photos (vessel); B-scans, folders of B-scans, volumes (OCT)")
    p.add_argument(
        "--task",
        choices=TASKS,
        help="what the inputs are [default: the checkpoint's task; without a checkpoint, what the inputs show]",
    )
    add_checkpoint_args(p, shipped="the shipped model of the inputs' task (checkpoints/)")
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
        "--bscans",
        action="store_true",
        help="every image in a folder is a B-scan of its own [default: so when the names are not one numbered "
        "series; one such series is a volume]",
    )
    g.add_argument(
        "--report",
        action="store_true",
        help="also write quantify.csv (fluid volumes in nL, affected B-scans) and an HTML report per patient",
    )
    g.add_argument(
        "--compare",
        action="store_true",
        help="the two inputs are two visits of one eye, the earlier first: also report/<first>_vs_<second>.html with "
        "the change of each lesion, per ETDRS sector and of the CST (implies --report)",
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


def since_launch() -> float:
    """Seconds since this process started (Linux: its start time in /proc, to 10 ms), 0 where unknown: the
    interpreter's own start-up and the imports before ``main`` count too."""
    import os

    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return 0.0


def main(argv: list[str] | None = None, script: bool = False) -> list[Path]:
    """predict.py; ``script``: run as ``python predict.py``, whose times count from the process's launch."""
    import time

    started = time.perf_counter() - (since_launch() if script else 0.0)
    args = parse_args(argv)
    read_from = read_first_ahead(args)
    if read_from is None:
        return run(args, started, None)
    from data.volumes import drop_read_ahead

    try:
        return run(args, started, read_from - started)
    finally:
        drop_read_ahead()  # a run that failed before reading its first input leaves nothing behind


def run(args: argparse.Namespace, started: float, read_from: float | None) -> list[Path]:
    """predict.py after parsing: ``started`` its clock at launch, ``read_from`` when the first input began to be
    read ahead (seconds after ``started``), or None."""
    import time

    from engine.cli import build_predictor, checkpoints, task_for, task_overrides
    from utils.io import staged_output_dir
    from utils.log import setup_logging

    setup_logging()
    args.report = args.report or args.compare
    if not (args.seg_path or args.fusion or args.fusion_study):
        args.seg_path = shipped_checkpoint(args.task or inputs_task(args.inputs))
    paths = checkpoints(args)
    settings, task = task_for(paths, weights=args.fusion_weights, overrides=task_overrides(args))
    if args.task not in (None, task.name):
        raise ValueError(f"--task {args.task}, but {paths[0]} is a {task.name} model; give a {args.task} checkpoint")
    inputs = [p for path in args.inputs for p in task.expand_input(path, each_file=args.bscans)]
    taken: dict[str, Path] = {}  # output name -> the input whose outputs take it; checked before any prediction
    for path in inputs:
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
    if args.compare and len(inputs) != 2:
        raise ValueError(f"--compare takes two visits of one eye (the earlier first), got {len(inputs)} inputs")
    predictor = build_predictor(args, paths)
    model = model_info(paths, args.fusion_weights)
    took = {"start-up (imports, model)": time.perf_counter() - started, "read": 0.0, "predict": 0.0, "write": 0.0}
    protected = [("a checkpoint being read", Path(p)) for p in paths]
    protected += [("an input being read", Path(i)) for i in [*args.inputs, *inputs]]
    # a scan folder's parent holds the other scans of its data split: predictions among them break the split
    protected += [("the folder holding the scan folder " + str(i), Path(i).parent) for i in inputs if i.is_dir()]
    final = args.out.resolve()
    written: list[Path] = []
    rows: list[dict] = []
    with staged_output_dir(final, args.force, protected) as out:  # complete or absent, never half-written
        read = {}  # --compare: both visits are read and checked against each other before either is predicted
        if args.compare:
            read = {path: task.read_input(path, **given) for path in inputs}
            for path, sample in read.items():
                task.check_report(path, sample)
            task.check_visits(*read.items())
        for path in inputs:
            name = task.input_name(path)
            clock = time.perf_counter()
            sample = read.pop(path) if path in read else task.read_input(path, **given)
            if args.report:
                task.check_report(path, sample)
            took["read"] += time.perf_counter() - clock
            clock = time.perf_counter()
            prediction = task.predict(predictor, sample)
            took["predict"] += time.perf_counter() - clock
            clock = time.perf_counter()
            files = task.write_prediction(out, name, prediction, seg=True, det=task.detects, sample=sample)
            if args.pictures:
                files += task.save_pictures(out, name, sample, prediction)
            quant = task.quantify(sample, prediction) if task.reports else None
            if quant is not None:
                files += [f for f in [task.write_summary(out, name, sample, prediction, quant, model)] if f]
            if args.report:
                files.append(task.write_report(out / "report", name, sample, prediction, quant, model=model))
                rows.append({"name": name, "quant": quant, "report": files[-1].name, "slices": len(sample.image)})
                rows[-1]["cst_um"] = (quant.get("etdrs") or {}).get("cst_um")
            written += [final / f.relative_to(out) for f in files]
            took["write"] += time.perf_counter() - clock  # the outputs, with the summary's grid and the report
            log.info(f"{path} -> {', '.join(str(f.relative_to(out)) for f in files)}")
        if rows:
            written += [final / f.relative_to(out) for f in write_run_report(out, rows)]
        if args.compare:
            written.append(final / write_comparison(out, rows, model).relative_to(out))
    log.info(f"wrote {len(written)} files to {final}")
    ahead = "" if read_from is None else f"; the first input read from {read_from:.2f} s on, beside the start-up"
    log.info("times: " + ", ".join(f"{k} {v:.1f} s" for k, v in took.items()) + ahead)
    return written


def read_first_ahead(args: argparse.Namespace) -> float | None:
    """The first input, when it is a volume, read in a background thread from now on (``data.volumes.read_ahead``,
    which imports no PyTorch) while PyTorch and the model load; the clock (``time.perf_counter``) when it began, or
    None where nothing was read ahead (single images read in milliseconds; ``--bscans`` reads a folder's files one
    by one)."""
    import time

    from data.common import IMAGE_EXTS

    first = Path(args.inputs[0])
    if args.bscans or not (first.is_dir() or first.suffix.lower() not in IMAGE_EXTS):
        return None
    if not first.exists():
        return None  # said in its place, with the others
    from data.volumes import read_ahead

    began = time.perf_counter()
    read_ahead(first, args.cube, args.spacing)
    return began


def model_info(paths: list[str], weights=None) -> dict:
    """What reports and summaries name as the model: each checkpoint's file name and SHA-256, the fusion weights,
    the toolkit's version."""
    from utils.io import sha256_of
    from utils.version import VERSION

    return {
        "checkpoints": [{"file": Path(p).name, "sha256": sha256_of(p)} for p in paths],
        "fusion_weights": None if weights is None else [float(w) for w in weights],
        "toolkit": f"retina-lesion {VERSION}",
    }


def inputs_task(inputs: list[Path]) -> str:
    """The one task whose inputs these are by their form (``Task.claims``); otherwise an error asking for --task."""
    from tasks import get_task

    for path in inputs:
        if not path.exists():
            raise ValueError(f"{path}: not found")
    claims = {path: [t for t in TASKS if get_task(t).claims(path)] for path in inputs}
    unsure = [str(p) for p, names in claims.items() if len(names) != 1]
    if unsure:
        raise ValueError(
            f"cannot tell from {', '.join(unsure[:3])} whether {'it is' if len(unsure) == 1 else 'they are'} OCT or "
            "a fundus photo; pass --task oct or --task vessel (or --checkpoint)"
        )
    found = {names[0] for names in claims.values()}
    if len(found) > 1:
        mixed = {t: next(str(p) for p, n in claims.items() if n == [t]) for t in sorted(found)}
        raise ValueError(
            f"the inputs are for different tasks ({', '.join(f'{t}: {p}' for t, p in mixed.items())}); predict them "
            "separately, or pass --task"
        )
    return found.pop()


def shipped_checkpoint(task_name: str) -> str:
    """The model that ships for ``task_name``; an error naming what to do where none does."""
    from tasks import get_task

    path = get_task(task_name).shipped_checkpoint
    if path is None or not path.is_file():
        raise ValueError(
            f"no {task_name} model ships with this version ({path or 'none'}); pass --checkpoint with a model trained "
            "by train.py (README: Quick start)"
        )
    log.info(f"{task_name} inputs: the shipped model {path.parent.name}/{path.name}")
    return str(path)


def write_comparison(out: Path, rows: list[dict], model: dict) -> Path:
    """``report/<first>_vs_<second>.html``: the change between two visits of one eye (``--compare``)."""
    import numpy as np

    from data.oct import LESION_NAMES
    from reports.html import write_compare_report

    first, second = rows
    spacings = [r["quant"]["spacing"] for r in rows]
    if not np.allclose(spacings[0], spacings[1], rtol=0.01):
        log.warning(
            f"--compare: the visits' spacings differ ({spacings[0]} and {spacings[1]} mm): volumes compare, "
            "but check the scan pattern"
        )
    return write_compare_report(
        out / "report" / f"{first['name']}_vs_{second['name']}.html",
        (first["name"], second["name"]),
        (first["quant"], second["quant"]),
        (first["report"], second["report"]),
        LESION_NAMES,
        model,
    )


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
        {
            "name": r["name"],
            "report": r["report"],
            "volume_nl": r["quant"]["volume_nl"],
            "slices": r["slices"],
            "cst_um": r.get("cst_um"),
        }
        for r in rows
    ]
    return [csv, write_index(out / "report" / "index.html", index)]


if __name__ == "__main__":
    from engine.cli import cli_main

    cli_main(__file__, parse_args, lambda argv: main(argv, script=True), relaunch=False)
