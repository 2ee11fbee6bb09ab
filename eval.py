#!/usr/bin/env python
"""Evaluate one checkpoint or a fusion of several on a labelled split with the task's metrics
(OCT: per-class Dice and detection AUC as the challenge computed them; vessel: pooled field-of-view pixel metrics).

    python eval.py --seg-path runs/unet_nested_mix_33/checkpoint/model_best.pth.tar --vis
    python eval.py --fusion runs/a/checkpoint/model_best.pth.tar runs/b/checkpoint/model_best.pth.tar --vis
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from engine.cli import HelpFormatter, add_checkpoint_args, add_data_args, add_inference_args, add_output_args

log = logging.getLogger("eval")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eval.py", description=__doc__, formatter_class=HelpFormatter)
    add_checkpoint_args(p)
    add_data_args(p, "labelled split [default: oct val, vessel test]", None)
    add_inference_args(p)
    add_output_args(
        p,
        "output folder [default: <run>/eval_<split>; runs/<checkpoint name>/eval_<split> for one outside a run]",
    )
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def check_val_count(args, task, split: str, data_dir) -> None:
    """``--split val --val-count N`` on the training data with another N than the run's would score cases the model
    was trained on as validation."""
    if split != "val" or args.val_count is None or not task.states:
        return
    from utils.config import Settings

    trained = Settings.from_dict(task.states[0]["settings"], source=task.states[0].get("path", "the checkpoint"))
    held = trained.task_settings.get("val_count")
    same_data = Path(data_dir).resolve() == Path(trained.data_dir).resolve()
    if same_data and held is not None and held != args.val_count:
        raise ValueError(
            f"--val-count {args.val_count}, but the model was trained holding out {held} cases of "
            f"{data_dir}: the validation split would hold cases it was trained on; drop --val-count"
        )


def main(argv: list[str] | None = None) -> dict:
    from engine.cli import driver_session, open_inference
    from engine.evaluate import evaluate
    from utils.distributed import shared_staged_output_dir
    from utils.io import save_json_atomic

    args = parse_args(argv)
    with driver_session() as info:

        def check(paths, task, split, data_dir):
            check_val_count(args, task, split, data_dir)

        run = open_inference(args, info, "eval_{split}", check)
        task, split = run.task, run.split
        t0 = time.time()
        with shared_staged_output_dir(run.out, args.force, info, run.protected) as out:

            def on_record(rec, sample, prediction, figures):
                if figures:
                    log.info(f"{rec.name}: " + " ".join(f"{k}={v:.4f}" for k, v in figures.items()))
                if args.vis:
                    task.save_pictures(out / "vis", rec.name, sample, prediction)

            evaluator = evaluate(task, run.predictor, run.records, info, on_record, f"evaluating {split}", args.workers)
            result = evaluator.aggregate()
            result.update(
                {
                    "checkpoints": run.paths,
                    "split": split,
                    "data_dir": str(run.data_dir),
                    task.noun: len(run.records),
                    "seconds": round(time.time() - t0, 2),
                    "tta": args.tta,
                    **task.applied_options(),
                }
            )
            if info.is_main:
                save_json_atomic(out / "metrics.json", result)
                written = evaluator.write(out, result)
        if info.is_main:
            shown = {k: result[k] for k in task.summary_keys if k in result}
            log.info(f"{split}: " + " ".join(f"{k}={v:.4f}" for k, v in shown.items()))
            names = ", ".join(["metrics.json", *(p.name for p in written)] + (["vis/"] if args.vis else []))
            log.info(f"wrote {names} to {run.out}")
        return result


if __name__ == "__main__":
    from engine.cli import cli_main

    cli_main(__file__, parse_args, main)
