"""Hyper-parameter search on Optuna: each trial is an ordinary training run in its own run folder, its objective the
validation score training already computes (the task's, or ``--select``), reported every epoch so that poor trials
are pruned.

Many workers share one study through its storage: an Optuna journal file on a shared file system (the default,
``<out>/journal.log``) or a database URL. What Optuna leaves to the user, and this module does:

- **exactly N trials**: a worker asks for a trial only under a lock in the sweep folder, after counting the trials
  that are not failed, so two workers never overshoot;
- **killed workers**: every worker holds a lock (``flock``, dropped by the kernel when the process dies, however it
  dies) and names it in its trials; a trial still RUNNING whose worker's lock is free belonged to a dead worker. The
  next worker marks it FAIL and queues its parameters again; the retry continues the dead trial's last checkpoint.
  (Optuna's own heartbeat exists for database storages only, not for the journal file.)
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import socket
import time
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from utils.config import SHARED, Settings, flatten, load_config_file, settings_keys
from utils.errors import ToolkitError
from utils.io import FolderLock, atomic_write, output_file

try:
    import fcntl
except ImportError:  # Windows: one worker per sweep folder
    fcntl = None

if TYPE_CHECKING:
    from engine.trainer import Trainer

log = logging.getLogger(__name__)
KINDS = ("float", "int", "categorical")
FROZEN = ("task", "out", "data_dir", "cache_dir", "list_dir")  # what a trial may not change
STARTING_GRACE_S = 600  # a RUNNING trial that names no worker yet is being started, unless it is older than this


# --------------------------------------------------------------------------------------------------- the space
def load_space(path: str | Path, task: str | None = None) -> dict[str, dict]:
    """``SPACE.yaml``: per setting, ``{type: float|int, low, high[, log][, step]}`` or ``{type: categorical,
    choices: [...]}`` (choices may be lists, e.g. class weights). Settings and values are checked against
    ``Settings``' own names and types, and errors name the file."""
    raw = load_config_file(path)
    if not raw:
        raise ValueError(f"{path}: an empty search space; name at least one setting")
    from tasks import task_settings

    own = task_settings(task or Settings.task)
    fields = settings_keys(own)
    space: dict[str, dict] = {}
    for key, spec in raw.items():
        name = key.replace("-", "_")
        where = f"{path}: {key}"
        if name not in fields:
            raise ValueError(f"{where}: not a setting (valid: {', '.join(sorted(fields))})")
        if name in FROZEN:
            raise ValueError(f"{where}: a trial cannot change {name}; set it for the whole sweep")
        for v in _range_values(spec, where):  # each value must fit the setting's type and range, as training checks
            try:
                if name in SHARED:
                    Settings.from_dict({name: v}, source=where).validate()
                else:
                    own.from_dict({name: v}, source=where)
            except ValueError as e:
                raise ValueError(f"{where}: {v!r}: {e}") from None
        space[name] = spec
    return space


def _range_values(spec, where: str) -> list:
    """One setting's range, checked: its choices, or its low and high ends."""
    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        raise ValueError(f"{where}: needs type: float, int or categorical")
    kind = spec["type"]
    allowed = {"type", "low", "high", "log", "step"} if kind != "categorical" else {"type", "choices"}
    if set(spec) - allowed:
        raise ValueError(f"{where}: unknown keys {sorted(set(spec) - allowed)} for type {kind}")
    if kind == "categorical":
        if not isinstance(spec.get("choices"), list) or not spec["choices"]:
            raise ValueError(f"{where}: choices must be a non-empty list")
        return spec["choices"]
    if "low" not in spec or "high" not in spec:
        raise ValueError(f"{where}: needs low and high")
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
        raise ValueError(f"{where}: low and high must be numbers with low < high, got {low!r}, {high!r}")
    if spec.get("log") and low <= 0:
        raise ValueError(f"{where}: a log range needs low > 0")
    if kind == "int" and not all(isinstance(v, int) for v in (low, high, spec.get("step", 1))):
        raise ValueError(f"{where}: an int range takes whole numbers (low, high, step)")
    if "step" in spec and (spec.get("log") or not spec["step"] > 0):
        raise ValueError(f"{where}: step must be > 0, and cannot go with log")
    return [low, high]


def suggest(trial, space: dict[str, dict]) -> dict:
    """The trial's values of the space's settings."""
    values = {}
    for name, spec in space.items():
        if spec["type"] == "float":
            v = trial.suggest_float(name, spec["low"], spec["high"], log=bool(spec.get("log")), step=spec.get("step"))
        elif spec["type"] == "int":
            v = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1)),
                                  log=bool(spec.get("log")))  # fmt: skip
        else:
            # Optuna's choices are scalars: lists travel as JSON text and come back as lists
            encoded = {json.dumps(c): c for c in spec["choices"] if isinstance(c, list)}
            v = trial.suggest_categorical(name, [json.dumps(c) if isinstance(c, list) else c for c in spec["choices"]])
            v = encoded.get(v, v) if isinstance(v, str) else v
        values[name] = v
    return values


# ------------------------------------------------------------------------------------------------ the study
def storage_for(url: str | Path):
    """A database URL (``sqlite:///x.db``, ``postgresql://...``) as it is; anything else is a journal file."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    text = str(url)
    if "://" in text:
        return text
    Path(text).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(text))


def make_pruner(kind: str):
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)  # epoch 1 says little
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"--pruner must be median, halving or none, got {kind!r}")


def load_study(
    name: str, url: str | Path, pruner: str = "median", sampler_seed: int | None = None, create: bool = True
):
    """The study ``name`` in ``url`` (a journal file or a database URL), created where ``create``; reading one never
    creates a journal file."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not create and "://" not in str(url) and not Path(url).is_file():
        raise ValueError(f"{url}: no sweep journal there; run sweep.py first, or pass the study's --storage")
    storage = storage_for(url)
    sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    if create:
        return optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            pruner=make_pruner(pruner),
            sampler=sampler,
            load_if_exists=True,
        )
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError:
        raise ValueError(f"no study {name!r} in {url}; run sweep.py first or check --storage") from None


@contextmanager
def sweep_lock(folder: Path):
    """One worker at a time counts the trials and asks for the next (a blocking ``flock``; held for milliseconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".sweep.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def lock_is_held(path: str | Path) -> bool:
    """Whether a live process holds the ``flock`` on ``path`` (a missing file is held by nobody)."""
    if fcntl is None:
        return True
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's own lock
    return False


# what may differ between the workers of one study: where and how fast they run, not what they train
LOCAL_SETTINGS = ("out", "workers", "log_every", "cache_dir", "val_batch_size", "compile", "sync_bn")
MAX_FAILURES_IN_A_ROW = 5  # a space whose trials all fail must not loop for ever


class Worker:
    """One process of a sweep: runs trials until the study holds ``n_trials`` that did not fail."""

    def __init__(self, study, space: dict, base: Settings, out: Path, n_trials: int) -> None:
        # absolute paths: other workers (another folder, another machine with the same mount) read them
        self.study, self.space, self.base, self.out, self.n_trials = study, space, base, Path(out).resolve(), n_trials
        self._check_study()
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # a container may reuse a pid
        self.lock_path = self.out / ".workers" / f"{name}.lock"
        self.lock = FolderLock(self.lock_path, self.out)  # held for the worker's life

    def _check_study(self) -> None:
        """Every worker of a study trains the same way on the same data over the same space, and a sweep folder
        holds one study: the first worker records both, later ones must match."""
        self.out.mkdir(parents=True, exist_ok=True)
        marker = self.out / "STUDY"
        with sweep_lock(self.out):
            if marker.exists() and marker.read_text().strip() != self.study.study_name:
                raise ValueError(
                    f"{self.out} holds the trials of study {marker.read_text().strip()!r}; give study "
                    f"{self.study.study_name!r} its own --out"
                )
            if not marker.exists():
                with atomic_write(marker, "w") as f:
                    f.write(self.study.study_name + "\n")
            flat = flatten(self.base.to_dict())
            shared = {k: v for k, v in flat.items() if k not in (*LOCAL_SETTINGS, *self.space)}
            mine = json.loads(json.dumps({"settings": shared, "space": self.space}))
            recorded = self.study.user_attrs.get("sweep")
            if recorded is None:
                self.study.set_user_attr("sweep", mine)
                return
        if recorded["space"] != mine["space"]:
            raise ValueError(
                f"study {self.study.study_name!r} was started with another search space ({recorded['space']}); "
                "start a new study for a new space"
            )
        # a task setting that only one side names (a study recorded before tasks declared theirs; a new setting)
        # is not a difference
        one_sided = (set(recorded["settings"]) ^ set(shared)) - SHARED
        differ = sorted(
            k
            for k in set(recorded["settings"]) | set(shared)
            if recorded["settings"].get(k) != shared.get(k) and k not in one_sided
        )
        if differ:
            shown = ", ".join(f"{k}: {recorded['settings'].get(k)!r} there, {shared.get(k)!r} here" for k in differ)
            raise ValueError(
                f"study {self.study.study_name!r} trains with other settings ({shown}); its trials would not be "
                "comparable: use the same training options on every worker, or start a new study"
            )

    def fail_stale(self) -> None:
        """RUNNING trials of dead workers -> FAIL, their parameters queued again (the retry resumes them)."""
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker_lock")
            if worker is None:
                age = time.time() - t.datetime_start.timestamp() if t.datetime_start else 0.0
                if age < STARTING_GRACE_S:
                    continue
            elif lock_is_held(worker):
                continue
            log.warning(f"trial {t.number}: its worker is gone; marked failed and queued again")
            self.study.tell(t.number, state=TrialState.FAIL)
            self.study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)

    def next_trial(self):
        from optuna.trial import TrialState

        with sweep_lock(self.out):
            self.fail_stale()
            counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # a queued retry counts once it runs
            if len(self.study.get_trials(deepcopy=False, states=counted)) >= self.n_trials:
                return None
            trial = self.study.ask()
            trial.set_user_attr("worker_lock", str(self.lock_path))
            trial.set_user_attr("run_dir", str(self.out / f"trial_{trial.number:03d}"))
            return trial

    def run(self) -> int:
        """Trials run by this worker."""
        done, failures = 0, 0
        try:
            while (trial := self.next_trial()) is not None:
                failures = 0 if self.run_trial(trial) else failures + 1
                done += 1
                if failures >= MAX_FAILURES_IN_A_ROW:
                    raise ToolkitError(
                        f"{failures} trials in a row failed (the last: {trial.user_attrs.get('error', '?')}); check "
                        f"the search space and the training options (sweep.py --report --study "
                        f"{self.study.study_name} lists the errors)"
                    )
        finally:
            self.lock.release()
        return done

    def run_trial(self, trial) -> bool:
        """Train one trial and tell the study how it ended; False when it failed. A signal that reached the training
        (SIGTERM, Ctrl-C) re-queues the trial, which continues from its last checkpoint, and stops the worker."""
        import optuna
        from optuna.trial import TrialState

        trainer, outcome, error = None, "complete", ""
        try:
            trainer = self._trainer(trial, lambda: trainer)
            trainer.fit()
        except optuna.TrialPruned as e:
            log.info(f"trial {trial.number}: {e}")
            outcome = "pruned"
        except SystemExit:  # a signal: the run saved its step; the trial is run again, from there
            self.study.tell(trial, state=TrialState.FAIL)
            self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
            raise
        except Exception as e:  # this trial's settings fail (an impossible crop, out of memory, ...): the next one
            outcome, error = "fail", f"{type(e).__name__}: {e}"[:500]
            log.warning(f"trial {trial.number} failed: {error}")
        return self._tell(trial, trainer, outcome, error)

    def _trainer(self, trial, current) -> Trainer:
        """The trial's trainer (``current()`` returns it once built), reporting each epoch's score to the study."""
        import optuna

        from engine.run_folder import BEST, LATEST
        from engine.trainer import Trainer

        values = suggest(trial, self.space)
        run_dir = Path(trial.user_attrs["run_dir"])
        shared = {k: v for k, v in values.items() if k in SHARED}
        own = {k: v for k, v in values.items() if k not in SHARED}  # the task's own settings
        settings = dataclasses.replace(self.base, **shared, out=str(run_dir)).with_task(**own).validate()
        resume = self._resume_of(trial, run_dir, LATEST, BEST)
        log.info(f"trial {trial.number}: {values}" + (" (continues a trial whose worker died)" if resume else ""))

        def report(epoch: int, score: float, metrics: dict) -> None:
            trial.report(score if math.isfinite(score) else 0.0, epoch)
            if current() is not None and current().stop_signal:
                return  # stopping anyway: the trial is run again, not judged on a part
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch} (score {score:.4f})")

        return Trainer(settings, resume=resume, on_epoch=report)

    def _tell(self, trial, trainer: Trainer | None, outcome: str, error: str) -> bool:
        """The trial's end told to the study (a failed trial that was interrupted runs again); a signal that reached
        the training stops the worker."""
        from optuna.trial import TrialState

        signum = trainer.stop_signal if trainer is not None else 0
        if outcome == "complete":
            value = trainer.best_score
            self.study.tell(trial, value if math.isfinite(value) else 0.0)
            log.info(f"trial {trial.number}: {trainer.score_key} {value:.4f}")
        elif outcome == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            trial.set_user_attr("error", error)
            self.study.tell(trial, state=TrialState.FAIL)
            if signum:  # it may have failed because it was interrupted: run it again
                self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        if signum:  # arrived while the trial was ending: honour it all the same
            raise SystemExit(128 + signum)
        return outcome != "fail"

    def _resume_of(self, trial, run_dir: Path, latest: str, best: str) -> str | None:
        """A retry continues the dead trial's last checkpoint; its best checkpoint comes along (the trial's score may
        be an epoch before the interruption)."""
        retry_of = trial.user_attrs.get("retry_of")
        if retry_of is None:
            return None
        old = self.out / f"trial_{retry_of:03d}" / "checkpoint"
        if not (old / latest).exists():
            return None
        # the retry's folder continues the dead trial's line of training (a run folder holds one): its checkpoints
        # are copied in and resumed there
        (run_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
        for name in (best, latest):  # the best first, as the trainer writes them
            if (old / name).exists():
                with atomic_write(run_dir / "checkpoint" / name) as f:
                    f.write((old / name).read_bytes())
        return "auto"


# ------------------------------------------------------------------------------------------------- results
def trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "score": t.value,
                "epochs": max(t.intermediate_values, default=None),
                **{f"param_{k}": v for k, v in t.params.items()},
                "duration_s": None if duration is None else round(duration, 1),
                "run_dir": t.user_attrs.get("run_dir", ""),
                "error": t.user_attrs.get("error", ""),
            }
        )
    return rows


def best_trials(study, top: int) -> list:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
    return sorted(done, key=lambda t: (-t.value, t.number))[:top]


def top_checkpoints(name: str, storage, top: int) -> list[str]:
    """The best checkpoints of the ``top`` best finished trials (for ``--fusion-study``)."""
    from engine.run_folder import BEST

    trials = best_trials(load_study(name, storage, create=False), top)
    if not trials:
        raise ValueError(f"study {name!r} has no finished trial to fuse")
    if len(trials) < top:
        log.warning(f"study {name!r} has {len(trials)} finished trials, fewer than --top {top}")
    paths = []
    for t in trials:
        path = Path(t.user_attrs["run_dir"]) / "checkpoint" / BEST
        if not path.is_file():
            raise FileNotFoundError(f"{path}: trial {t.number}'s best checkpoint is missing (run folder moved?)")
        paths.append(str(path))
    return paths


def write_report(study, out: Path) -> list[Path]:
    """``trials.csv``, ``trials.md``, ``best.yaml`` (the best trial's settings, for ``train.py --config``) and
    ``history.png`` / ``importance.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    if not rows:
        raise ValueError(f"study {study.study_name!r} has no trials yet")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    written = [out / "trials.csv", out / "trials.md"]
    # each report replaces the previous one's files, and only those (utils.io.output_file)
    advice = "move it out of the report folder"
    with output_file(written[0], True, advice=advice) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    with output_file(written[1], True, advice=advice) as tmp, open(tmp, "w") as f:
        f.write("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
        for r in rows:
            f.write("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |\n")
    best = best_trials(study, 1)
    if best:
        stored = json.loads((Path(best[0].user_attrs["run_dir"]) / "settings.json").read_text())
        settings = flatten(Settings.from_dict(stored).to_dict())  # as a config file names them
        settings.pop("out", None)
        with output_file(out / "best.yaml", True, advice=advice) as tmp, open(tmp, "w") as f:
            f.write(f"# trial {best[0].number} of study {study.study_name}: score {best[0].value:.6f}\n")
            yaml.safe_dump(settings, f, sort_keys=False)
        written.append(out / "best.yaml")
    written += _plots(study, out)
    return written


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def _plots(study, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    written = []
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        log.warning(f"study {study.study_name!r} has no finished trial: no best settings and no plots")
        return written
    plots = [("history.png", ovm.plot_optimization_history)]
    if len(done) >= 2 and any(len({str(t.params.get(k)) for t in done}) > 1 for k in done[0].params):
        plots.append(("importance.png", ovm.plot_param_importances))
    for name, plot in plots:
        with warnings.catch_warnings():  # the matplotlib plots are marked experimental; their output is what we need
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ax = plot(study)
        fig = ax.figure
        fig.set_size_inches(7, 4)
        fig.tight_layout()
        with output_file(out / name, True, advice="move it out of the report folder") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        written.append(out / name)
    return written
