"""What a run tells: timestamped ``logging`` lines (rank 0 only, copied to the run folder), progress of long loops
that reaches a log file, and the per-epoch CSV / TensorBoard record."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

FORMAT, DATEFMT = "%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"
_OURS = "_retina_handler"  # marks the handlers this module adds, so a second setup replaces them


class _NoProgressOnTerminal(logging.Filter):
    """On a terminal the tqdm bar shows progress; the periodic lines are for log files."""

    def __init__(self, stream) -> None:
        super().__init__()
        self.stream = stream

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(record, "progress", False) and _isatty(self.stream))


def _isatty(stream) -> bool:
    try:
        return bool(getattr(stream, "isatty", None) and stream.isatty())
    except ValueError:  # a closed stream (a test's captured output, replaced since) is no terminal
        return False


def setup_logging(is_main: bool = True) -> None:
    """Timestamped lines: information on standard output, warnings and errors on standard error; from the main
    process only (the others show errors only)."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(h)
    out, err = logging.StreamHandler(sys.stdout), logging.StreamHandler(sys.stderr)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    out.addFilter(_NoProgressOnTerminal(sys.stdout))
    err.setLevel(logging.WARNING)
    for h in (out, err):
        h.setFormatter(logging.Formatter(FORMAT, DATEFMT))
        setattr(h, _OURS, True)
        root.addHandler(h)
    root.setLevel(logging.INFO if is_main else logging.ERROR)


@contextmanager
def log_to_file(path: Path | None):
    """Every log line of the block is also appended to ``path`` (e.g. ``<run>/train.log``); None: nothing."""
    if path is None:
        yield
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


class Progress:
    """Progress of a loop of ``total`` steps: a tqdm bar on a terminal, and (for log files) a line at the first step,
    every ``every`` steps, at least every ``seconds``, and at the last step, with the rate and the remaining time (as
    timm logs its first and last batch: a loop shorter than ``every`` still shows it started and how fast it goes).

    ``update(values)`` takes a callable returning the figures to show, called only when a line is due (reading a
    GPU loss waits for the GPU, so it happens only then).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        logger: logging.Logger,
        every: int = 50,
        seconds: float = 60.0,
        items_per_step: int = 1,
        unit: str = "img",
        start: int = 0,
        quiet_under: float = 0.0,
    ) -> None:
        self.total, self.desc, self.log = total, desc, logger
        self.every, self.seconds, self.items, self.unit = every, seconds, items_per_step, unit
        self.done = self.start = start
        self.quiet_under = quiet_under  # no lines at all for a loop that ends within this many seconds
        self.t0 = self.last = time.monotonic()
        self.bar = tqdm(total=total, initial=start, desc=desc, leave=False, dynamic_ncols=True, disable=None)

    def update(self, values=None) -> None:
        self.done += 1
        self.bar.update(1)
        now = time.monotonic()
        first, last = self.done == self.start + 1, self.done == self.total  # a resumed loop's first step is start + 1
        due = first or last or self.done % self.every == 0 or now - self.last >= self.seconds
        if not due or now - self.t0 < self.quiet_under:
            return
        self.last = now
        shown = values() if values is not None else {}
        if shown:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
        elapsed = now - self.t0
        rate = (self.done - self.start) / elapsed if elapsed > 0 else math.inf
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        figures = " ".join(f"{k}={v:.4g}" for k, v in shown.items())  # 4 digits whatever the size (lr 3e-05)
        self.log.info(
            f"{self.desc} {self.done}/{self.total} {figures}{' ' if figures else ''}"
            f"{rate * self.items:.1f} {self.unit}/s, {_duration(elapsed)} elapsed, ETA {_duration(eta)}",
            extra={"progress": True},
        )

    def close(self) -> None:
        self.bar.close()


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class RunLogger:
    """One CSV row per epoch (``log.csv``) and TensorBoard scalars (``tensorboard/``), both append-only: a resumed
    run adds rows and never rewrites earlier ones (after a resume from an earlier checkpoint an epoch may appear
    twice: its last row is the one of the run's line)."""

    def __init__(self, run_dir: Path) -> None:
        self.csv_path = run_dir / "log.csv"
        self.columns = self._header()
        try:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # TensorBoard logging is optional
            self.tb = None

    def _header(self) -> list[str] | None:
        import csv

        if not self.csv_path.exists():
            return None
        with self.csv_path.open(newline="") as f:
            return next(csv.reader(f), None)

    def log(self, epoch: int, values: dict[str, float]) -> None:
        import csv

        row = {"epoch": epoch, **{k: f"{v:.6g}" if isinstance(v, float) else v for k, v in values.items()}}
        new = self.columns is None
        if new:
            self.columns = list(row)
        elif set(row) - set(self.columns):
            logging.getLogger(__name__).warning(
                f"{self.csv_path}: figures {sorted(set(row) - set(self.columns))} are not among its columns; they are "
                "in TensorBoard only"
            )
        if not new and self.csv_path.stat().st_size:  # a row cut short (a crash, a full disk) ends with this one's
            with self.csv_path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    with self.csv_path.open("a", newline="") as g:
                        g.write("\r\n")
        with self.csv_path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
            f.flush()
            os.fsync(f.fileno())
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k.replace("_", "/", 1), v, epoch)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
