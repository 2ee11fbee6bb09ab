"""Run logs: one CSV row per epoch and TensorBoard scalars."""

from __future__ import annotations

import csv
import math
from pathlib import Path


class RunLogger:
    def __init__(self, run_dir: Path, resume_epoch: int = 0) -> None:
        self.csv_path = run_dir / "log.csv"
        if self.csv_path.exists():
            # keep the rows of epochs that a resumed run has already done; drop any later, unfinished ones
            rows = list(csv.DictReader(self.csv_path.open()))
            keep = [r for r in rows if int(r["epoch"]) <= resume_epoch]
            if len(keep) != len(rows):
                self._write(keep, list(rows[0].keys()) if rows else [])
        try:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # TensorBoard logging is optional
            self.tb = None

    def _write(self, rows: list[dict], columns: list[str]) -> None:
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns)
            w.writeheader()
            w.writerows(rows)
        tmp.replace(self.csv_path)

    def log(self, epoch: int, values: dict[str, float]) -> None:
        row = {"epoch": epoch, **{k: f"{v:.6g}" if isinstance(v, float) else v for k, v in values.items()}}
        rows = list(csv.DictReader(self.csv_path.open())) if self.csv_path.exists() else []
        columns = list(dict.fromkeys([*(rows[0].keys() if rows else []), *row.keys()]))
        self._write([*rows, row], columns)
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k.replace("_", "/", 1), v, epoch)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
