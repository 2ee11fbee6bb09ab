#!/usr/bin/env python
"""Hyper-parameter search with Optuna over any training setting: each trial an ordinary training run in its own run
folder (``<out>/trial_NNN``), its objective the validation score training computes (the task's, or ``--select``),
poor trials pruned from their per-epoch scores.

    python sweep.py --space configs/sweep_demo.yaml --trials 8 --study demo -d data/synthetic --epochs 6 --name unet
    CUDA_VISIBLE_DEVICES=1 python sweep.py ...        # more workers on the same study: the same command again
    python sweep.py ... --gpus 0,1,2,3                # one worker per GPU, started here
    python sweep.py --report --study demo             # trials.csv / .md, best.yaml, history.png, importance.png

Every option of train.py sets the settings shared by all trials (``--config`` too); the space file sets the rest.
Workers on several machines share the study through ``--storage``: a journal file on a shared file system (the
default, ``<out>/journal.log``) or a database URL (``sqlite:///sweep.db``, ``postgresql://...``).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from engine.cli import HelpFormatter

log = logging.getLogger("sweep")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sweep.py", description=__doc__, formatter_class=HelpFormatter, epilog="training settings: python "
        "train.py --help (any of them may follow; they hold for every trial)",
    )  # fmt: skip
    g = p.add_argument_group("sweep")
    g.add_argument("--study", required=True, help="study name (workers with the same name and storage share it)")
    g.add_argument("--space", help="YAML search space: per setting {type: float|int, low, high[, log]} or "
                   "{type: categorical, choices: [...]}")  # fmt: skip
    g.add_argument("--trials", type=int, help="trials the study should hold (finished or pruned), over all workers")
    g.add_argument("--storage", help="journal file or database URL [default: <out>/journal.log]")
    g.add_argument("--out", type=Path, help="folder of the trials' run folders [default: runs/sweep/<study>]")
    g.add_argument("--pruner", default="median", choices=["median", "halving", "none"],
                   help="stop trials whose per-epoch score falls behind (median of earlier trials, or successive "
                   "halving) [default: median]")  # fmt: skip
    g.add_argument("--sampler-seed", type=int, help="seed of the TPE sampler (repeatable sweeps with one worker)")
    g.add_argument("--gpus", help="start one worker per listed GPU, e.g. 0,1,2,3 (CUDA_VISIBLE_DEVICES of each)")
    g.add_argument("--report", action="store_true", help="write the study's tables, best settings and plots, then stop")
    return p


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    import train

    args, rest = build_parser().parse_known_args(argv)
    args.out = args.out or Path("runs") / "sweep" / args.study
    args.storage = args.storage or str(args.out / "journal.log")
    if not args.report:
        if not args.space or args.trials is None:
            raise SystemExit("error: --space and --trials are needed to run a sweep (or --report to see one)")
        if args.trials < 1:
            raise SystemExit(f"error: --trials must be >= 1, got {args.trials}")
        train_args = train.parse_args(rest)  # every train.py option, checked here (a typo stops every worker)
        if getattr(train_args, "resume", None) or getattr(train_args, "out", None):
            raise SystemExit("error: --resume and --out belong to the trials; sweep.py sets them (use --out here)")
        args.train_args = train_args
    elif rest:
        raise SystemExit(f"error: --report takes no training options: {' '.join(rest)}")
    return args, rest


def main(argv: list[str] | None = None) -> int:
    from engine.sweep import Worker, load_space, load_study, write_report
    from utils.log import setup_logging

    argv = sys.argv[1:] if argv is None else argv
    args, _ = parse_args(argv)
    setup_logging()
    if args.report:
        study = load_study(args.study, args.storage, create=False)
        files = write_report(study, args.out / "report")
        log.info(f"wrote {', '.join(str(f) for f in files)}")
        return 0
    if args.gpus:
        import torch

        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
        if torch.cuda.device_count() < 1:
            raise SystemExit("error: --gpus: no CUDA GPU is visible here; run one worker per process without it")
        code = start_workers(argv, gpus, args.sampler_seed)
        if code:
            raise SystemExit(f"error: a worker ended with exit status {code}")
        return 0
    from engine.cli import train_settings
    from engine.run_folder import check_outside_inputs

    base = train_settings(args.train_args)
    space = load_space(args.space, base.task)
    check_outside_inputs(Path(args.out), base)  # before the study's journal and locks are created there
    study = load_study(args.study, args.storage, args.pruner, args.sampler_seed)
    done = Worker(study, space, base, args.out, args.trials).run()
    log.info(f"this worker ran {done} trials; the study {args.study!r} is in {args.storage}")
    return 0


def start_workers(argv: list[str], gpus: list[str], sampler_seed: int | None) -> int:
    """One ``sweep.py`` per GPU (the same arguments without ``--gpus``), each seeing only its GPU; a
    ``--sampler-seed`` becomes seed + i for worker i (the same seed would draw the same trials)."""
    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--gpus", "--sampler-seed"):
            skip = True
            continue
        if not a.startswith(("--gpus=", "--sampler-seed=")):
            rest.append(a)
    procs = []
    for i, gpu in enumerate(gpus):
        seed = [] if sampler_seed is None else ["--sampler-seed", str(sampler_seed + i)]
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
        procs.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *rest, *seed], env=env))
    log.info(f"started {len(procs)} workers on GPUs {', '.join(gpus)}")
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c), 0)  # a worker killed by a signal (negative status) is a failure too


if __name__ == "__main__":
    from engine.cli import cli_main

    cli_main(__file__, lambda argv: parse_args(argv), lambda argv=None: main(argv), relaunch=False)
