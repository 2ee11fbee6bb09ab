"""Settings: one typed dataclass; a JSON/YAML file overrides the defaults and the command line overrides both.

A task changes some defaults (``tasks.Task.defaults``); which names are valid models, losses or tasks is checked by
those packages, not here.
"""

from __future__ import annotations

import json
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

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
    # task-specific
    detection: str = "combined"  # oct: per-slice scores from the head, the segmentation ("seg") or both
    val_count: int = 4  # vessel, RETOUCH layout: training photos / cases held out for validation
    layout: str = "auto"  # oct: "challenger" (AI Challenger folders), "retouch" (case folders with oct.mhd), "auto"
    label_map: str = "1:1,2:2,3:3"  # oct, RETOUCH layout: stored label value -> class (IRF, SRF, PED -> 1, 2, 3)

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
        if self.detection not in ("head", "seg", "combined"):
            raise ValueError(f"detection must be head, seg or combined, got {self.detection!r}")
        if self.layout not in ("auto", "challenger", "retouch"):
            raise ValueError(f"layout must be auto, challenger or retouch, got {self.layout!r}")
        if self.lr_mode not in ("step", "poly"):
            raise ValueError(f"lr_mode must be 'step' or 'poly', got {self.lr_mode!r}")
        for k in ("batch_size", "epochs", "step", "val_batch_size", "log_every", "num_classes"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} (--{k.replace('_', '-')}) must be >= 1, got {getattr(self, k)}")
        for k in (
            *("random_rotate", "random_scale", "random_brightness", "random_contrast", "random_gamma", "lr"),
            *("random_noise", "random_blur"),
            *("crop_size", "steps_per_epoch", "workers", "patience", "num_detect", "val_count"),
        ):
            if getattr(self, k) < 0:
                raise ValueError(f"{k} (--{k.replace('_', '-')}) must be >= 0, got {getattr(self, k)}")
        if len(self.class_weights) != self.num_classes:
            raise ValueError(f"{len(self.class_weights)} class_weights for {self.num_classes} classes")
        if self.resize is not None and (len(self.resize) not in (1, 2) or min(self.resize) < 1):
            raise ValueError(f"resize takes N or H W (positive), got {self.resize}")
        return self

    @property
    def resize_hw(self) -> tuple[int, int] | None:
        if not self.resize:
            return None
        return (self.resize[0], self.resize[-1])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "settings") -> Settings:
        """Settings from a mapping (dashes or underscores); unknown keys and values of the wrong type are errors
        that name ``source``."""
        hints = typing.get_type_hints(cls)
        clean = {k.replace("-", "_"): v for k, v in d.items()}
        unknown = sorted(set(clean) - set(hints))
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {unknown}; valid keys: {sorted(hints)}")
        for k, v in clean.items():
            if not _has_type(v, hints[k]):
                raise ValueError(
                    f"{source}: setting {k!r} must be {_type_name(hints[k])}, got {v!r} ({type(v).__name__})"
                )
        return cls(**clean)


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


def resolve_settings(given: dict, config: str | Path | None, task_defaults: Callable[[str], dict]) -> Settings:
    """Defaults < the task's defaults < config file < options given on the command line (``given``)."""
    from_file: dict = {}
    if config:
        from_file = {k.replace("-", "_"): v for k, v in load_config_file(config).items()}
        Settings.from_dict(from_file, source=str(config))  # unknown keys and wrong types name the file
    task = given.get("task", from_file.get("task", Settings.task))
    merged: dict = dict(task_defaults(task))
    merged.update(from_file)
    merged.update(given)
    return Settings.from_dict(merged, source=str(config or "command line")).validate()
