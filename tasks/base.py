"""The task interface: everything that differs between OCT edema and fundus vessels, and nothing else.

The trainer and the drivers (train.py, eval.py, test.py, predict.py) ask a task; they never ask which task it is,
and the predictor below knows none. A task finds the records of a split and decodes them into samples, builds the
training dataset and the input normalisation, turns a sample into the predictor's inputs and its output into a
prediction, scores predictions (an ``Evaluator``: ``update`` per record, ``merge`` across processes,
``aggregate``), and writes predictions and pictures. A new task is one module with a ``Task`` subclass and
``@register_task``; its records follow ``data.common.Record`` (a ``name``, the ``files`` read, the
``image_paths``), which the check that no case is in two splits reads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from data.common import check_disjoint
from utils.config import Settings, TaskSettings

if TYPE_CHECKING:  # the registry and the command line import this module before torch is loaded
    from torch.utils.data import Dataset


def scaled_size(h: int, w: int, fy: float, fx: float | None = None) -> tuple[int, int]:
    """(h, w) resized by ``fy`` (rows) and ``fx`` (columns; ``fy`` when not given), at least one pixel each."""
    return max(1, round(h * fy)), max(1, round(w * (fy if fx is None else fx)))


# the models that ship with the toolkit (predict.py's defaults, by task)
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "checkpoints"


class Evaluator(ABC):
    """Accumulates predictions one record at a time (MONAI-style ``update`` / ``aggregate``).

    ``parts`` holds one picklable entry per record; several processes each fill their own and ``merge`` joins the
    gathered lists, in name order, so the result does not depend on how records were shared out.
    """

    def __init__(self) -> None:
        self.parts: list[Any] = []

    @abstractmethod
    def update(self, record, sample, prediction) -> dict[str, float]:
        """Score one record; returns its own figures (for the log)."""

    def merge(self, gathered: Sequence[list]) -> None:
        self.parts = sorted((p for part in gathered for p in part), key=lambda p: p[0])

    @abstractmethod
    def aggregate(self) -> dict[str, float]:
        """The task's figures over every record seen (including the score that picks the best checkpoint)."""

    def write(self, out: Path, result: dict) -> list[Path]:
        """Files beyond metrics.json (per-record tables, curves); returns their paths."""
        return []


class Task(ABC):
    """One kind of data and what is done with it. Class attributes describe it; an instance serves one run."""

    name: ClassVar[str]
    #: the task's own settings (and its changes to the shared defaults): ``Settings.task_settings`` read as this
    settings_class: ClassVar[type[TaskSettings]] = TaskSettings
    #: the validation figure that picks the best checkpoint (higher is better)
    score_key: ClassVar[str]
    #: what a record is, for messages ("volumes", "photos")
    noun: ClassVar[str] = "records"
    #: the split eval.py scores by default
    eval_split: ClassVar[str] = "val"
    #: validation figures a checkpoint carries for later inference (e.g. the vessel threshold)
    state_keys: ClassVar[tuple[str, ...]] = ()
    #: figures eval.py prints
    summary_keys: ClassVar[tuple[str, ...]] = ()
    #: whether predictions carry per-record detection scores (test.py --det)
    detects: ClassVar[bool] = False
    #: the keyword options ``read_input`` takes (predict.py refuses the others for this task)
    input_options: ClassVar[tuple[str, ...]] = ()
    #: whether ``quantify`` and ``write_report`` are implemented (predict.py --report)
    reports: ClassVar[bool] = False
    #: the output folder's own entries (files and folders not of one input): no input's ``output_names`` may be one
    reserved_names: ClassVar[tuple[str, ...]] = ()
    #: how far each figure may move when a model runs in int8 instead of fp32 (``tools.quantize`` refuses beyond)
    int8_tolerances: ClassVar[dict[str, float]] = {}
    #: the checkpoint predict.py uses for this task's inputs when none is given (None: no model ships)
    shipped_checkpoint: ClassVar[Path | None] = None
    #: the label of a pixel that is one of the lesion classes, which one unknown, where the training labels may
    #: hold one (a reference marking only "fluid"; the losses take it as a partial label); None where they never do
    any_label: int | None = None

    def predicted_classes(self, prediction):
        """A prediction's class per pixel (what ``engine.evaluate.compare_predictors`` compares between two ways of
        running a model): OCT labels, a vessel mask."""
        return prediction.labels

    def __init__(self, settings: Settings, states: Sequence[dict] = (), weights: Sequence[float] | None = None) -> None:
        """``states``: the checkpoints predictions come from (their ``state_keys`` values and normalisation), if any,
        with their fusion ``weights``. The task's own settings are ``self.own`` (``settings_class``)."""
        self.settings = settings
        self.own = self.settings_class.from_dict(settings.task_settings, source=f"{self.name} task settings")
        self.cache_dir = settings.cache_dir
        self.states = list(states)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.states)

    @staticmethod
    def predictor_options(settings: Settings) -> dict:
        """How a model trained with ``settings`` sees its input: ``resize`` (H, W) and/or a sliding ``window``."""
        return {}

    def applied_options(self) -> dict[str, Any]:
        """The inference options that shape this task's predictions, by name, as eval.py records them in
        metrics.json: the task's own settings but those of how a data folder is read (e.g. ``detection``,
        ``scale``)."""
        return {f.name: getattr(self.own, f.name) for f in fields(self.own) if not f.metadata.get("data")}

    # ------------------------------------------------------------------------------------------------ data
    @abstractmethod
    def records(self, split: str, data_dir: str | Path | None = None, list_dir: str | Path | None = None) -> list:
        """The records of ``split`` (train, val, test), each with a ``name``, sorted by name."""

    @abstractmethod
    def input_paths(self, records: list) -> list[Path]:
        """The files and folders ``records`` are read from (an output folder must never replace one of them)."""

    #: case names identify a case across splits (patient IDs); False where each split numbers its own (1.png ...)
    names_are_ids: ClassVar[bool] = True

    def check_disjoint(self, train: list, held_out: dict[str, list]) -> None:
        """No case of ``train`` in a held-out split (``{split: records}``): ``data.common.check_disjoint``."""
        check_disjoint(train, held_out, self.names_are_ids)

    @abstractmethod
    def load(self, record):
        """A record decoded into a sample (image, label when known, and what else the task needs)."""

    @abstractmethod
    def read_input(self, path: Path, **options):
        """A sample from a file or folder a user points at (predict.py); ``options`` are those named in
        ``input_options`` (e.g. the OCT task's cube size and voxel spacing)."""

    @classmethod
    def claims(cls, path: Path) -> bool:
        """Whether ``path`` looks like this task's input by its form (predict.py picks the task of inputs given
        without a checkpoint or ``--task``: exactly one task must claim them)."""
        return False

    def expand_input(self, path: Path, each_file: bool = False) -> list[Path]:
        """The inputs ``path`` stands for: itself, or (a folder whose files are independent inputs, always with
        ``each_file``) its files."""
        return [path]

    def check_report(self, path: Path, sample) -> None:
        """Raise ``ValueError`` when ``sample`` (read from ``path``) cannot be reported on (predict.py --report)."""
        return None

    def quantify(self, sample, prediction) -> dict | None:
        """Measurements of one prediction for a report (e.g. fluid volumes), or None where the task has none."""
        return None

    def write_report(self, folder: Path, name: str, sample, prediction, quant: dict, model: dict | None = None) -> Path:
        """One self-contained HTML page for ``name`` under ``folder``; tasks with ``quantify`` write one. ``model``:
        which checkpoints made it (``model_info``)."""
        raise NotImplementedError(f"the {self.name} task writes no reports")

    def check_visits(self, first: tuple[Path, Any], second: tuple[Path, Any]) -> None:
        """Raise ``ValueError`` when two (path, sample) inputs cannot be compared as visits of one eye, the earlier
        first (predict.py --compare)."""
        raise ValueError(f"--compare: the {self.name} task has no visits to compare")

    def write_summary(self, folder: Path, name: str, sample, prediction, quant: dict, model: dict) -> Path | None:
        """A machine-readable summary of one input (predict.py, tasks with ``quantify``), or None."""
        return None

    @classmethod
    def figure_names(cls) -> tuple[str, ...]:
        """The figures validation produces (the keys of the evaluator's ``aggregate``), known without validating:
        what ``--select`` may sum. By default ``summary_keys`` and those of ``score_key``; a task whose evaluator
        produces others overrides this."""
        return tuple(dict.fromkeys((*cls.summary_keys, *cls.score_key.split("+"))))

    @classmethod
    def check_select(cls, select: str) -> None:
        """``--select`` (validation figures joined by "+"; "" for the task's ``score_key``) names only figures
        this task's validation produces: checked at start, not after the first epoch."""
        unknown = [k for k in select.split("+") if k not in cls.figure_names()] if select else []
        if unknown:
            raise ValueError(
                f"--select {select}: the {cls.name} task's validation has no figure "
                f"{' or '.join(repr(k) for k in unknown)}; choose from {', '.join(cls.figure_names())} (several joined "
                "by +)"
            )

    def input_name(self, path: Path) -> str:
        """The name ``read_input(path)``'s outputs are written under."""
        return path.stem

    def output_names(self, name: str) -> tuple[str, ...]:
        """The names the outputs of the input ``name`` take in the output folder (its files and folders, or the
        stem they share): two inputs may not share one, and none may be in ``reserved_names``. By default ``name``
        itself, for a task whose outputs are ``name`` plus fixed suffixes."""
        return (name,)

    @abstractmethod
    def normalization(self, records: list) -> dict[str, list[float]]:
        """Per-channel ``mean`` and ``std`` of the training inputs in [0, 1]."""

    @abstractmethod
    def train_dataset(self, records: list, augment) -> Dataset:
        """Items {"image": (C, H, W) uint8, "label": (H, W) uint8, "det": (K,) float32}, with ``set_epoch``."""

    # ------------------------------------------------------------------------------------------ prediction
    @abstractmethod
    def predict(self, predictor, sample):
        """Run ``predictor`` on a sample; returns the task's prediction."""

    @abstractmethod
    def evaluator(self) -> Evaluator:
        """A fresh evaluator; it scores at the checkpoints' ``state_keys`` values when there are ``states``."""

    # --------------------------------------------------------------------------------------------- outputs
    @abstractmethod
    def save_pictures(self, folder: Path, name: str, sample, prediction) -> list[Path]:
        """Pictures of one prediction (with the ground truth when the sample has it)."""

    @abstractmethod
    def write_prediction(self, folder: Path, name: str, prediction, seg: bool, det: bool, sample=None) -> list[Path]:
        """The prediction's files (segmentation and/or detection) as test.py and predict.py write them (``sample``,
        where given, is what was predicted: its form may choose the files)."""

    def finish_submission(self, folder: Path) -> list[Path]:
        """test.py's last step once every record is written (e.g. the challenge's zip)."""
        return []
