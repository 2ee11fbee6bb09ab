"""Tasks in one registry: ``oct`` (OCT edema, the default) and ``vessel`` (fundus vessels).

A task is a ``Task`` subclass in its module and its settings (a ``TaskSettings`` dataclass, declared beside the
task's reader so that the command line is built without importing torch). The built-in tasks are registered by name
here and imported when first asked for; a task defined elsewhere registers itself with ``@register_task``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.base import Evaluator, Task
from utils.config import TaskSettings

if TYPE_CHECKING:
    from inference.predictor import Predictor

# the registry of built-in tasks: name -> (the task's class, its settings class), as "module:name"
BUILTIN: dict[str, tuple[str, str]] = {
    "oct": ("tasks.oct:OctTask", "data.oct:OctSettings"),
    "vessel": ("tasks.vessel:VesselTask", "data.photos:VesselSettings"),
}
_REGISTRY: dict[str, type[Task]] = {}


def _load(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: makes ``cls`` reachable as ``--task <cls.name>`` and from its checkpoints."""
    _REGISTRY[cls.name] = cls
    return cls


def list_tasks() -> list[str]:
    return sorted({*BUILTIN, *_REGISTRY})


def get_task(name: str) -> type[Task]:
    if name not in _REGISTRY and name in BUILTIN:
        _load(BUILTIN[name][0])  # its module registers it
    if name not in _REGISTRY:
        raise ValueError(f"Unknown task {name!r}; valid tasks: {', '.join(list_tasks())}")
    return _REGISTRY[name]


def task_settings(name: str) -> type[TaskSettings]:
    """The settings class of task ``name``, without importing the task's module where it is a built-in one."""
    if name in _REGISTRY:
        return _REGISTRY[name].settings_class
    if name in BUILTIN:
        return _load(BUILTIN[name][1])
    raise ValueError(f"Unknown task {name!r}; valid tasks: {', '.join(list_tasks())}")


def build_task(settings, states=(), weights=None) -> Task:
    return get_task(settings.task)(settings, states, weights)


def load_predictor(
    paths: Sequence[str | Path], weights: Sequence[float] | None = None, device=None, **kwargs
) -> Predictor:
    """``Predictor.from_checkpoints`` whose models see their inputs as their checkpoints' task says (resizing,
    windows); ``kwargs`` go to ``Predictor`` (``batch_size``, ``tta_flip``, ``amp``, ...)."""
    from inference.predictor import Predictor

    def options(settings) -> dict:
        return get_task(settings.task).predictor_options(settings)

    return Predictor.from_checkpoints(paths, weights, device, options=options, **kwargs)


__all__ = [
    "Evaluator",
    "Task",
    "build_task",
    "get_task",
    "list_tasks",
    "load_predictor",
    "register_task",
    "task_settings",
]
