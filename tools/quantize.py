"""int8 for the CPU: a checkpoint's graph quantised by OpenVINO's NNCF, calibrated on the checkpoint's own data, kept
only when an accuracy check on labelled data holds; ``predict.py``, ``eval.py`` and ``test.py`` then run it with
``--int8``.

    python -m tools.quantize --seg-path runs/demo/checkpoint/model_best.pth.tar -d data/synthetic --split test

Calibration: the inputs the model sees (B-scans with their neighbours, photo windows, after resizing and
normalisation, exactly as the predictor feeds them) from ``--calibration-split`` (default: train) of
``--calibration-dir`` (default: ``-d``), read as the checkpoint reads its own data (the data options below apply to
the check only), ``--inputs`` of them drawn evenly. NNCF's accuracy control keeps the layers in fp32 whose int8
would move the labels of those inputs most (``--max-drop``). The check: PyTorch fp32 and the int8 graph on every
record of ``--split``; each figure the task names (``Task.int8_tolerances``: OCT mean Dice and detection AUC within
0.005; vessels AUC-ROC within 0.002 and F1 within 0.005) must move by no more than its tolerance. The graph and its
record (``int8.json``: the check's figures, the calibration data, ``passed``) are written into the checkpoint's graph
cache (``inference.backends``), never beside the weights. A refused graph stays recorded as refused: ``--int8`` then
says why instead of running it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("quantize")


def build_parser() -> argparse.ArgumentParser:
    from engine.cli import HelpFormatter, add_data_args

    p = argparse.ArgumentParser(prog="python -m tools.quantize", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--seg-path", "--checkpoint", required=True, help="the checkpoint to quantise")
    add_data_args(p, "labelled split the accuracy check runs on [default: the task's eval split]", None)
    p.add_argument("--calibration-dir", help="data to calibrate on, in the checkpoint's own layout [default: -d]")
    p.add_argument("--calibration-split", default="train", choices=["train", "val", "test"])
    p.add_argument("--inputs", type=int, default=32, help="network inputs (B-scans, windows) to calibrate on")
    p.add_argument("--batch-size", type=int, default=8, help="inputs per forward pass")
    p.add_argument(
        "--max-drop",
        type=float,
        default=0.01,
        help="NNCF's accuracy control: layers go back to fp32 until the int8 labels of the calibration inputs agree "
        "with fp32's to this much (mean lesion Dice); 0 off, plain int8 everywhere",
    )
    p.add_argument("--threads", type=int, help="CPU threads [default: every core]")
    return p


def calibration_inputs(task, predictor, records: list, wanted: int) -> list:
    """Up to ``wanted`` network inputs (1, 3, H, W) float32, spread evenly over ``records`` and their inputs."""
    runner = predictor.runner(0)
    per_record = -(-wanted // max(len(records), 1))
    chosen = []
    for rec in records:
        runner.recorded = []
        task.predict(predictor, task.load(rec))
        items = [a[i : i + 1] for a in runner.recorded for i in range(a.shape[0])]
        step = max(len(items) // per_record, 1)
        chosen += items[::step][:per_record]
        runner.recorded = None
        if len(chosen) >= wanted:
            break
    return chosen[:wanted]


def main(argv: list[str] | None = None) -> dict:
    import torch

    from engine.cli import task_for, task_overrides
    from engine.evaluate import compare_predictors
    from inference.backends import GRAPH_VERSION, GraphCache, GraphRunner, check_int8
    from inference.predictor import flush_denormals
    from inference.quantize import quantize_openvino
    from tasks import load_predictor
    from utils.errors import ToolkitError
    from utils.io import save_json_atomic, sha256_of
    from utils.log import setup_logging

    flush_denormals()  # before anything starts PyTorch's threads (the calibration data's decoding may)
    setup_logging()
    args = build_parser().parse_args(argv)
    if args.inputs < 1 or args.batch_size < 1:
        raise ValueError(f"--inputs and --batch-size must be >= 1, got {args.inputs} and {args.batch_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = Path(args.seg_path)
    settings, own_task = task_for([str(ckpt)], args.cache_dir)
    _, task = task_for([str(ckpt)], args.cache_dir, None, task_overrides(args))
    if not task.int8_tolerances:
        raise ValueError(f"{ckpt}: the {task.name} task names no figures to check an int8 graph against")
    data_dir = args.data_dir or settings.data_dir
    calibration_dir = args.calibration_dir or data_dir
    split = args.split or task.eval_split
    calibration = own_task.records(
        args.calibration_split, calibration_dir, None if args.calibration_dir else args.list_dir
    )
    check = task.records(split, data_dir, args.list_dir)
    if not calibration or not check:
        raise ValueError(
            f"{data_dir}: no {args.calibration_split} records to calibrate on or no {split} records to check"
        )
    kw = dict(device="cpu", batch_size=args.batch_size, amp=False, threads=args.threads)
    fp32 = load_predictor([ckpt], backend="openvino", **kw)
    if not isinstance(fp32.runner(0), GraphRunner):
        raise ValueError("int8 needs the openvino backend, which could not be set up here (see the warning above)")
    model = fp32.members[0].model
    cache = GraphCache.for_model(model)
    log.info(f"calibrating on up to {args.inputs} inputs of the {args.calibration_split} split of {calibration_dir}")
    inputs = calibration_inputs(own_task, fp32, calibration, args.inputs)
    bias = fp32.members[0].class_bias
    xml = quantize_openvino(cache.fp32_graph(model), inputs, cache.dir / "int8.xml", bias, args.max_drop)

    reference = load_predictor([ckpt], backend="torch", **kw)
    int8 = load_predictor([ckpt], backend="torch", **kw)
    digests = sha256_of(xml), sha256_of(xml.with_suffix(".bin"))  # the files checked are the files recorded
    int8.use_runner(0, GraphRunner(model, "openvino", cache, "int8", args.threads, graph=xml))
    log.info(f"checking int8 against PyTorch fp32 on {len(check)} {split} {task.noun}")
    found = compare_predictors(task, reference, int8, check)
    present = {k: t for k, t in task.int8_tolerances.items() if k in found["reference"] and k in found["other"]}
    if not present:  # e.g. labels of one "fluid" class: no per-lesion Dice
        raise ValueError(
            f"{data_dir}: its labels give none of the figures the int8 check compares "
            f"({', '.join(task.int8_tolerances)}); check on data labelled per lesion"
        )
    figures = {
        k: {
            "fp32": found["reference"][k],
            "int8": found["other"][k],
            "change": found["other"][k] - found["reference"][k],
            "tolerance": tol,
        }
        for k, tol in present.items()
    }
    passed = all(abs(f["change"]) <= f["tolerance"] for f in figures.values())
    summary = ", ".join(
        f"{k} {f['fp32']:.4f} -> {f['int8']:.4f} ({f['change']:+.4f}, tolerance {f['tolerance']})"
        for k, f in figures.items()
    )
    record = {
        "key": cache.key,
        "graph_version": GRAPH_VERSION,
        "checkpoint": str(ckpt.resolve()),
        "xml_sha256": digests[0],
        "bin_sha256": digests[1],
        "calibration": {"data": str(calibration_dir), "split": args.calibration_split, "inputs": len(inputs)},
        "check": {"data": str(data_dir), "split": split, "records": len(check), "figures": figures},
        "pixel_agreement": found["pixel_agreement"],
        "passed": passed,
        "summary": summary,
    }
    if (sha256_of(xml), sha256_of(xml.with_suffix(".bin"))) != digests:
        raise ToolkitError(f"{cache.dir}: the int8 graph changed during its check (another tools.quantize?); run again")
    save_json_atomic(cache.dir / "int8.json", record)
    print(f"int8 {'kept' if passed else 'REFUSED'}: {summary}; pixels agreeing {found['pixel_agreement']:.4%}")
    print(f"record: {cache.dir / 'int8.json'}")
    if passed:
        check_int8(cache, ckpt)  # what --int8 will read back
    return record


if __name__ == "__main__":
    try:
        record = main()
    except (ValueError, OSError, RuntimeError) as e:
        sys.exit("error: " + " ".join(str(e).split()))
    sys.exit(0 if record["passed"] else 1)
