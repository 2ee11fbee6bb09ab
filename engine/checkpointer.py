"""The checkpoint files of one run folder: what an epoch, an interrupted step, a resume and a fine-tune write or
read. The main process writes; every process reads."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from engine.run_folder import BEST, LATEST
from utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.config import Settings
from utils.io import sha256_of

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.latest = folder / LATEST

    def save_epoch(self, state: dict, epoch: int, is_best: bool, numbered: bool) -> None:
        """The epoch's checkpoints: the best first, so a run killed between the two writes never has a
        ``best_score`` whose weights are in no file; then the latest; then ``checkpoint_NNN`` when ``numbered``."""
        if is_best:
            save_checkpoint(self.folder / BEST, state)
        save_checkpoint(self.latest, state)
        if numbered:
            save_checkpoint(self.folder / f"checkpoint_{epoch:03d}.pth.tar", state)

    def save_step(self, state: dict) -> Path:
        """An interrupted epoch (``state`` holds its ``step``, RNG states and running sums) as the latest."""
        save_checkpoint(self.latest, state)
        return self.latest

    def best(self) -> tuple[int, float] | None:
        """The epoch and score of the best checkpoint, if there is one."""
        path = self.folder / BEST
        if not path.exists():
            return None
        state = load_checkpoint(path, mmap=True)
        return int(state["epoch"]), float(state.get("best_score", float("nan")))

    def kept(self) -> str:
        """What the folder still holds, for a message after a failed step."""
        return (
            f"{self.latest} still holds epoch {load_checkpoint(self.latest)['epoch']}"
            if self.latest.exists()
            else ("none saved")
        )

    @staticmethod
    def load_resumable(path: Path, device: torch.device) -> dict:
        """A checkpoint a run continues from: it must carry the optimiser's state."""
        state = load_checkpoint(path, device)
        if "optimizer" not in state:  # continuing with a fresh Adam state (and maybe bf16 weights) would be silent
            raise CheckpointError(
                f"{path}: a deployable copy without optimiser state (python -m utils.checkpoint), which cannot be "
                "resumed; resume from checkpoint_latest.pth.tar of the run it came from"
            )
        return state

    @staticmethod
    def load_finetune(path: Path, device: torch.device, settings: Settings) -> tuple[dict, dict]:
        """A checkpoint whose weights start a new run of ``settings``' model and task -> (state, where it came
        from: path, SHA-256 and epoch, which the new run's checkpoints record)."""
        state = load_checkpoint(path, device)
        if state["model_name"] != settings.name:
            name = state["model_name"]
            raise CheckpointError(
                f"{path}: holds a {name!r} model, not {settings.name!r}; fine-tune with --name {name}"
            )
        if state["settings"].get("task", Settings.task) != settings.task:
            task = state["settings"].get("task")
            raise CheckpointError(f"{path}: a checkpoint of task {task!r}, not {settings.task!r}")
        origin = {"checkpoint": str(path.resolve()), "sha256": sha256_of(path), "epoch": int(state["epoch"])}
        return state, origin
