"""What the drivers share: options in groups with their effective defaults, checkpoints to a predictor and a task,
and the entry point that parses before anything heavy runs or the multi-GPU relaunch happens."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from utils.config import SHARED_INFERENCE, Settings

if TYPE_CHECKING:  # imported where used: --help and argument errors come before torch is loaded
    from inference.predictor import Predictor
    from tasks import Task

log = logging.getLogger(__name__)

TOOLS = """tools:
  python -m data.synthetic --out DIR ...    write a synthetic OCT set in the AI Challenger layout
  python -m tools.export CKPT --format onnx export a checkpoint to ONNX or TorchScript
  python -m utils.checkpoint SRC DST        an optimiser-free (fp16 / bf16) copy of a checkpoint for shipping
  python -m tools.calibrate --seg-path CKPT an OCT model's fluid calibrated on labelled data (area ratio 1)
  python -m tools.quantize --seg-path CKPT  an int8 graph of a checkpoint for the CPU (--int8), accuracy-checked
  python bench.py                           speed of the fast paths against the original's way
"""


def show(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(show(v) for v in value)
    return "none" if value is None else str(value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and shows each option's default (unless the help already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default in (None, argparse.SUPPRESS):
            return text
        if isinstance(action, argparse._StoreFalseAction):  # "--no-flip ... [default: flip on]"
            return text + f" [default: {action.dest.replace('_', ' ')} on]"
        return text + f" [default: {show(action.default)}]"


def settings_default(dest: str) -> str:
    """``[default: X; vessel: Y]``: the ``Settings`` default of ``dest`` and every task's own."""
    from tasks import list_tasks, task_settings

    base = Settings.__dataclass_fields__[dest]
    value = base.default_factory() if callable(base.default_factory) else base.default
    parts = [f"default: {show(value)}"]
    for name in list_tasks():
        own = task_settings(name).defaults
        if dest in own and own[dest] != value:
            parts.append(f"{name}: {show(own[dest])}")
    return f" [{'; '.join(parts)}]"


def add_setting(group, *flags: str, help: str, default_text: str | None = None, **kwargs) -> None:
    """An option that overrides a ``Settings`` field (only when given: a config file may set it too); its help
    ends with the field's effective default, per task, or with ``default_text``."""
    action = group.add_argument(*flags, help=help, **kwargs)
    if default_text is None and isinstance(action, argparse._StoreFalseAction):
        default_text = f"{action.dest.replace('_', ' ')} on"  # "--no-flip ... [default: flip on]"
    suffix = f" [default: {default_text}]" if default_text else settings_default(action.dest)
    action.help = help + suffix


NOT_SETTINGS = ("config", "resume", "finetune")  # train.py options that are not fields of Settings


def given_settings(args: argparse.Namespace) -> set[str]:
    """The settings a training command line names, itself or through ``--config`` (train.py's options default to
    absent): what a resumed run checks against its own."""
    from tasks import task_settings
    from utils.config import Settings, flatten, load_config_file, settings_keys

    given = {k for k in vars(args) if k not in NOT_SETTINGS}
    from_file = flatten(load_config_file(args.config), args.config) if getattr(args, "config", None) else {}
    task = getattr(args, "task", from_file.get("task", Settings.task))
    return (given | set(from_file)) & settings_keys(task_settings(task))  # not an older file's other-task keys


def train_settings(args: argparse.Namespace) -> Settings:
    """Defaults < task defaults < ``--config`` file < options given on the command line; names checked."""
    from engine.trainer import check_names
    from tasks import task_settings
    from utils.config import resolve_settings

    given = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS}
    settings = resolve_settings(given, getattr(args, "config", None), task_settings)
    check_names(settings)
    # absolute paths in settings.json and every checkpoint: eval.py / test.py run from another folder must read the
    # data the model was trained on, not whatever that folder's data/... holds (the decode cache stays as given: it
    # is keyed by file identity, and another machine may not be able to create the trainer's absolute folder)
    for key in ("data_dir", "list_dir"):
        if getattr(settings, key):
            setattr(settings, key, os.path.abspath(getattr(settings, key)))
    return settings


def task_options() -> dict[str, list[tuple[str, dataclasses.Field]]]:
    """Each task's own settings by name: ``{name: [(task, field), ...]}``, from the declarations alone (no task
    module, no torch is imported); each field's ``type`` resolved to the annotation itself."""
    import typing

    from tasks import list_tasks, task_settings

    found: dict[str, list] = {}
    for task in list_tasks():
        cls = task_settings(task)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            resolved = dataclasses.field(default=f.default, default_factory=f.default_factory, metadata=f.metadata)
            resolved.name, resolved.type = f.name, hints[f.name]
            found.setdefault(f.name, []).append((task, resolved))
    return found


def _argument(f: dataclasses.Field) -> dict:
    """``add_argument`` keywords for a ``TaskSettings`` field: ``option``'s metadata, then the annotation's type
    (``X | None`` as X; ``list[X]`` as one or more X; a bool as ``--name / --no-name``)."""
    import types
    import typing

    extra = dict(f.metadata.get("argparse") or {})
    hint = f.type
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = inner[0] if len(inner) == 1 else hint
    if typing.get_origin(hint) is list:
        extra.setdefault("nargs", "+")
        hint = typing.get_args(hint)[0]
    if f.metadata.get("choices"):
        extra.setdefault("choices", f.metadata["choices"])
    if hint is bool:
        extra.setdefault("action", argparse.BooleanOptionalAction)
    elif hint in (int, float):
        extra.setdefault("type", hint)
    return extra


def add_task_settings(p: argparse.ArgumentParser, inference: bool = False, data: bool = True) -> None:
    """One group per task with its own settings, from its ``TaskSettings`` declaration; a setting that several tasks
    declare appears once, its help naming each. ``inference``: the options of eval.py, test.py and predict.py, which
    default to the checkpoint's (the shared inference choices, ``SHARED_INFERENCE``, are in the inference group
    instead); ``data``: with the settings of how a data folder is read (not predict.py's)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, declared in task_options().items():
        if inference and name in SHARED_INFERENCE or not data and any(f.metadata.get("data") for _, f in declared):
            continue
        tasks = [t for t, _ in declared]
        title = f"{tasks[0]} task" if len(tasks) == 1 else "settings of several tasks"
        if title not in groups:
            groups[title] = p.add_argument_group(title)
        helps = [f.metadata.get("help", "") for _, f in declared]
        text = helps[0] if len(tasks) == 1 else "; ".join(f"{t}: {h}" for t, h in zip(tasks, helps))
        defaults = {t: f.default_factory() if callable(f.default_factory) else f.default for t, f in declared}
        if inference:
            text += " [default: the checkpoint's setting]"
        elif len(set(map(show, defaults.values()))) == 1:
            text += f" [default: {show(next(iter(defaults.values())))}]"
        else:
            text += " [default: " + "; ".join(f"{t} {show(v)}" for t, v in defaults.items()) + "]"
        kwargs = _argument(declared[0][1])
        if inference:
            kwargs["default"] = None
        flag = "--" + name.replace("_", "-")
        if flag in p._option_string_actions:  # argparse would fail at --help with a conflict nobody could place
            raise ValueError(f"the {', '.join(tasks)} task's setting {name!r} has the name of a shared option ({flag})")
        groups[title].add_argument(flag, dest=name, help=text, **kwargs)


# ------------------------------------------------------------------------------------------- inference drivers
def add_checkpoint_args(p: argparse.ArgumentParser, shipped: str | None = None) -> None:
    """--seg-path / --fusion / --fusion-study: one is required unless ``shipped`` says which model is used without
    them."""
    g = p.add_argument_group("checkpoints")
    one = g.add_mutually_exclusive_group(required=shipped is None)
    one.add_argument(
        "--seg-path",
        "--checkpoint",
        help="checkpoint of one model (e.g. runs/x/checkpoint/model_best.pth.tar)"
        + (f" [default: {shipped}]" if shipped else ""),
    )
    one.add_argument("--fusion", nargs="+", metavar="CKPT", help="several checkpoints whose probabilities are averaged")
    one.add_argument("--fusion-study", metavar="NAME", help="fuse the best checkpoints of the --top best sweep trials")
    g.add_argument(
        "--fusion-weights", type=float, nargs="+", help="one weight (>= 0) per --fusion checkpoint [default: equal]"
    )
    g.add_argument("--top", type=int, default=3, help="--fusion-study: how many of the best trials")
    g.add_argument("--storage", help="--fusion-study: the study's journal file or database URL "
                   "[default: runs/sweep/<NAME>/journal.log, sweep.py's]")  # fmt: skip


def add_data_args(p: argparse.ArgumentParser, split_help: str, split_default: str | None) -> None:
    g = p.add_argument_group("data")
    g.add_argument("-d", "--data-dir", help="dataset root (default: the one the first checkpoint was trained on)")
    g.add_argument("--split", default=split_default, choices=["train", "val", "test"], help=split_help)
    g.add_argument("-l", "--list-dir", help="oct: optional folder with <split>_images.txt-style lists")
    g.add_argument("--cache-dir", help="oct: where decoded volumes are kept (default: the checkpoint's setting)")
    g.add_argument("-j", "--workers", type=int, default=1, help="threads decoding the next volumes or photos ahead")
    add_task_settings(p, inference=True)


def add_inference_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inference")
    g.add_argument("--tta", action="store_true", help="average with horizontally flipped inputs")
    g.add_argument("--batch-size", type=int, default=16, help="inputs (slices, windows) per forward pass")
    g.add_argument(
        "--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast [default: on a GPU]"
    )
    g.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile [default: on a GPU]"
    )
    g.add_argument("--device", help="cpu, cuda or cuda:N [default: cuda when available; one GPU per process]")
    g.add_argument(
        "--threads", type=int, help="CPU threads for inference, set once for the whole run [default: every core]"
    )
    g.add_argument(
        "--backend",
        choices=["auto", "torch", "onnxruntime", "openvino"],
        default=None,
        help="what runs the models on the CPU: auto is OpenVINO when installed, else ONNX Runtime, else PyTorch (on a "
        "GPU always PyTorch); the exported graph is cached per checkpoint in $OCT_CACHE_DIR/graphs "
        "[default: $RETINA_LESION_BACKEND, else auto]",
    )
    g.add_argument(
        "--int8",
        action="store_true",
        help="OpenVINO's int8 graph of the checkpoint, made and accuracy-checked by python -m tools.quantize",
    )
    shared = task_options()
    for name in SHARED_INFERENCE:  # declared once (utils.config), offered once, set where the task takes it
        declared = shared.get(name, [])
        f = declared[0][1] if declared else None
        takes = ", ".join(t for t, _ in declared) or "no task"
        text = (f.metadata.get("help", "") if f else "") + f" ({takes}) [default: the checkpoint's setting]"
        kwargs = _argument(f) if f else {}
        g.add_argument("--" + name, dest=name, default=None, help=text, **kwargs)


def add_output_args(p: argparse.ArgumentParser, out_help: str) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", help=out_help)
    g.add_argument("--force", action="store_true", help="replace an existing output folder")
    g.add_argument("--vis", action="store_true", help="also write pictures (overlays, GIFs, blends) to <out>/vis")


def checkpoints(args: argparse.Namespace) -> list[str]:
    if getattr(args, "fusion_study", None):
        from engine.sweep import top_checkpoints

        if args.top < 1:
            raise ValueError(f"--top must be >= 1, got {args.top}")
        storage = args.storage or str(Path("runs") / "sweep" / args.fusion_study / "journal.log")
        paths = top_checkpoints(args.fusion_study, storage, args.top)
    else:
        paths = [str(p) for p in (args.fusion or [args.seg_path])]
    if args.fusion_weights is not None:
        if len(args.fusion_weights) != len(paths):
            raise ValueError(f"{len(args.fusion_weights)} --fusion-weights for {len(paths)} checkpoints")
        weights = args.fusion_weights
        if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"--fusion-weights must be >= 0 and sum to > 0, got {args.fusion_weights}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if getattr(args, "workers", 0) < 0:
        raise ValueError(f"-j/--workers must be >= 0, got {args.workers}")
    return paths


def task_overrides(args: argparse.Namespace) -> dict:
    """The tasks' own settings given on an inference command line (data options, ``--detection``, ``--scale``): they
    replace the checkpoint's."""
    names = [*task_options(), *SHARED_INFERENCE]
    return {k: getattr(args, k) for k in dict.fromkeys(names) if getattr(args, k, None) is not None}


def task_for(paths: list[str], cache_dir=None, weights=None, overrides: dict | None = None):
    """The first checkpoint's settings, with the command line's ``cache_dir`` and the tasks' own settings in
    ``overrides`` replacing its own, and the task they name, holding every checkpoint's carried values. An override
    that the checkpoint's task does not take is ignored with a warning."""
    from tasks import build_task, get_task
    from utils.checkpoint import checked_class_bias, load_checkpoint

    states = [load_checkpoint(p) for p in paths]
    settings = Settings.from_dict(states[0]["settings"], source=paths[0])
    for p, st in zip(paths, states):  # checked before anything reads it (the task logs it)
        checked_class_bias(st.get("class_bias"), settings.num_classes, p)
    if cache_dir is not None:
        settings = dataclasses.replace(settings, cache_dir=cache_dir)
    own = {f.name for f in dataclasses.fields(get_task(settings.task).settings_class)}
    for name, value in (overrides or {}).items():
        if name not in own:
            flag = "--" + name.replace("_", "-")
            log.warning(f"{flag} {show(value)} is ignored: the {settings.task} task of {paths[0]} has no such setting")
    settings = settings.with_task(**{k: v for k, v in (overrides or {}).items() if k in own})
    return settings, build_task(settings, states, weights)


def protected_paths(data_dir, paths: list[str], task, records=(), list_dir=None) -> list[tuple[str, Path]]:
    """What an output folder must never replace or hold: the dataset, every file and folder read (wherever list
    files point), the list files, the checkpoints being read, the decode cache."""
    from data.cache import DEFAULT_CACHE_DIR

    cache = Path(task.cache_dir) if task.cache_dir is not None else DEFAULT_CACHE_DIR
    protected = [("the dataset", Path(data_dir)), ("the decode cache", cache)]
    protected += [("a checkpoint being read", Path(p)) for p in paths]
    protected += [("an input being read", p) for p in task.input_paths(list(records))]
    if list_dir is not None:
        protected.append(("the list files", Path(list_dir)))
    return protected


def default_out(paths: list[str], leaf: str) -> Path:
    """``<run>/<leaf>`` beside a run's checkpoint; for a checkpoint that is not in a run's ``checkpoint/`` folder (a
    shipped or downloaded one), ``runs/<checkpoint name>/<leaf>``, never inside the weights' folder; for a fusion
    ``runs/fusion/<leaf>``."""
    if len(paths) == 1:
        ckpt = Path(paths[0]).resolve()
        if ckpt.parent.name == "checkpoint":
            return ckpt.parent.parent / leaf
        return Path("runs") / ckpt.name.split(".")[0] / leaf
    return Path("runs") / "fusion" / leaf


def build_predictor(args: argparse.Namespace, paths: list[str], info=None):
    from inference.predictor import flush_denormals
    from tasks import load_predictor
    from utils.distributed import device_for

    flush_denormals()  # before the first parallel kernel, on any device (it touches the CPU's arithmetic only)
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)  # intra-op threads of every kernel the run calls; once, before any runs
    backend = getattr(args, "backend", None)
    if backend is None:  # int8 graphs run on OpenVINO only; otherwise $RETINA_LESION_BACKEND, else auto
        backend = "openvino" if getattr(args, "int8", False) else os.environ.get("RETINA_LESION_BACKEND", "auto")
        if backend not in ("auto", "torch", "onnxruntime", "openvino"):
            raise ValueError(
                f"RETINA_LESION_BACKEND={backend!r}: it must be auto, torch, onnxruntime or openvino (or unset)"
            )
    device = args.device
    if device is None and info is not None and info.enabled:
        device = device_for(info)  # one GPU per process
    return load_predictor(
        paths,
        args.fusion_weights,
        device=device,
        batch_size=args.batch_size,
        amp=args.amp,
        tta_flip=args.tta,
        compile=args.compile,
        backend=backend,
        int8=getattr(args, "int8", False),
        threads=threads,
    )


@dataclass
class InferenceRun:
    """What an inference driver over a data split (eval.py, test.py) works with."""

    paths: list[str]  # the checkpoints
    settings: Settings  # the first checkpoint's, with the command line's data and detection options
    task: Task
    split: str
    data_dir: str | Path
    records: list
    predictor: Predictor
    out: Path  # the output folder
    protected: list[tuple[str, Path]]  # what the output folder must never replace or hold (``protected_paths``)


def open_inference(
    args: argparse.Namespace,
    info=None,
    out_leaf: str = "{split}",
    check: Callable[[list[str], Task, str, str | Path], None] | None = None,
) -> InferenceRun:
    """The opening eval.py and test.py share: the checkpoints, their settings and task with the command line's
    options, the split (``--split``, else the task's ``eval_split``) and its records in ``--data-dir`` (else the data
    the model was trained on), the predictor (one GPU per process under ``info``), the output folder (``--out``, else
    ``out_leaf`` with the split beside the checkpoint) and the paths it must not touch. ``check(paths, task, split,
    data_dir)`` refuses what the driver cannot do before any record is read or model loaded."""
    paths = checkpoints(args)
    settings, task = task_for(paths, args.cache_dir, args.fusion_weights, task_overrides(args))
    split = args.split or task.eval_split
    data_dir = args.data_dir or settings.data_dir
    if check is not None:
        check(paths, task, split, data_dir)
    records = task.records(split, data_dir, args.list_dir)
    predictor = build_predictor(args, paths, info)
    out = Path(args.out or default_out(paths, out_leaf.format(split=split)))
    if not args.out:  # said before the work: a shipped checkpoint's outputs are not beside it, where one would look
        log.info(f"output folder {out} (--out chooses another)")
    protected = protected_paths(data_dir, paths, task, records, args.list_dir)
    return InferenceRun(paths, settings, task, split, data_dir, records, predictor, out, protected)


@contextmanager
def driver_session(distributed: bool = True):
    """A driver's process: joins the process group when torchrun started it, logs from rank 0, and leaves the
    group at the end whatever happens; yields the ``DistInfo``."""
    from utils.distributed import DistInfo, cleanup, init_distributed
    from utils.log import setup_logging

    info = init_distributed() if distributed else DistInfo()
    setup_logging(info.is_main)
    try:
        yield info
    finally:
        cleanup(info)


def is_explained(e: BaseException) -> bool:
    """An error whose message says what happened and what to do, reported in one line: bad input or settings
    (``ValueError``, ``DatasetError`` among them), the toolkit's own run-time errors (``ToolkitError``: a checkpoint,
    a folder in use, a full disk, ...), a non-finite loss, and ``OSError``s that are the toolkit's (no errno) or name
    their path. Anything else, such as a CUDA failure or a bug, keeps its traceback."""
    from utils.errors import ToolkitError

    if isinstance(e, (ValueError, ToolkitError, FloatingPointError)):
        return True
    return isinstance(e, OSError) and (e.errno is None or e.filename is not None)


def cli_main(script: str, parse: Callable, main: Callable, relaunch: bool = True) -> None:
    """``__main__`` of a driver: parse first (``--help`` and typos end here, in this one process), then on a host
    with several visible GPUs run again under torchrun (one process per GPU), then ``main(argv)``; errors that
    explain themselves (:func:`is_explained`) end in one ``error:`` line, any other keeps its traceback."""
    argv = sys.argv[1:]
    parse(argv)
    if relaunch:
        from utils.distributed import relaunch_on_all_gpus

        code = relaunch_on_all_gpus(script, argv)
        if code is not None:
            sys.exit(code)
    try:
        main(argv)
    except Exception as e:
        if not is_explained(e):
            raise
        sys.exit("error: " + " ".join(str(e).split()))
