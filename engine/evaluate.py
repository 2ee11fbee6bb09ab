"""The one evaluation loop: validation during training and eval.py both run it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from inference.predictor import Predictor
from tasks.base import Evaluator, Task
from utils.distributed import DistInfo, gather_objects, shard
from utils.io import prefetched
from utils.log import Progress

log = logging.getLogger(__name__)


def evaluate(
    task: Task,
    predictor: Predictor,
    records: list,
    info: DistInfo,
    on_record: Callable | None = None,
    desc: str = "validation",
    workers: int = 1,
) -> Evaluator:
    """Predict and score every record, each on exactly one process, decoding the next record while the model works
    on this one; returns the evaluator holding every process's records (call ``aggregate()``).

    ``on_record(record, sample, prediction, figures)`` runs after each record on the process that predicted it;
    ``workers``: threads decoding the next records (``-j``).
    """
    evaluator = task.evaluator()
    mine = shard(records, info)
    progress = Progress(
        len(mine), desc, log, every=max(1, len(mine) // 10), seconds=30, unit=task.noun[:-1], quiet_under=10
    )
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for rec, sample in prefetched(mine, task.load, pool, ahead=workers):
            prediction = task.predict(predictor, sample)
            figures = evaluator.update(rec, sample, prediction)
            if on_record is not None:
                on_record(rec, sample, prediction, figures)
            progress.update()
    progress.close()
    evaluator.merge(gather_objects(evaluator.parts, info))
    return evaluator


def compare_predictors(task: Task, reference: Predictor, other: Predictor, records: list) -> dict:
    """Two predictors (PyTorch fp32 and a faster path) on the same records: the share of pixels given the same
    class, and each one's aggregate figures (``reference``, ``other``) from the task's evaluator."""
    evaluators = {"reference": task.evaluator(), "other": task.evaluator()}
    same = total = 0
    for rec in records:
        sample = task.load(rec)
        a, b = task.predict(reference, sample), task.predict(other, sample)
        ca, cb = task.predicted_classes(a), task.predicted_classes(b)
        same += int((ca == cb).sum())
        total += int(np.prod(ca.shape))
        evaluators["reference"].update(rec, sample, a)
        evaluators["other"].update(rec, sample, b)
    return {"records": len(records), "pixel_agreement": same / max(total, 1)} | {
        k: e.aggregate() for k, e in evaluators.items()
    }
