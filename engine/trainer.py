"""Training: ``train_step(batch) -> dict``, ``validate() -> metrics``, ``fit()``. Task-agnostic: the data, the
validation figures and the score that picks the best checkpoint come from the run's task."""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from data.common import DatasetError
from data.transforms import Augment
from engine import run_folder
from engine.checkpointer import Checkpointer
from engine.evaluate import evaluate
from engine.run_folder import BEST
from inference.predictor import (
    CompiledOrEager,
    Member,
    Predictor,
    autocast_for,
    compile_wanted,
    default_device,
    flush_denormals,
    normalize,
)
from losses import build_loss, parse_loss_spec
from models import build_model, list_models
from tasks import build_task, get_task
from utils.checkpoint import load_checkpoint, load_model_weights
from utils.config import Settings
from utils.distributed import (
    DistInfo,
    all_reduce_max,
    all_reduce_mean,
    barrier,
    broadcast_object,
    device_for,
    gather_objects,
)
from utils.io import save_json_atomic
from utils.log import Progress, RunLogger, log_to_file

log = logging.getLogger(__name__)


def check_names(s: Settings) -> None:
    """The task, model and loss named in the settings exist, and ``--select`` names figures of the task's validation
    (before any data is read)."""
    get_task(s.task).check_select(s.select)
    if s.name not in list_models():
        raise ValueError(f"Unknown model {s.name!r}; valid names: {', '.join(list_models())}")
    parse_loss_spec(s.loss)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def learning_rate(s: Settings, epoch: int) -> float:
    """The original schedule, per epoch: step (x0.1 every ``step`` epochs) or poly (power 0.9)."""
    if s.lr_mode == "step":
        return s.lr * (0.1 ** (epoch // s.step))
    return s.lr * (1 - epoch / s.epochs) ** 0.9


def make_optimizer(s: Settings, params) -> torch.optim.Optimizer:
    opt = s.optimizer.lower()
    if opt == "sgd":
        return torch.optim.SGD(params, s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if opt == "adamw":
        return torch.optim.AdamW(params, s.lr, betas=(0.9, 0.99), weight_decay=s.weight_decay)
    return torch.optim.Adam(params, s.lr, betas=(0.9, 0.99), weight_decay=s.weight_decay)


def epoch_indices(
    n: int, steps: int, batch_size: int, seed: int, epoch: int, info: DistInfo, skip_steps: int = 0
) -> list[int]:
    """Sample indices of one process for one epoch, in an order fixed by (seed, epoch).

    Every process draws the same global order; process r takes columns [r*b, (r+1)*b) of each global batch of
    ``batch_size``, so the processes' batches concatenated are exactly the single-process batch.
    """
    gen = torch.Generator().manual_seed(seed * 1000 + epoch)
    want = steps * batch_size
    if want <= n:
        order = torch.randperm(n, generator=gen)[:want]
    else:  # more steps than one pass: whole permutations back to back
        order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-want // n))])[:want]
    b = batch_size // info.world_size
    return order.view(steps, batch_size)[skip_steps:, info.rank * b : (info.rank + 1) * b].reshape(-1).tolist()


def augment_for(s: Settings) -> Augment:
    """The training augmentation the settings ask for (run in the data-loading workers)."""
    return Augment(
        s.flip,
        s.random_rotate,
        s.random_scale,
        s.crop_size,
        s.resize_hw,
        vflip=s.vflip,
        brightness=s.random_brightness,
        contrast=s.random_contrast,
        gamma=s.random_gamma,
        noise=s.random_noise,
        blur=s.random_blur,
        jpeg=s.random_jpeg,
    )


def default_run_dir(s: Settings) -> Path:
    return Path(s.out) if s.out else Path("runs") / f"{s.name}_{s.loss}"


class Trainer:
    """A short loop (``fit``: per epoch ``train_epoch``, ``validate``, ``_end_epoch``) over parts with one job
    each: the run folder (``engine.run_folder``: lock, resume choice, best score, normalisation), the checkpoint
    files (``engine.checkpointer``), the compile fallback (``CompiledOrEager``, shared with the predictor)."""

    def __init__(
        self,
        settings: Settings,
        resume: str | None = None,
        device: torch.device | None = None,
        dist_info: DistInfo | None = None,
        on_epoch: Callable[[int, float, dict[str, float]], None] | None = None,
        given: Collection[str] | None = None,
        finetune: str | None = None,
    ) -> None:
        """``on_epoch(epoch, score, metrics)`` is called on the main process after each epoch's checkpoint is saved
        (a hyper-parameter search reports the score there, and may stop the run by raising). ``given``: the
        settings the user named (command line, config file), which a resume checks against the run's own (None:
        all of them); ``finetune``: a checkpoint whose weights start a new run."""
        check_names(settings)
        if finetune and resume:
            raise ValueError("--finetune starts a new run from a checkpoint, --resume continues a run: give one")
        self.on_epoch = on_epoch
        self.s = settings
        self.given, self.finetune = given, finetune
        self.dist = dist_info or DistInfo()
        self.device = device or (device_for(self.dist) if self.dist.enabled else default_device())
        if self.device.type == "cpu":
            flush_denormals()
        self.run_dir = default_run_dir(settings)
        self.checkpoints = Checkpointer(self.run_dir / "checkpoint")
        self.stop_signal: int | None = None
        self._undefined_warned = False  # a score no validation figure defines: said once
        run_folder.check_location(self.run_dir, settings)  # before the lock creates the folder
        self._lock = run_folder.lock(self.run_dir, self.dist)  # before anything in the run folder is read or written
        try:
            with self._log_file():
                self._setup(resume)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------------------------------------- setup
    def _setup(self, resume: str | None) -> None:
        resume_path = run_folder.choose_resume(resume, self.run_dir)
        self._resume_settings(resume_path)
        if self.nothing_to_do:  # a finished run: nothing is read or written (fit says so in one line)
            self.task = build_task(self.s)
            return
        barrier(self.dist)  # every process has looked before the main one writes
        if self.dist.is_main:
            self.checkpoints.folder.mkdir(parents=True, exist_ok=True)
        self._prepare_data(under_way=resume_path is not None)
        self._build_model()
        self._initial_state(resume_path)
        self.predictor = self._build_predictor()
        if self.dist.is_main:
            save_json_atomic(self.run_dir / "settings.json", self.s.to_dict())

    def _resume_settings(self, resume_path: Path | None) -> None:
        """The run's own settings when it continues (with only what does not change what it learns taken from the
        command line), checked; the epoch it starts at."""
        self.start_epoch, self.best_score = 0, -math.inf
        if resume_path is not None:
            state = load_checkpoint(resume_path, mmap=True)
            self.s = run_folder.resumed_settings(state, self.s, self.given, resume_path)
            self.start_epoch = int(state["epoch"])
            self.best_score = float(state.get("best_score", -math.inf))
        self.s = run_folder.complete(self.s).validate()  # every one of the task's own settings, for the checkpoints
        if self.s.batch_size % self.dist.world_size:
            raise ValueError(
                f"--batch-size {self.s.batch_size} is the global batch and must divide among "
                f"{self.dist.world_size} processes"
            )
        self.local_batch = self.s.batch_size // self.dist.world_size

    def _prepare_data(self, under_way: bool) -> None:
        """The task, the records of each split (checked disjoint) and the training data's normalisation (decoded
        once, into the cache, by the main process for every process)."""
        s = self.s
        seed_everything(s.seed + self.dist.rank)
        if s.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        self.task = build_task(s)
        self.train_records = self.task.records("train", s.data_dir, s.list_dir)
        self.val_records = self.task.records("val", s.data_dir, s.list_dir)
        self.task.check_disjoint(self.train_records, {"val": self.val_records, **self._test_split()})
        self.source = run_folder.data_source(s, self.train_records, self.task)
        if self.dist.is_main:
            under_way = under_way or run_folder.holds_run(self.run_dir)
            compute = lambda: self.task.normalization(self.train_records)  # noqa: E731
            run_folder.normalization(self.run_dir, self.source, compute, under_way)
        barrier(self.dist)
        self.normalization = json.loads((self.run_dir / "normalization.json").read_text())
        self.train_set = self.task.train_dataset(self.train_records, augment_for(s))

    def _build_model(self) -> None:
        """The model (channels_last on every device: cuDNN and oneDNN both run NHWC convolutions faster,
        docs/BENCHMARKS.md), its DDP wrapper, the loss, the compiled step and the optimiser."""
        s = self.s
        self.model = build_model(s.name, num_classes=s.num_classes, num_detect=s.num_detect, channels=tuple(s.channels))
        self.model = self.model.to(self.device, memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = not s.deterministic
        net: torch.nn.Module = self.model
        if self.dist.enabled:
            if s.sync_bn and self.device.type == "cuda":
                self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.loss = build_loss(
            s.loss,
            s.class_weights,
            gamma=s.el_dice_gamma,
            deep_supervision=s.deep_supervision,
            any_index=self.task.any_label,
        )
        self.loss.to(self.device)
        # the network and the loss compile separately (on a GPU by default): the loss's softmax / one-hot / Dice
        # sums over every deep-supervision head are memory-bound element-wise work that inductor fuses
        self.step_modules = CompiledOrEager(net, self.loss, enabled=compile_wanted(self.device, s.compile))
        self.optimizer = make_optimizer(s, self.model.parameters())

    def _initial_state(self, resume_path: Path | None) -> None:
        """Where training starts: a fresh run, the checkpoint it continues, or another run's weights."""
        self.stale = 0
        self.task_state: dict = {}  # validation figures the checkpoints carry (``Task.state_keys``)
        self.resume_step, self.resume_sums, self.resume_rng = 0, {}, None
        self.origin: dict | None = None  # the checkpoint a fine-tune started from
        if resume_path is not None:
            self._load(resume_path)
        elif self.finetune:
            state, self.origin = Checkpointer.load_finetune(Path(self.finetune), self.device, self.s)
            load_model_weights(self.model, state["state_dict"], self.finetune)
            log.info(f"fine-tuning from {self.finetune} (epoch {state['epoch']}), a new run in {self.run_dir}")

    def _build_predictor(self) -> Predictor:
        """What validation predicts with: the training model, seen as the task sees its inputs."""
        options = self.task.predictor_options(self.s)
        member = Member(self.model, self.normalization["mean"], self.normalization["std"], options.get("resize"))
        return Predictor(
            [member],
            self.device,
            batch_size=self.s.val_batch_size,
            amp=self.s.amp,
            window=options.get("window"),
            compile=self.s.compile,
        )

    @property
    def nothing_to_do(self) -> bool:
        """A resumed run that has already trained ``--epochs`` epochs."""
        return self.start_epoch >= self.s.epochs

    def close(self) -> None:
        """Release the run folder (``fit`` does at its end)."""
        if self._lock is not None:
            self._lock.release()

    def _log_file(self):
        """Log lines of the main process are also kept in ``<run>/train.log``."""
        return log_to_file(self.run_dir / "train.log" if self.dist.is_main else None)

    def _test_split(self) -> dict[str, list]:
        """The test split's records where the data set has one (checked against training and validation)."""
        try:
            return {"test": self.task.records("test", self.s.data_dir, self.s.list_dir)}
        except (DatasetError, FileNotFoundError):
            return {}

    def _load(self, path: Path) -> None:
        """Continue the run from ``path``: weights, optimiser, epoch (and step), best score, carried figures."""
        state = Checkpointer.load_resumable(path, self.device)
        load_model_weights(self.model, state["state_dict"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.resume_step = int(state.get("step", 0))
        if self.resume_step:
            rngs = state["rng_states"]  # one per process; another process count re-seeds instead
            self.resume_rng = rngs[self.dist.rank].cpu() if len(rngs) == self.dist.world_size else None
            self.resume_sums = {k: torch.tensor(v, device=self.device) for k, v in state["train_sums"].items()}
        resumed = float(state.get("best_score", -math.inf))
        best = run_folder.best_score_on_resume(self.checkpoints.folder, resumed) if self.dist.is_main else resumed
        self.best_score = float(broadcast_object(best, self.dist))  # every process counts stale epochs alike
        self.stale = int(state.get("stale_epochs", 0))
        self.task_state = {k: state[k] for k in self.task.state_keys if k in state}
        self.origin = state.get("finetuned_from")
        if "normalization" in state:
            self.normalization = state["normalization"]
        run_folder.check_fingerprint(path, state.get("normalization"), self.source)
        where = f" step {self.resume_step}" if self.resume_step else ""
        log.info(f"resumed from {path} at epoch {self.start_epoch + 1}{where}")

    def loader(self, epoch: int, skip_steps: int = 0) -> DataLoader:
        """This process's share of the epoch's batches, minus the first ``skip_steps`` already done."""
        self.train_set.set_epoch(epoch)
        n = len(self.train_set)
        steps = self.s.steps_per_epoch or max(n // self.s.batch_size, 1)
        mine = epoch_indices(n, steps, self.s.batch_size, self.s.seed, epoch, self.dist, skip_steps)
        return DataLoader(
            self.train_set,
            batch_size=self.local_batch,
            sampler=mine,
            num_workers=self.s.workers,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
        )

    # ----------------------------------------------------------------------------------------------- loop
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mean, std = self.normalization["mean"], self.normalization["std"]
        x = normalize(batch["image"].to(self.device, non_blocking=True), mean, std)
        x = x.contiguous(memory_format=torch.channels_last)
        seg_t = batch["label"].to(self.device, non_blocking=True).long()
        det_t = batch["det"].to(self.device, non_blocking=True)
        parts = self.step_modules.run(self._forward_backward, x, seg_t, det_t)
        self.optimizer.step()
        return {k: v.detach() for k, v in parts.items()}

    def _forward_backward(self, net, loss_fn, x: torch.Tensor, seg_t: torch.Tensor, det_t: torch.Tensor) -> dict:
        self.optimizer.zero_grad(set_to_none=True)  # a retry after a failed compiled attempt starts clean
        with autocast_for(self.device, self.s.amp):
            out = net(x)
        parts = loss_fn(out, seg_t, det_t)
        parts["total"].backward()
        return parts

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        start, sums = self.resume_step, dict(self.resume_sums)
        self.resume_step, self.resume_sums = 0, {}
        loader = self.loader(epoch, skip_steps=start)
        batches = iter(loader)  # creating the iterator draws from the global RNG: do it before seeding
        if start and self.resume_rng is not None:
            torch.set_rng_state(self.resume_rng)  # dropout continues where the interrupted run stopped
        else:  # dropout draws depend on (seed, epoch, rank), not on where a run was resumed
            torch.manual_seed(self.s.seed + epoch + 100_003 * self.dist.rank)
        total_steps = start + len(loader)
        title = f"epoch {epoch + 1}/{self.s.epochs} step"
        progress = Progress(total_steps, title, log, self.s.log_every, items_per_step=self.s.batch_size, start=start)
        bad = torch.zeros((), dtype=torch.long, device=self.device)  # first non-finite step, 0 = none
        lr = self.optimizer.param_groups[0]["lr"]  # the epoch's (shown in the step lines)
        for i, batch in enumerate(batches, start=start):
            parts = self.train_step(batch)
            bad = torch.where(torch.isfinite(parts["total"]) | (bad > 0), bad, torch.full_like(bad, i + 1))
            for k, v in parts.items():
                sums[k] = sums.get(k, 0) + v
            # checks that need the host: on the CPU every step (free), on a GPU every 20 steps; every process
            # checks at the same steps and agrees on the outcome, so none waits alone in a collective
            if self.device.type == "cpu" or i % 20 == 0 or i + 1 == total_steps:
                self._host_checks(epoch, i + 1, bad, parts, sums)
            progress.update(lambda parts=parts: {"loss": parts["total"].item(), "lr": lr})
        progress.close()
        return {f"train_{k}": all_reduce_mean(v / total_steps, self.dist).item() for k, v in sums.items()}

    def _host_checks(self, epoch: int, step: int, bad: torch.Tensor, parts: dict, sums: dict) -> None:
        """Stop at a non-finite loss (saving nothing), or at a signal (saving the step)."""
        flags = torch.stack([bad, torch.tensor(self.stop_signal or 0, device=self.device)])
        bad_step, stop = all_reduce_max(flags, self.dist).tolist()
        if bad_step:
            values = ", ".join(f"{k}={float(v):.4g}" for k, v in parts.items())
            raise FloatingPointError(
                f"non-finite loss at epoch {epoch + 1} step {bad_step} (last step: {values}); stopped without saving "
                f"({self.checkpoints.kept()}). Lower --lr or check the data, then continue with --resume auto."
            )
        if stop:
            self.stop_signal = stop
            self._save_interrupted(epoch, step, sums)

    def _save_interrupted(self, epoch: int, step: int, sums: dict[str, torch.Tensor]) -> None:
        rngs = gather_objects(torch.get_rng_state(), self.dist)
        sums = {k: float(all_reduce_mean(v.clone(), self.dist)) for k, v in sums.items()}
        if self.dist.is_main:
            state = self.checkpoint_state(epoch)
            state.update(step=step, rng_states=rngs, train_sums=sums)
            path = self.checkpoints.save_step(state)
            name = signal.Signals(self.stop_signal).name
            log.warning(f"{name}: saved {path} at epoch {epoch + 1} step {step}; continue with --resume auto")
        barrier(self.dist)
        raise SystemExit(128 + self.stop_signal)

    def validate(self) -> dict[str, float]:
        """The task's figures over the validation records, each predicted by exactly one process."""
        if self.dist.enabled:  # every process predicts with the same BatchNorm statistics
            for buf in self.model.buffers():
                torch.distributed.broadcast(buf, 0)
        metrics = evaluate(self.task, self.predictor, self.val_records, self.dist).aggregate()
        self.task_state = {k: metrics[k] for k in self.task.state_keys}
        return metrics

    @property
    def score_key(self) -> str:
        """``--select`` or the task's: validation figures joined by "+" whose sum picks the best checkpoint."""
        return self.s.select or self.task.score_key

    def score(self, metrics: dict[str, float]) -> float:
        """The sum of the ``score_key`` figures (an undefined one counts 0, e.g. AUC without positives)."""
        keys = self.score_key.split("+")
        missing = [k for k in keys if k not in metrics]
        if missing:
            raise ValueError(f"--select {self.score_key}: no figure {missing} in validation; it has {sorted(metrics)}")
        if not any(math.isfinite(metrics[k]) for k in keys) and not self._undefined_warned:
            self._undefined_warned = True
            log.warning(
                f"every figure of {self.score_key} is undefined on the validation split, so it cannot pick the best "
                "epoch (the first one stays best); --select figures this split defines"
            )
        return sum(metrics[k] if math.isfinite(metrics[k]) else 0.0 for k in self.score_key.split("+"))

    def checkpoint_state(self, epoch: int) -> dict:
        return {
            "model_name": self.s.name,
            "settings": self.s.to_dict(),
            "epoch": epoch,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_score": self.best_score,
            "stale_epochs": self.stale,  # early stopping's count goes on after a resume, not from 0
            "score_key": self.score_key,
            "normalization": self.normalization,
            **({"finetuned_from": self.origin} if self.origin else {}),
            **self.task_state,
        }

    def fit(self) -> dict[str, float]:
        if self.nothing_to_do:  # one line in train.log, and nothing else written
            with self._log_file():
                log.info(f"nothing to do: the run has finished epoch {self.start_epoch}; --epochs is {self.s.epochs}")
            self.close()
            return {}
        logger = RunLogger(self.run_dir) if self.dist.is_main else None
        previous = self._catch_signals()
        try:
            with self._log_file():
                metrics = self._fit(logger)
                self._report_best()
                return metrics
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if logger is not None:
                logger.close()
            self.close()

    def _catch_signals(self) -> dict:
        """SIGINT / SIGTERM only raise a flag; the loop saves a checkpoint at the next step and exits."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            self.stop_signal = signum

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _fit(self, logger: RunLogger | None) -> dict[str, float]:
        self._announce()
        metrics: dict[str, float] = {}
        for epoch in range(self.start_epoch, self.s.epochs):
            t0 = time.time()
            lr = learning_rate(self.s, epoch)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            train = self.train_epoch(epoch)
            metrics = self.validate()
            if self._end_epoch(epoch, {"lr": lr, **train}, metrics, logger, time.time() - t0):
                break
            self._stop_if_signalled(epoch)
        return metrics

    def _report_best(self) -> None:
        """The run's last line: the best epoch, its score and where its weights are."""
        best = self.checkpoints.best() if self.dist.is_main else None
        if best is not None:
            path = self.checkpoints.folder / BEST
            log.info(f"best {self.score_key} {best[1]:.4f} at epoch {best[0]}: {path}")

    def _announce(self) -> None:
        s, processes = self.s, f" in {self.dist.world_size} processes" if self.dist.enabled else ""
        if s.lr_mode == "step" and s.step >= s.epochs:
            log.warning(f"--lr-mode step with --step {s.step} never decays the learning rate in {s.epochs} epochs")
        if s.amp and self.device.type == "cpu":
            # measured on this project's 2-core Xeon (AVX512-BF16, AMX), torch 2.14: unet on 16 x 128 x 128 patches
            # trains at 9.9 img/s under bf16 autocast against 25.8 (fp32) and 32.7 (fp32, channels_last)
            log.warning(
                "--amp on the CPU: bf16 autocast often trains slower there than fp32 (3x slower on this project's "
                "2-core Xeon); leave it out unless this CPU was measured to gain"
            )
        log.info(
            f"training {s.name} ({self.task.name} task) on {len(self.train_set)} samples of "
            f"{len(self.train_records)} {self.task.noun}, validating on {len(self.val_records)}, "
            f"device {self.device}{processes}, run folder {self.run_dir}"
        )

    def _end_epoch(self, epoch: int, train: dict, metrics: dict, logger: RunLogger | None, took: float) -> bool:
        """Score the epoch, save its checkpoints and log row, tell ``on_epoch``; True to stop early."""
        score = self.score(metrics)
        is_best = score > self.best_score
        self.best_score = max(score, self.best_score)
        self.stale = 0 if is_best else self.stale + 1
        if self.dist.is_main:
            state = self.checkpoint_state(epoch + 1)
            self.checkpoints.save_epoch(state, epoch + 1, is_best, self.s.save_every_checkpoint)
            logger.log(epoch + 1, {**train, **metrics, "epoch_time_s": took})
        shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        best = " *best*" if is_best else ""
        log.info(f"epoch {epoch + 1}/{self.s.epochs} loss={train['train_total']:.4f} {shown} ({took:.1f}s){best}")
        if self.on_epoch is not None and self.dist.is_main:
            self.on_epoch(epoch + 1, score, metrics)
        if self.s.patience and self.stale >= self.s.patience:
            key = self.score_key
            log.info(f"early stopping: no better {key} for {self.stale} epochs (best {self.best_score:.4f})")
            return True
        return False

    def _stop_if_signalled(self, epoch: int) -> None:
        """A signal that arrived during validation: the epoch's checkpoint is saved; every process exits."""
        stop = int(all_reduce_max(torch.tensor(self.stop_signal or 0, device=self.device), self.dist))
        if stop:
            log.warning(f"{signal.Signals(stop).name}: stopped after epoch {epoch + 1}")
            barrier(self.dist)
            raise SystemExit(128 + stop)
