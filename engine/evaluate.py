"""The one evaluation loop: validation during training and eval.py both run it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

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
