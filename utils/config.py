"""Settings: one typed dataclass; a JSON/YAML file overrides the defaults and the command line overrides both."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


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
    random_rotate: float = 0.0
    random_scale: float = 0.0
    flip: bool = True
    vflip: bool = False
    random_brightness: float = 0.0  # add U(-b, b) of full scale
    random_contrast: float = 0.0  # scale about the mean by 1 + U(-c, c)
    random_gamma: float = 0.0  # raise to the power 1 + U(-g, g)
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
    steps_per_epoch: int = 0  # 0: one pass over the training slices
    # run
    seed: int = 1234
    amp: bool | None = None  # None: bf16 autocast on a GPU, off on the CPU
    compile: bool | None = None  # None: torch.compile on a GPU (eager fallback if it fails), eager on the CPU
    deterministic: bool = False
    sync_bn: bool = False
    # vessel task
    val_count: int = 4  # training photos held out for validation (early stopping, threshold)
    patience: int = 0  # epochs without a better validation score before stopping; 0: never
    val_batch_size: int = 16
    out: str | None = None
    save_every_checkpoint: bool = False

    def validate(self) -> Settings:
        from losses import parse_loss_spec
        from models import list_models

        if self.task not in TASK_DEFAULTS:
            raise ValueError(f"task must be one of {sorted(TASK_DEFAULTS)}, got {self.task!r}")
        if self.name not in list_models():
            raise ValueError(f"Unknown model {self.name!r}; valid names: {', '.join(list_models())}")
        parse_loss_spec(self.loss)
        if self.optimizer.lower() not in ("adam", "sgd", "adamw"):
            raise ValueError(f"optimizer must be Adam, AdamW or SGD, got {self.optimizer!r}")
        if self.lr_mode not in ("step", "poly"):
            raise ValueError(f"lr_mode must be 'step' or 'poly', got {self.lr_mode!r}")
        for k in ("batch_size", "epochs", "step", "val_batch_size"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        for k in ("random_rotate", "random_scale", "random_brightness", "random_contrast", "random_gamma"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k} must be >= 0, got {getattr(self, k)}")
        if len(self.class_weights) != self.num_classes:
            raise ValueError(f"{len(self.class_weights)} class_weights for {self.num_classes} classes")
        if self.resize is not None and len(self.resize) not in (1, 2):
            raise ValueError(f"resize takes N or H W, got {self.resize}")
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
        names = {f.name for f in fields(cls)}
        clean = {k.replace("-", "_"): v for k, v in d.items()}
        unknown = sorted(set(clean) - names)
        if unknown:
            raise ValueError(f"{source}: unknown setting(s) {unknown}; valid keys: {sorted(names)}")
        return cls(**clean)


def load_config_file(path: str | Path) -> dict:
    """A JSON or YAML mapping of settings."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of settings, got {type(data).__name__}")
    return data


# what a task changes in the defaults (a config file and the command line still override these)
TASK_DEFAULTS: dict[str, dict] = {
    "oct": {},
    "vessel": {
        "name": "unet",
        "num_classes": 2,
        "num_detect": 0,
        "class_weights": [1.0, 1.0],
        "loss": "wce+dice",
        "data_dir": "../shared/data/DRIVE",
        "crop_size": 96,
        "steps_per_epoch": 100,
        "vflip": True,
        "random_rotate": 180.0,
        "random_scale": 0.1,
        "random_brightness": 0.1,
        "random_contrast": 0.2,
        "random_gamma": 0.2,
    },
}


def resolve_settings(args: argparse.Namespace, config_key: str = "config") -> Settings:
    """Defaults < task defaults < config file < explicitly given command-line options (``default=SUPPRESS``)."""
    given = {k: v for k, v in vars(args).items() if k != config_key}
    from_file: dict = {}
    cfg_path = getattr(args, config_key, None)
    if cfg_path:
        from_file = {k.replace("-", "_"): v for k, v in load_config_file(cfg_path).items()}
    task = given.get("task", from_file.get("task", "oct"))
    merged: dict = dict(TASK_DEFAULTS.get(task, {}))
    merged.update(from_file)
    merged.update(given)
    return Settings.from_dict(merged, source=str(cfg_path or "command line")).validate()
