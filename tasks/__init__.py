"""Tasks, one module each, in one registry: ``oct`` (OCT edema, the default) and ``vessel`` (fundus vessels)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from inference.predictor import Predictor
from tasks.base import Evaluator, Task

_REGISTRY: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: makes ``cls`` reachable as ``--task <cls.name>`` and from its checkpoints."""
    _REGISTRY[cls.name] = cls
    return cls


def list_tasks() -> list[str]:
    return sorted(_REGISTRY)


def get_task(name: str) -> type[Task]:
    if name not in _REGISTRY:
        raise ValueError(f"Unknown task {name!r}; valid tasks: {', '.join(list_tasks())}")
    return _REGISTRY[name]


def build_task(settings, cache_dir: str | None = None, states=(), weights=None, scale="auto") -> Task:
    return get_task(settings.task)(settings, cache_dir, states, weights, scale)


def task_defaults(name: str) -> dict:
    return dict(get_task(name).defaults)


def load_predictor(
    paths: Sequence[str | Path], weights: Sequence[float] | None = None, device=None, **kwargs
) -> Predictor:
    """``Predictor.from_checkpoints`` whose models see their inputs as their checkpoints' task says (resizing,
    windows); ``kwargs`` go to ``Predictor`` (``batch_size``, ``tta_flip``, ``amp``, ...)."""

    def options(settings) -> dict:
        return get_task(settings.task).predictor_options(settings)

    return Predictor.from_checkpoints(paths, weights, device, options=options, **kwargs)


from tasks import oct, vessel  # noqa: E402, F401  (registers the built-in tasks)

__all__ = [
    "Evaluator",
    "Task",
    "build_task",
    "get_task",
    "list_tasks",
    "load_predictor",
    "register_task",
    "task_defaults",
]
