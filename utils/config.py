"""Settings: one typed dataclass of what every task reads (``Settings``), and each task's own settings (a
``TaskSettings`` dataclass the task declares, with types, defaults and help, kept in ``Settings.task_settings``). A
JSON/YAML file overrides the defaults and the command line overrides both.

A task changes some of the shared defaults (``TaskSettings.defaults``); which names are valid models, losses or tasks
is checked by those packages, not here. Nothing here imports torch: the command line is built from these declarations
before anything heavy is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml


@dataclass
class Settings:
    # task and model
    task: str = "oct"
    name: str = "unet_nested"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    num_classes: int = 4
    num_detect: int = 3
    deep_supervision: bool = True
    # data
    data_dir: str = "data/synthetic"
    list_dir: str | None = None
    cache_dir: str | None = None
    workers: int = 4
    resize: list[int] | None = None
    crop_size: int = 0
    # augmentation (the defaults are the OCT task's: small affine changes and another scanner's grey curve, noise
    # and optics, so a model holds on scans unlike its training set's)
    random_rotate: float = 5.0
    random_scale: float = 0.1
    flip: bool = True
    vflip: bool = False
    random_brightness: float = 0.05  # add U(-b, b) of full scale
    random_contrast: float = 0.2  # scale about the mean by 1 + U(-c, c)
    random_gamma: float = 0.3  # raise to the power 1 + U(-g, g)
    random_noise: float = 0.02  # add Gaussian noise of std U(0, n) of full scale
    random_blur: float = 0.75  # half of the time, blur with a Gaussian of sigma U(0, b) pixels
    random_jpeg: int = 0  # half of the time, a JPEG round trip at quality U(q, 95); 0: never
    # optimisation
    batch_size: int = 16
    epochs: int = 100
    optimizer: str = "Adam"
    lr: float = 0.001
    lr_mode: str = "step"
    step: int = 200
    momentum: float = 0.9
    weight_decay: float = 1e-4
    loss: str = "mix_33"
    class_weights: list[float] = field(default_factory=lambda: [1.0, 5.0, 10.0, 20.0])
    el_dice_gamma: float = 0.5
    steps_per_epoch: int = 0  # 0: one pass over the training samples
    # run
    seed: int = 1234
    amp: bool | None = None  # None: bf16 autocast on a GPU, off on the CPU
    compile: bool | None = None  # None: torch.compile on a GPU (eager fallback if it fails), eager on the CPU
    deterministic: bool = False
    sync_bn: bool = False
    val_batch_size: int = 16
    patience: int = 0  # epochs without a better validation score before stopping; 0: never
    select: str = ""  # validation figures summed to pick the best checkpoint ("dice_mean+auc_mean"); "": the task's
    log_every: int = 50  # a progress line every this many steps (and at least once a minute)
    out: str | None = None
    save_every_checkpoint: bool = False
    # the task's own settings (its ``TaskSettings`` fields by name), checked by the task
    task_settings: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> Settings:
        """Ranges and shapes of the values; names of models, losses and tasks are checked where they live."""
        for f in fields(self):
            values = getattr(self, f.name)
            for v in values if isinstance(values, list) else [values]:
                if isinstance(v, float) and not math.isfinite(v):
                    raise ValueError(f"{f.name} (--{f.name.replace('_', '-')}) must be a finite number, got {v}")
        if min(self.channels, default=0) < 1:
            raise ValueError(f"channels must be positive widths, got {self.channels}")
        if self.optimizer.lower() not in ("adam", "sgd", "adamw"):
            raise ValueError(f"optimizer must be Adam, AdamW or SGD, got {self.optimizer!r}")
        if self.lr_mode not in ("step", "poly"):
            raise ValueError(f"lr_mode must be 'step' or 'poly', got {self.lr_mode!r}")
        for k in ("batch_size", "epochs", "step", "val_batch_size", "log_every", "num_classes"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} (--{k.replace('_', '-')}) must be >= 1, got {getattr(self, k)}")
        for k in (
            *("random_rotate", "random_scale", "random_brightness", "random_contrast", "random_gamma", "lr"),
            *("random_noise", "random_blur"),
            *("crop_size", "steps_per_epoch", "workers", "patience", "num_detect"),
        ):
            if getattr(self, k) < 0:
                raise ValueError(f"{k} (--{k.replace('_', '-')}) must be >= 0, got {getattr(self, k)}")
        if len(self.class_weights) != self.num_classes:
            raise ValueError(f"{len(self.class_weights)} class_weights for {self.num_classes} classes")
        if self.resize is not None and (len(self.resize) not in (1, 2) or min(self.resize) < 1):
            raise ValueError(f"resize takes N or H W (positive), got {self.resize}")
        if self.random_jpeg and not 1 <= self.random_jpeg <= 95:
            raise ValueError(
                f"random_jpeg (--random-jpeg) is the lowest JPEG quality, 1 to 95 (0: off), got {self.random_jpeg}"
            )
        return self

    @property
    def resize_hw(self) -> tuple[int, int] | None:
        if not self.resize:
            return None
        return (self.resize[0], self.resize[-1])

    def to_dict(self) -> dict:
        return asdict(self)

    def with_task(self, **changes) -> Settings:
        """A copy with some of the task's own settings changed (checked when the task reads them)."""
        return dataclasses.replace(self, task_settings={**self.task_settings, **changes})

    def value(self, key: str):
        """A shared setting, or one of the task's own (``task_settings``) by name."""
        return getattr(self, key) if key in SHARED else self.task_settings[key]

    @classmethod
    def from_dict(cls, d: dict, source: str = "settings") -> Settings:
        """Settings from a mapping (dashes or underscores); unknown keys and values of the wrong type are errors
        that name ``source``. Settings written before tasks owned theirs (the task-only keys at the top level) are
        read with those keys moved into ``task_settings``."""
        clean = nest_task_settings({k.replace("-", "_"): v for k, v in d.items()})
        return checked_dataclass(cls, clean, source)


SHARED = frozenset(f.name for f in fields(Settings))
# top-level settings of files written before each task declared its own (checkpoint format 2 and older): every task's
# settings.json and checkpoints carried all four; a task keeps those it declares and drops the others
LEGACY_TASK_KEYS = ("detection", "val_count", "layout", "label_map")


def nest_task_settings(d: dict) -> dict:
    """A settings mapping of checkpoint format 2 or older (the task-only ``LEGACY_TASK_KEYS`` at the top level) with
    those keys moved into ``task_settings``; a current one as it is."""
    moved = {k: d[k] for k in LEGACY_TASK_KEYS if k in d}
    if not moved:
        return d
    rest = {k: v for k, v in d.items() if k not in moved}
    return {**rest, "task_settings": {**moved, **dict(d.get("task_settings") or {})}}


def checked_dataclass(cls, d: dict, source: str, ignore: Collection[str] = ()):
    """``cls(**d)`` for a dataclass whose field types ``_has_type`` knows; unknown keys (but those in ``ignore``)
    and values of the wrong type are errors that name ``source``."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(names) - set(ignore))
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {unknown}; valid keys: {sorted(names)}")
    for k, v in d.items():
        if k in names and not _has_type(v, hints[k]):
            raise ValueError(f"{source}: setting {k!r} must be {_type_name(hints[k])}, got {v!r} ({type(v).__name__})")
    return cls(**{k: v for k, v in d.items() if k in names})


def option(default, help: str, choices: Sequence | None = None, data: bool = False, **argparse_extra) -> Any:
    """A field of a ``TaskSettings`` dataclass: its default and its help on the command line (``choices`` are
    checked in ``validate`` too; ``argparse_extra`` go to ``add_argument``: ``metavar``, ``type``, ...). ``data``: a
    setting of how a data folder is read (train.py, eval.py and test.py offer it; predict.py, which reads single
    inputs, does not)."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "data": data, "argparse": argparse_extra}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TaskSettings:
    """The settings one task reads and others do not, declared by the task: a dataclass of ``option`` fields, which
    the command line shows in the task's own group and ``Settings.task_settings`` carries (so do the checkpoints).
    A subclass may add checks to ``validate``; the task's changes to the shared defaults go in ``defaults``."""

    #: what this task changes in ``Settings``' defaults (a config file and the command line still override them)
    defaults: ClassVar[dict[str, Any]] = {}
    #: settings added after runs were made, with the value that reproduces how those runs trained: a resumed run
    #: whose stored settings lack one continues with it, not with the new default
    introduced: ClassVar[dict[str, Any]] = {}

    @classmethod
    def from_dict(cls, d: dict, source: str = "settings"):
        """The task's settings from ``Settings.task_settings``: unknown keys are errors, but the task-only keys that
        every task's files carried before tasks declared their own (``LEGACY_TASK_KEYS``)."""
        return checked_dataclass(cls, d, source, ignore=LEGACY_TASK_KEYS).validate()

    def validate(self):
        for f in fields(self):
            value, choices = getattr(self, f.name), f.metadata.get("choices")
            if choices and value not in choices:
                raise ValueError(
                    f"{f.name} (--{f.name.replace('_', '-')}) must be one of {', '.join(choices)}, got {value!r}"
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} (--{f.name.replace('_', '-')}) must be a finite number, got {value}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


# Inference choices that several tasks share, declared once: a task whose settings take one writes
# ``detection: str = DETECTION()``; eval.py, test.py and predict.py offer each once and set it where the task has it.
def DETECTION():  # noqa: N802  (a field declaration)
    return option(
        "combined",
        "per-record lesion scores from the classification head, the segmentation, or both",
        choices=("head", "seg", "combined"),
    )


def SCALE():  # noqa: N802
    return option(
        "auto",
        "resize inputs by this factor before the model; auto: bring them to the training pixel scale (other "
        "devices); none: native size",
        type=scale_arg,
        metavar="auto|none|FACTOR",
    )


def scale_value(scale: str | float) -> str | float:
    """``auto``, ``none`` or a finite factor > 0 (``--scale``, ``Segmenter``'s ``scale``, a settings file), else
    ``ValueError``."""
    if isinstance(scale, str) and scale in ("auto", "none"):
        return scale
    try:
        if isinstance(scale, bool):
            raise TypeError
        value = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be auto, none or a number > 0, got {scale!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"a scale factor must be a finite number > 0, got {scale}")
    return value


def scale_arg(text: str) -> str | float:
    """``--scale`` on a command line: ``scale_value`` as argparse reports errors."""
    try:
        return scale_value(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


SHARED_INFERENCE = ("detection", "scale")


def _has_type(value, hint) -> bool:
    """``value`` fits the annotation ``hint`` (int, float, bool, str, list[...], X | None). A bool is not a number
    and a string is not a bool: ``"false"`` in a config file must not turn a switch on."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (inner,) = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and all(_has_type(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is typing.Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is list:
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(args[0], str(args[0]))
    if args:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3`` as the number it is (YAML 1.1 wants ``1.0e-3``; a learning rate
    written ``1e-3`` would otherwise be the string "1e-3")."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|\.(?:inf|Inf|INF)|[-+]\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def load_config_file(path: str | Path) -> dict:
    """A JSON or YAML mapping of settings; syntax errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.load(text, Loader=_YamlLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ValueError(f"{path}:{where} not valid YAML ({getattr(e, 'problem', e)})") from e
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {e.lineno} not valid JSON ({e.msg})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of settings, got {type(data).__name__}")
    return data


def flatten(d: dict, source: str = "settings") -> dict:
    """A settings mapping with the task's own settings (a ``task_settings`` block, as settings.json and checkpoints
    hold them) at the top level, as a config file or the command line gives them."""
    d = {k.replace("-", "_"): v for k, v in d.items()}
    inner = d.pop("task_settings", None) or {}
    if not isinstance(inner, dict):
        raise ValueError(f"{source}: task_settings must be a mapping of the task's own settings, got {inner!r}")
    clash = sorted(set(inner) & set(d))
    if clash:
        raise ValueError(f"{source}: {', '.join(clash)} both at the top level and in task_settings; keep one")
    return {**d, **{k.replace("-", "_"): v for k, v in inner.items()}}


def settings_keys(task_settings: type[TaskSettings]) -> set[str]:
    """Every name a command line or a config file may set for a task: the shared settings and its own."""
    return (SHARED - {"task_settings"}) | {f.name for f in fields(task_settings)}


def resolve_settings(
    given: dict, config: str | Path | None, task_settings: Callable[[str], type[TaskSettings]]
) -> Settings:
    """Defaults < the task's defaults < config file < options given on the command line (``given``); the keys of
    the task's own settings (``task_settings(task)``) go into ``Settings.task_settings``."""
    from_file: dict = {}
    if config:
        from_file = flatten(load_config_file(config), str(config))
    task = given.get("task", from_file.get("task", Settings.task))
    own = task_settings(task)
    mine = {f.name for f in fields(own)}
    for k in set(LEGACY_TASK_KEYS) - mine:  # settings files of format 2 carried every task's four keys
        from_file.pop(k, None)
    for source, values in ((str(config), from_file), ("command line", given)):
        unknown = sorted(set(values) - settings_keys(own))
        if unknown:
            own = ", ".join(sorted(mine)) or "none"
            raise ValueError(
                f"{source}: {', '.join(unknown)}: not a setting of the {task} task (its own: {own}; the shared ones "
                "are those of train.py --help but the task groups)"
            )
    merged: dict = dict(own.defaults)
    merged.update(from_file)
    merged.update(given)
    shared = {k: v for k, v in merged.items() if k not in mine}
    where = str(config or "command line")
    task_part = own.from_dict({k: v for k, v in merged.items() if k in mine}, source=where)
    return Settings.from_dict({**shared, "task_settings": task_part.to_dict()}, source=where).validate()
