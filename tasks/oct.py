"""OCT edema (AI Challenger 2018): B-scan volumes, 4-class segmentation (background, REA, SRF, PED) and per-slice
detection of the 3 lesions. A slice's input is the slice and its two neighbours stacked as 3 channels.

Scored as the challenge did: per lesion class, Dice per volume over all its slices (undefined where the class is
absent from that volume's ground truth), averaged over volumes; detection AUC per class over all slices.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from data.bscans import (
    find_bscan_pairs,
    independent_bscans,
    is_bscan_file,
    is_bscan_pairs,
    looks_like_bscan,
    read_bscan,
)
from data.cache import VolumeCache, compute_normalization
from data.dataset import SliceDataset, neighbour_indices
from data.oct import (
    CLASS_COLOURS,
    LABEL_SUFFIX,
    LESION_NAMES,
    OVERLAY_ALPHA,
    SPLIT_FOLDERS,
    OctSettings,
    VolumeRecord,
    detection_targets,
    find_volumes,
)
from data.retina import estimate_spacing, find_volume_boundaries
from data.retouch import find_retouch_volumes, is_retouch, parse_label_map
from data.transforms import ANY_LESION
from data.volumes import (
    GREY_RULE,
    Geometry,
    ScanMeta,
    check_extent,
    check_spacing,
    cirrus_spacing,
    read_volume,
    volume_geometry,
    volume_name,
    write_label_nifti,
)
from inference.predictor import Prediction, Predictor
from metrics import detection_auc, fluid_counts, fluid_summary, summarize_dice, volume_dice
from metrics.etdrs import etdrs, thickness_map
from metrics.quantify import quantify
from reports.html import write_patient_report
from tasks import register_task
from tasks.base import SHIPPED_DIR, Evaluator, Task, scaled_size
from utils.io import OUTPUT_MARKER, save_csv_atomic, save_image_atomic, save_json_atomic, save_npy_atomic, zip_folder
from utils.log import Progress
from utils.version import VERSION

log = logging.getLogger(__name__)
SUBMISSION_FOLDER = "segment"


@dataclass
class Volume:
    """A decoded volume: image (N, H, W) uint8, labels (N, H, W) class indices or None (both may be memory maps),
    and the voxel spacing in mm (between B-scans, along depth, between A-scans) where known. ``bscan``: a single
    B-scan image (N = 1), whose outputs are 2-D images."""

    image: np.ndarray
    labels: np.ndarray | None
    spacing: tuple[float, float, float] | None = None
    bscan: bool = False
    name: str = ""  # for messages
    geometry: Geometry | None = None  # where a file's voxels lie (predict.py's NIfTI label maps); None for data sets
    meta: ScanMeta = ScanMeta()  # what the file says about the scan (laterality, date, device, B-scan order)
    format: str | None = None  # the reader's format ("dicom", "nifti", ...) of a file read by predict.py


def neighbour_batch(volume: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """volume (N, H, W) on any device -> slices start..stop-1 with their neighbours, (B, 3, H, W), same device
    (the indices of training's ``neighbour_indices``: edge slices repeat themselves)."""
    idx = torch.from_numpy(neighbour_indices(np.arange(start, stop), volume.shape[0]))
    return volume[idx.to(volume.device)]


def predict_volume(predictor: Predictor, volume: torch.Tensor, keep_probs: bool = False) -> Prediction:
    """volume (N, H, W) uint8 on the predictor's device -> labels (N, H, W), the head's detection scores (N, 3) and,
    with ``keep_probs``, the class probabilities (N, C, H, W)."""
    return predictor.predict(lambda a, b: neighbour_batch(volume, a, b), volume.shape[0], keep_probs)


# The segmentation's evidence that a slice holds lesion k: 1 - exp(-f / SEG_AREA), f the share of the slice's
# pixels labelled k (so the score does not depend on the resolution); a lesion over 0.1% of a slice scores 0.63.
# ``combined`` weighs it 3:1 against the head: the segmentation is the stronger evidence (on the demo model's
# validation slices, detection AUC REA/SRF/PED 0.998/1.000/0.954 from the lesion area against 0.969/1.000/0.668 from
# the head), and the head orders the slices where the segmentation finds nothing.
SEG_AREA, HEAD_WEIGHT = 1e-3, 0.25


def detection_scores(labels: torch.Tensor, head: torch.Tensor | None, mode: str, lesions: int = 3) -> torch.Tensor:
    """Per-slice lesion scores (N, lesions) in [0, 1] from the labels (N, H, W) and the head's probabilities."""
    share = torch.stack([(labels == k + 1).flatten(1).float().mean(1) for k in range(lesions)], 1)
    seg = 1 - torch.exp(-share / SEG_AREA)
    if head is None or mode == "seg":
        return seg
    if mode == "head":
        return head.float()
    return (1 - HEAD_WEIGHT) * seg + HEAD_WEIGHT * head.float()


class OctEvaluator(Evaluator):
    """parts: (pid, Dice per lesion (3,), detection labels (N, 3) or None, detection scores (N, 3) or None, any-fluid
    counts per B-scan (N, 3): intersection, predicted, true)."""

    def __init__(self, class_names: tuple[str, ...] = LESION_NAMES) -> None:
        super().__init__()
        self.class_names = class_names

    def update(self, record, sample: Volume, prediction: Prediction) -> dict[str, float]:
        if sample.labels is None:
            raise ValueError(
                f"{record.name}: no labels to evaluate against (no usable label_images/{record.name}_labelMark "
                "folder for this split; a damaged one is named in a warning above); evaluate a labelled split, or "
                "predict with test.py"
            )
        # the truth goes to the prediction's device once: 16 confusion counts and N x 3 fluid counts come back
        truth = torch.from_numpy(np.require(sample.labels, requirements=["W"])).to(prediction.labels.device)
        partial = bool((truth == ANY_LESION).any())  # a reference marking only "fluid": no per-lesion figures
        if partial:
            d = np.full(len(self.class_names), np.nan)
        else:
            d = volume_dice(prediction.labels, truth, len(self.class_names) + 1)
        if prediction.det is None or partial:
            labels = scores = None
        else:
            labels = detection_targets(np.asarray(sample.labels), len(self.class_names))
            scores = prediction.det.float().cpu().numpy()
        fluid = fluid_counts(prediction.labels, truth)
        self.parts.append((record.name, d, labels, scores, fluid))
        if partial:  # the figure such a reference defines
            return {"fluid_dice": fluid_summary(fluid)["fluid_dice"]}
        return {f"dice_{n}": float(v) for n, v in zip(self.class_names, d)}

    def aggregate(self) -> dict[str, float]:
        if not self.parts:
            raise ValueError("no volumes were evaluated")
        per_class, mean = summarize_dice(np.stack([p[1] for p in self.parts]))
        out = {"dice_mean": mean}
        out.update({f"dice_{n}": float(v) for n, v in zip(self.class_names, per_class)})
        with_det = [p for p in self.parts if p[2] is not None]
        if with_det:
            auc = detection_auc(np.concatenate([p[2] for p in with_det]), np.concatenate([p[3] for p in with_det]))
            out["auc_mean"] = float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan")
            out.update({f"auc_{n}": float(v) for n, v in zip(self.class_names, auc)})
        # any fluid (the union of the lesion classes), per B-scan: what a reference marking only "fluid" is scored by
        out.update(fluid_summary(np.concatenate([p[4] for p in self.parts])))
        return out

    def rows(self) -> list[dict]:
        rows = []
        for pid, dice, _, _, fluid in self.parts:
            figures = fluid_summary(fluid)
            rows.append({"pid": pid, **{f"dice_{n}": float(v) for n, v in zip(self.class_names, dice)}})
            rows[-1].update({k: figures[k] for k in ("fluid_dice", "fluid_area_ratio")})
        return rows

    def write(self, out: Path, result: dict) -> list[Path]:
        save_csv_atomic(out / "per_volume.csv", self.rows())
        return [out / "per_volume.csv"]


@register_task
class OctTask(Task):
    name = "oct"
    settings_class = OctSettings  # ``Settings``' own defaults are this task's
    score_key = "dice_mean+auc_mean"  # as the challenge ranked both
    noun = "volumes"
    eval_split = "val"
    int8_tolerances = {"dice_mean": 0.005, "auc_mean": 0.005}  # issue 27: mean Dice and detection AUC
    summary_keys = (
        *(f"{k}_{n}" for k in ("dice", "auc") for n in ("mean", *LESION_NAMES)),
        *("fluid_dice", "fluid_dice_bscan", "fluid_false_bscans", "fluid_area_ratio"),
    )
    detects = True
    input_options = ("cube", "spacing")
    reports = True
    # predict.py's own outputs: the submission folder, the reports (with report/index.html) and the fluid table
    reserved_names = (SUBMISSION_FOLDER, "report", "index", "quantify.csv", OUTPUT_MARKER)
    shipped_checkpoint = SHIPPED_DIR / "oct_unet.pth.tar"

    @classmethod
    def claims(cls, path: Path) -> bool:
        """A volume (a folder, a volume file) or a grey B-scan image without a fundus camera's round field."""
        return bool(looks_like_bscan(path))

    def __init__(self, settings, states=(), weights=None) -> None:
        super().__init__(settings, states, weights)
        if self.any_label is not None:  # references marking only "fluid" define no per-lesion Dice or detection AUC
            self.score_key = "fluid_dice"
        self._cache: VolumeCache | None = None
        self._sizes_warned: set[tuple[int, int]] = set()
        self._warned: set[str] = set()
        for st in self.states:
            rules = (st.get("normalization") or {}).get("grey_rules", [])
            if any(rule != GREY_RULE for rule in rules):
                log.warning(
                    f"the model was trained on 16-bit volumes mapped to 8 bits by {rules}, and this version maps them "
                    f"by {GREY_RULE!r}: such inputs look different to it than in training; retrain, or predict with "
                    "the version it was trained with"
                )
        for st in self.states:
            cal = st.get("calibration") or {}
            if st.get("class_bias") is not None:
                log.info(
                    "calibrated fluid: the checkpoint's background logit offset "
                    f"{st['class_bias'][0]:+.3f} (tools.calibrate on {cal.get('records', '?')} {cal.get('split', '')} "
                    f"cases of {cal.get('data_dir', 'unrecorded data')})"
                )
        if len({tuple(st.get("class_bias") or ()) for st in self.states}) > 1:
            log.warning(
                "the fused checkpoints carry different class offsets (some calibrated, or calibrated apart): each "
                "model's own is applied, but the fusion's fluid is calibrated as none of them was; calibrate the "
                "fusion's members together, or fuse uncalibrated models"
            )
        lesions = len(LESION_NAMES)
        if settings.num_classes != lesions + 1:  # the label greys (and RETOUCH values) name exactly these classes
            raise ValueError(
                f"the oct task segments {lesions + 1} classes (background, {', '.join(LESION_NAMES)}), not "
                f"num_classes {settings.num_classes}: other counts would score or write classes that do not exist"
            )
        if settings.num_detect not in (0, lesions):
            raise ValueError(
                f"the oct task detects {lesions} lesions (or none: num_detect 0), not num_detect {settings.num_detect}"
            )
        if settings.num_detect == 0 and self.own.detection == "head":
            raise ValueError(
                "--detection head, but this model has no detection head (num_detect 0); use --detection seg"
            )

    @property
    def cache(self) -> VolumeCache:
        if self._cache is None:
            self._cache = VolumeCache(self.cache_dir)
        return self._cache

    @staticmethod
    def predictor_options(settings) -> dict:
        # whole slices (the detection head sees the whole slice), resized as in training
        return {"resize": settings.resize_hw}

    @property
    def any_label(self) -> int | None:
        """``ANY_LESION`` where the label map marks a value as fluid of any lesion class (``--label-map 255:fluid``)."""
        return ANY_LESION if ANY_LESION in parse_label_map(self.own.label_map).values() else None

    def records(self, split, data_dir=None, list_dir=None) -> list:
        root = Path(data_dir or self.settings.data_dir)
        layout = self.layout(root)
        if layout == "retouch":
            return find_retouch_volumes(root, split, self.own.val_count, self.own.label_map, list_dir)
        if layout == "bscans":
            if list_dir is not None:
                raise ValueError("-l/--list-dir: the B-scan layout has no list files; its folders name the splits")
            return find_bscan_pairs(root, split, self.own.val_count, self.own.label_map)
        return find_volumes(root, split, list_dir)

    def layout(self, root: Path) -> str:
        """``challenger`` (Edema_*set/ folders), ``retouch`` (case folders with oct.mhd) or ``bscans`` (image/ and
        mask/ folders of single B-scans): the setting, or what the folder holds."""
        if self.own.layout != "auto":
            return self.own.layout
        if root.is_dir() and not any((root / f).is_dir() for f in SPLIT_FOLDERS.values()):
            if is_bscan_pairs(root):
                return "bscans"
            if is_retouch(root):
                return "retouch"
        return "challenger"

    def input_paths(self, records: list[VolumeRecord]) -> list[Path]:
        return [paths[0].parent for r in records for paths in (r.image_paths, r.label_paths) if paths]

    def load(self, record: VolumeRecord) -> Volume:
        image, labels = self.cache.load(record)
        return Volume(image, labels, known_spacing(record.name, image.shape), name=record.name)

    def expand_input(self, path: Path, each_file: bool = False) -> list[Path]:
        """A folder of independent B-scans (``each_file``: ``--bscans``, or names that are not one numbered series)
        stands for its images; anything else for itself."""
        if path.is_dir():
            return independent_bscans(path, force=each_file) or [path]
        return [path]

    def read_input(self, path: Path, cube=None, spacing=None) -> Volume:
        """A single B-scan image (PNG, JPEG, BMP, one-page TIFF: a one-slice volume) or a volume in any format
        ``data.volumes.read_volume`` reads (a slice folder such as ``<PID>.img/``, TIFF, NIfTI, MetaImage, DICOM,
        raw Cirrus ``.img``, vendor files)."""
        if path.is_file() and is_bscan_file(path):
            return Volume(read_bscan(path)[None], None, spacing, bscan=True, name=str(path))
        v = read_volume(path, cube=cube, spacing=spacing)
        return Volume(
            v.image, None, v.spacing, name=str(path), geometry=volume_geometry(v), meta=v.meta, format=v.format
        )

    def check_report(self, path: Path, sample: Volume) -> None:
        if sample.bscan:
            raise ValueError(f"{path}: a single B-scan has no fluid volume to report; leave out --report for B-scans")
        if sample.spacing is None:
            raise ValueError(
                f"{path}: the voxel spacing is unknown (not in the file, and no Cirrus cube size in its name); "
                "fluid volumes need it: pass --spacing DZ DY DX (mm)"
            )

    def check_visits(self, first: tuple[Path, Volume], second: tuple[Path, Volume]) -> None:
        """Two visits of one eye, the earlier first: files of different eyes, or dated the other way round, are
        refused (every change would be the wrong eye's or have the wrong sign)."""
        (p1, a), (p2, b) = first, second
        if a.meta.laterality and b.meta.laterality and a.meta.laterality != b.meta.laterality:
            raise ValueError(
                f"--compare: {p1} is a {a.meta.laterality} scan and {p2} a {b.meta.laterality} one: two visits of one "
                "eye are compared"
            )
        if a.meta.date and b.meta.date and a.meta.date[:19] > b.meta.date[:19]:
            raise ValueError(
                f"--compare: {p1} ({a.meta.date}) was taken after {p2} ({b.meta.date}); give the earlier visit first"
            )

    def input_name(self, path: Path) -> str:
        return volume_name(path)

    def output_names(self, name: str) -> tuple[str, ...]:
        """``<name>`` (the pictures' folder, ``report/<name>.html``, ``segment/<name>_...``) and ``<name>.gif``: a
        volume named ``A.gif`` would put its folder where ``A``'s GIF goes."""
        return name, f"{name}.gif", f"{name}{LABEL_SUFFIX}"

    def normalization(self, records: list[VolumeRecord]) -> dict[str, list[float]]:
        every = max(1, len(records) // 10)
        progress = Progress(len(records), "decoding and normalisation", log, every=every, seconds=30, unit="volume")
        try:
            stats = compute_normalization(records, self.cache, on_volume=progress.update)
        finally:
            progress.close()
        rules = sorted({r.image_key for r in records} - {""})  # how volume files became 8-bit (data.volumes)
        stats = {**stats, "pixel_scale": training_pixel_scale(records, self.cache)}
        return {**stats, "grey_rules": rules} if rules else stats

    # B-scans whose rows differ from every training size by more than this are another scanner's or another depth
    # range's: the layers and fluid the model learned appear at another scale in pixels.
    SIZE_TOLERANCE = 0.1

    def _check_size(self, hw: tuple[int, int]) -> None:
        """Warn once per size when B-scans differ from the slices the models were trained on (without --resize,
        B-scans are predicted at their own size): a Cirrus model on 496-row Spectralis scans sees every structure
        at twice the scale and can miss or invent fluid without any error. With ``--scale`` other than none the
        B-scans are resampled to the training pixel scale instead (``scale_factors``)."""
        if self.settings.resize_hw is not None or not self.states:
            return
        if self.own.scale != "none" and self.train_scale is not None:  # resampled to the training scale instead
            return
        hw = (int(hw[0]), int(hw[1]))
        warned = self._sizes_warned
        trained = {tuple(s) for st in self.states for s in (st.get("normalization") or {}).get("slice_sizes", [])}
        if not trained or hw in warned or hw in trained:
            return
        if all(
            abs(hw[0] / h - 1) > self.SIZE_TOLERANCE or abs(hw[1] / w - 1) > self.SIZE_TOLERANCE for h, w in trained
        ):
            warned.add(hw)
            sizes = ", ".join(f"{h}x{w}" for h, w in sorted(trained))
            log.warning(
                f"B-scans of {hw[0]}x{hw[1]} pixels, but the model was trained on {sizes}: other scanners or scan "
                "settings show layers and fluid at another pixel scale, and the segmentation may be wrong without "
                "an error; resample the volumes to the training size, or train on this kind of scan"
            )

    def applied_options(self) -> dict[str, Any]:
        """The task's inference settings and, for calibrated checkpoints, their class offsets (``tools.calibrate``)."""
        out = super().applied_options()
        if any(st.get("class_bias") is not None for st in self.states):
            out["class_bias"] = [st.get("class_bias") for st in self.states]
        return out

    def train_dataset(self, records, augment) -> SliceDataset:
        return SliceDataset(records, self.cache, augment, seed=self.settings.seed, lone=self.own.lone_bscans)

    def predict(self, predictor: Predictor, sample: Volume) -> Prediction:
        p, native = self._predict_at_training_scale(predictor, sample)
        labels = native(p.labels)
        return Prediction(labels, detection_scores(labels, p.det, self.own.detection))

    def fluid_margin(self, predictor: Predictor, sample: Volume) -> torch.Tensor:
        """(N, H, W) float32 at the input's own size: per pixel, log(P(most likely lesion) / P(background)) with the
        checkpoint's class offsets, the margin the labels' fluid decision thresholds at 0 (a further background
        offset b moves it to b: ``tools.calibrate`` finds b from these). Keeps every class probability of the
        volume at the model's scale: for B-scans and small volumes."""
        p, native = self._predict_at_training_scale(predictor, sample, keep_probs=True)
        logp = p.probs.clamp_min(1e-30).log()
        return native(logp[:, 1:].amax(1) - logp[:, 0])

    def _predict_at_training_scale(self, predictor: Predictor, sample: Volume, keep_probs: bool = False):
        """(the predictor's output for ``sample`` brought to the training pixel scale, a function taking a map of
        that output back to the input's own size: nearest, so labels stay labels)."""
        self._check_size(sample.image.shape[1:])
        fy, fx = self.scale_factors(sample)
        check_resample(sample, fy, fx, self.MAX_FACTOR)
        # the volume crosses the bus once, as uint8; neighbours are stacked and normalised on the device
        volume = predictor.upload(np.asarray(sample.image))
        if (fy, fx) != (1.0, 1.0):  # to the training pixel scale, and the labels back to the input's own size
            volume = resample(volume, scaled_size(*volume.shape[1:], fy, fx), "bilinear")
        p = predict_volume(predictor, volume, keep_probs)

        def native(x: torch.Tensor) -> torch.Tensor:
            return x if (fy, fx) == (1.0, 1.0) else resample(x, sample.image.shape[1:], "nearest")

        return p, native

    # B-scans within this factor of the training pixel scale are predicted as they are: eyes differ by about as much
    # in retinal thickness (the estimate's cue), so resampling closer would add blur, not accuracy
    SCALE_TOLERANCE = 1.15
    # B-scans span 250-1100 rows and 256-1024 columns at 1.6-4 um per row: no two devices differ by more than this
    # (a spacing typed in the wrong unit, or an image that is no B-scan, does)
    MAX_FACTOR = 8.0

    @cached_property
    def train_scale(self) -> dict | None:
        """The checkpoints' training pixel scale (``training_pixel_scale``), weighted over a fusion; None where a
        checkpoint predates it."""
        scales = [(st.get("normalization") or {}).get("pixel_scale") for st in self.states]
        if not scales or any(s is None for s in scales):
            return None
        out = {}
        for key in ("estimated_um", "known_um"):
            values = [s.get(key) for s in scales]
            known = all(v is not None for v in values)
            out[key] = np.average(np.array(values), axis=0, weights=self.weights).tolist() if known else None
        return out

    def scale_factors(self, sample: Volume) -> tuple[float, float]:
        """(rows, columns) resize factors that bring ``sample`` to the training pixel scale (``--scale``): a factor
        as given; ``auto``: the input's spacing over the training one, from the files' spacing where both are
        known (file header, Cirrus cube name, ``--spacing``), else from ``data.retina.estimate_spacing`` on both
        sides; 1 within ``SCALE_TOLERANCE``, and 1 with a warning where no scale is known."""
        scale = self.own.scale
        if scale == "none" or not self.states:
            return 1.0, 1.0
        if scale != "auto":
            return float(scale), float(scale)
        train = self.train_scale
        if train is None or train["estimated_um"] is None:
            self._warn_once(
                "no-train-scale",
                "the checkpoint records no training pixel scale (it predates it, or no training B-scan showed a "
                "retina): B-scans are predicted at their own size, as with --scale none",
            )
            return 1.0, 1.0
        if sample.spacing is not None and train["known_um"] is not None:
            axial, lateral = sample.spacing[1] * 1000, sample.spacing[2] * 1000
            ref, basis = train["known_um"], "the file's spacing"
        else:
            try:
                est = estimate_spacing(spread_bscans(np.asarray(sample.image)))
            except ValueError as e:
                log.warning(f"{sample.name}: {e}; predicted at its own size (give --scale FACTOR)")
                return 1.0, 1.0
            axial, lateral, ref, basis = est.axial_um, est.lateral_um, train["estimated_um"], est.explain()
        fy, fx = axial / ref[0], lateral / ref[1]
        if max(fy, 1 / fy, fx, 1 / fx) <= self.SCALE_TOLERANCE:
            return 1.0, 1.0
        if max(fy, 1 / fy, fx, 1 / fx) > self.MAX_FACTOR and basis != "the file's spacing":
            log.warning(
                f"{sample.name}: {basis}, {fy:.2f} x {fx:.2f} the model's scale: beyond what any device differs by "
                f"(x{self.MAX_FACTOR:g}), so not believed; predicted at its own size (give --scale FACTOR)"
            )
            return 1.0, 1.0
        log.info(
            f"{sample.name}: {axial:.2f} x {lateral:.2f} um per pixel ({basis}); resampled by {fy:.2f} x {fx:.2f} "
            f"to the model's {ref[0]:.2f} x {ref[1]:.2f}"
        )
        return fy, fx

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def evaluator(self) -> OctEvaluator:
        return OctEvaluator()

    def save_pictures(self, folder: Path, name: str, sample: Volume, prediction: Prediction) -> list[Path]:
        truth = None if sample.labels is None else np.asarray(sample.labels)
        if sample.bscan:  # ``<name>.png``: the B-scan beside its overlay
            pic = panel(sample.image[0], prediction.labels[0].cpu().numpy(), None if truth is None else truth[0])
            folder.mkdir(parents=True, exist_ok=True)
            return [save_image_atomic(folder / f"{name}.png", pic)]
        return [save_volume_pictures(folder, name, np.asarray(sample.image), prediction.labels.cpu().numpy(), truth)]

    def write_prediction(
        self, folder: Path, name: str, prediction: Prediction, seg: bool, det: bool, sample: Volume | None = None
    ) -> list[Path]:
        """``segment/<PID>_labelMark_volumes.npy`` (uint8 N x H x W classes) and ``..._detections.npy`` (float32
        N x 3 probabilities of REA, SRF, PED), the challenge's submission files, and for a volume read from a file
        or folder (predict.py) ``segment/<name>_labels.nii.gz``, the classes in the input's geometry; for a single
        B-scan ``segment/<name>_labels.png`` (its own size, class indices 0-3 as in the submission files) and
        ``segment/<name>_detections.npy`` (1 x 3)."""
        sub = folder / SUBMISSION_FOLDER
        sub.mkdir(exist_ok=True)
        written = []
        if seg and sample is not None and sample.bscan:
            labels = prediction.labels[0].cpu().numpy().astype(np.uint8)
            written.append(save_image_atomic(sub / f"{name}_labels.png", labels))
            seg = False
        if det and sample is not None and sample.bscan:
            written.append(sub / f"{name}_detections.npy")
            save_npy_atomic(written[-1], prediction.det.float().cpu().numpy().astype(np.float32))
            det = False
        if seg:
            labels = prediction.labels.cpu().numpy().astype(np.uint8)
            written.append(sub / f"{name}_labelMark_volumes.npy")
            save_npy_atomic(written[-1], labels)
        if det:
            written.append(sub / f"{name}_labelMark_detections.npy")
            save_npy_atomic(written[-1], prediction.det.float().cpu().numpy().astype(np.float32))
        if seg and sample is not None and sample.geometry is not None:
            if sample.geometry.source == "unit":
                log.warning(
                    f"{sample.name}: no voxel spacing known; {name}_labels.nii.gz has 1 mm voxels (pass --spacing)"
                )
            written.append(write_label_nifti(sub / f"{name}_labels.nii.gz", labels, sample.geometry))
        if seg and sample is not None and sample.format == "dicom":
            from data.dicom_seg import write_dicom_seg  # highdicom: imported only for DICOM inputs

            seg_file = write_dicom_seg(
                sub / f"{name}_seg.dcm", labels, Path(sample.name), LESION_NAMES, "retina-lesion " + self.name, VERSION
            )
            written += [] if seg_file is None else [seg_file]
        return written

    def write_summary(
        self, folder: Path, name: str, sample: Volume, prediction: Prediction, quant: dict, model: dict
    ) -> Path:
        """``segment/<name>_summary.json``: what one input holds, machine-readable: the input (path, format, shape,
        spacing, what the file says about the scan), the model (``model``: checkpoints with their SHA-256, toolkit
        version), the fluid volumes and affected B-scans, the detection score of each lesion per B-scan, the ETDRS
        grid (fovea, sectors with fluid and thickness, CST) or why there is none."""
        det = prediction.det.float().cpu().numpy()
        grid = quant.get("etdrs")
        thickness = quant.get("thickness_um")
        summary = {
            "name": name,
            "input": {
                "path": sample.name,
                "format": "bscan" if sample.bscan else sample.format,
                "shape": list(np.shape(sample.image)[1:] if sample.bscan else np.shape(sample.image)),
                "spacing_mm": quant["spacing"],
                "geometry": None if sample.geometry is None else sample.geometry.source,
                "scan": quant.get("scan"),
            },
            "model": model,
            "lesions": list(LESION_NAMES),
            "volume_nl": quant["volume_nl"],
            "voxels": quant["voxels"],
            "affected_bscans": quant["affected_bscans"],
            "detection": {"per_bscan": np.round(det.astype(np.float64), 4).tolist(), "mode": self.own.detection},
            "thickness": None
            if thickness is None
            else {
                "mean_um": _finite_mean(thickness),
                "measured": round(float(np.isfinite(thickness).mean()), 4),
                "cst_um": grid["cst_um"],
            },
            "etdrs": grid,
            "etdrs_note": quant.get("etdrs_note", ""),
        }
        sub = folder / SUBMISSION_FOLDER
        sub.mkdir(exist_ok=True)
        save_json_atomic(sub / f"{name}_summary.json", summary)
        return sub / f"{name}_summary.json"

    def quantify(self, sample: Volume, prediction: Prediction) -> dict:
        """Fluid volumes (nL), affected B-scans and en-face maps of the predicted lesions (``metrics.quantify``), and
        for a volume with a known spacing the retina's thickness map (``thickness_um`` (Z, W) um, from
        ``data.retina``'s boundaries) and the ETDRS grid (``etdrs``: fovea, sectors, CST); else both None and
        ``etdrs_note`` says why. ``scan``: what the file says about the scan."""
        labels = prediction.labels.cpu().numpy()
        quant = quantify(labels, sample.spacing, LESION_NAMES)
        quant.update(scan=asdict(sample.meta), thickness_um=None, etdrs=None, etdrs_note="")
        if sample.bscan or labels.shape[0] < 3:
            quant["etdrs_note"] = "a single B-scan (or under 3): no en-face grid"
        elif sample.spacing is None:
            quant["etdrs_note"] = "the voxel spacing is unknown: no grid, no thickness in um (pass --spacing)"
        else:
            found = find_volume_boundaries(np.asarray(sample.image))
            surfaces = {k: np.stack([getattr(b, k) for b in found]) for k in ("ilm", "bruch", "valid")}
            thickness = thickness_map(surfaces["ilm"], surfaces["bruch"], surfaces["valid"], sample.spacing[1])
            meta = sample.meta
            quant["thickness_um"] = thickness
            quant["etdrs"] = etdrs(
                labels, thickness, sample.spacing, LESION_NAMES, meta.laterality, meta.bscan_order, meta.ascan_order
            )
        return quant

    def write_report(
        self, folder: Path, name: str, sample: Volume, prediction: Prediction, quant: dict, model: dict | None = None
    ) -> Path:
        det = None if prediction.det is None else prediction.det.float().cpu().numpy()
        labels = prediction.labels.cpu().numpy().astype(np.uint8)
        folder.mkdir(exist_ok=True)
        return write_patient_report(
            folder / f"{name}.html", name, np.asarray(sample.image), labels, det, quant, model=model
        )

    def finish_submission(self, folder: Path) -> list[Path]:
        return [zip_folder(folder / SUBMISSION_FOLDER, folder / "submission.zip")]


def _finite_mean(values: np.ndarray) -> float | None:
    finite = np.isfinite(values)
    return float(values[finite].mean()) if finite.any() else None


# ------------------------------------------------------------------------------------------------- pixel scale
def spread_bscans(volume: np.ndarray, count: int = 5) -> np.ndarray:
    """Up to ``count`` B-scans spread over the volume (Z, H, W) away from its edges: what the scale is estimated on."""
    z = volume.shape[0]
    idx = np.unique(np.round(np.linspace(0, z - 1, count + 2)[1:-1]).astype(int)) if z > count else np.arange(z)
    return volume[idx]


def known_spacing(name: str, shape: tuple[int, ...]) -> tuple[float, float, float] | None:
    """The spacing a volume's name gives (a Cirrus cube), without a note when it gives none."""
    return cirrus_spacing(name, tuple(shape), explain=False) if len(shape) == 3 else None


def training_pixel_scale(records: list, cache: VolumeCache, count: int = 24) -> dict | None:
    """The training data's pixel scale in um (axial, lateral): ``estimated_um``, the median of
    ``data.retina.estimate_spacing`` over up to ``count`` volumes, and ``known_um``, the median of their files'
    spacing where every one of those volumes has one (else None). Inference compares like with like
    (``OctTask.scale_factors``). None where no training B-scan shows a retina."""
    chosen = [records[i] for i in np.unique(np.linspace(0, len(records) - 1, min(count, len(records))).astype(int))]
    estimated, known = [], []
    for rec in chosen:
        image, _ = cache.load(rec)
        try:
            est = estimate_spacing(spread_bscans(np.asarray(image)))
            estimated.append((est.axial_um, est.lateral_um))
        except ValueError:
            continue
        spacing = known_spacing(rec.name, image.shape)
        known.append(None if spacing is None else (spacing[1] * 1000, spacing[2] * 1000))
    if not estimated:
        log.warning("no training B-scan shows a retina the scale estimate finds: --scale auto will not resample")
        return None
    every_known = all(k is not None for k in known)
    return {
        "estimated_um": np.median(np.array(estimated), axis=0).tolist(),
        "known_um": np.median(np.array(known), axis=0).tolist() if every_known else None,
    }


def check_resample(sample: Volume, fy: float, fx: float, most: float) -> None:
    """Refuse a resampling no device difference explains (a spacing in the wrong unit, ``--scale 100``): it would
    blow a B-scan up past memory or shrink it to a few pixels whose labels say nothing."""
    if (fy, fx) == (1.0, 1.0):
        return
    h, w = sample.image.shape[1:]
    th, tw = scaled_size(h, w, fy, fx)
    if max(fy, 1 / fy, fx, 1 / fx) > most or min(th, tw) < 16:
        raise ValueError(
            f"{sample.name}: resampling {h}x{w} B-scans by {fy:.3g} x {fx:.3g} (to {th}x{tw}) to the model's pixel "
            f"scale is beyond any device (at most x{most:g}): check --spacing (mm) or --scale"
        )


def resample(volume: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(N, H, W) uint8 (or integer labels, or float maps) -> (N, *size), same dtype: bilinear (antialiased when
    shrinking) for B-scans, nearest for labels and maps; one B-scan at a time, so a large volume needs no float copy
    of itself."""
    size = (int(size[0]), int(size[1]))
    out = torch.empty((volume.shape[0], *size), dtype=volume.dtype, device=volume.device)
    for z in range(volume.shape[0]):
        x = volume[z][None, None].float()
        if mode == "nearest":
            out[z] = F.interpolate(x, size=size, mode="nearest-exact")[0, 0].to(volume.dtype)
        else:
            y = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
            out[z] = y[0, 0].round().clamp(0, 255).to(volume.dtype)
    return out


# ---------------------------------------------------------------------------------------------------- pictures
def overlay(image: np.ndarray, classes: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """(H, W) uint8 grey + (H, W) class indices -> (H, W, 3) uint8 with lesions tinted by class."""
    rgb = np.repeat(image[..., None].astype(np.float32), 3, axis=2)
    mask = classes > 0
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * CLASS_COLOURS[classes[mask]]
    return rgb.clip(0, 255).astype(np.uint8)


def panel(image: np.ndarray, pred: np.ndarray, truth: np.ndarray | None) -> np.ndarray:
    """image | prediction | ground truth side by side (ground truth left out when unknown)."""
    parts = [np.repeat(image[..., None], 3, axis=2), overlay(image, pred)]
    if truth is not None:
        parts.append(overlay(image, truth))
    sep = np.full((image.shape[0], 4, 3), 255, np.uint8)
    out = [parts[0]]
    for p in parts[1:]:
        out += [sep, p]
    return np.concatenate(out, axis=1)


def save_volume_pictures(
    out_dir: Path, pid: str, volume: np.ndarray, pred: np.ndarray, truth: np.ndarray | None, gif_shrink: int = 2
) -> Path:
    """Writes ``out_dir/<pid>/<z>.png`` for every slice and ``out_dir/<pid>.gif`` (frames ``gif_shrink`` times
    smaller, every lesion kept: ``gif_frame``); returns the GIF path."""
    folder = out_dir / pid
    folder.mkdir(parents=True, exist_ok=True)
    palette = Image.new("P", (1, 1))
    palette.putpalette(gif_palette())
    palette.load()  # the palette applied once, here: the threads below only read it

    def one(z: int) -> Image.Image:
        image, p, t = np.asarray(volume[z]), np.asarray(pred[z]), None if truth is None else np.asarray(truth[z])
        # PNG level 1: a speckled B-scan barely compresses further (680 against 617 KB at level 6 for a 1024 x 512
        # panel), and level 6 took 0.23 s a slice to level 1's 0.13 s: most of predict.py's time on a cube
        save_image_atomic(folder / f"{z + 1}.png", panel(image, p, t), compress_level=1)
        return gif_frame(image, p, t, gif_shrink, palette)

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # PIL's encoders release the GIL
        frames = list(pool.map(one, range(volume.shape[0])))
    return save_image_atomic(
        out_dir / f"{pid}.gif", frames[0], save_all=True, append_images=frames[1:], duration=120, loop=0
    )


# GIF frames hold 256 colours. Quantised one by one (an adaptive palette per frame) and shrunk by interpolation, the
# overlay lost small lesions: a few tinted pixels get no colour of their own, and a lesion of a pixel or two blends
# into the grey around it. So every frame shares one palette made for the overlay (grey levels, and each lesion
# colour blended over grey levels as ``overlay`` blends it), and frames are shrunk by whole blocks with the labels
# max-pooled: a block holding a lesion pixel is drawn as lesion.
GIF_GREYS, GIF_TINTS = 128, 42  # 128 + 3 x 42 = 254 colours


def gif_palette() -> list[int]:
    """The shared GIF palette: 768 values (R, G, B per entry)."""
    greys = np.linspace(0, 255, GIF_GREYS)[:, None]
    levels = np.linspace(0, 255, GIF_TINTS)[:, None]
    entries = [np.repeat(greys, 3, axis=1)]
    entries += [(1 - OVERLAY_ALPHA) * levels + OVERLAY_ALPHA * colour[None] for colour in CLASS_COLOURS[1:]]
    pal = np.concatenate(entries).round().clip(0, 255).astype(np.uint8).reshape(-1)
    return pal.tolist() + [0] * (768 - pal.size)


def gif_frame(
    image: np.ndarray, pred: np.ndarray, truth: np.ndarray | None, shrink: int, palette: Image.Image
) -> Image.Image:
    """One GIF frame: the panel at 1 / ``shrink`` of the size (rounded up: the last rows and columns are padded, not
    dropped), the grey averaged and the labels max-pooled over the same blocks (where lesions of two classes share a
    block, the higher class index shows), in the shared ``palette``."""
    if shrink > 1:
        pad = [(0, -n % shrink) for n in image.shape]
        image = np.asarray(Image.fromarray(np.pad(image, pad, mode="edge")).reduce(shrink))
        h, w = image.shape

        def pool(labels: np.ndarray) -> np.ndarray:
            return np.pad(labels, pad).reshape(h, shrink, w, shrink).max(axis=(1, 3))

        pred, truth = pool(pred), None if truth is None else pool(truth)
    pic = Image.fromarray(panel(image, pred, truth))
    return pic.quantize(palette=palette, dither=Image.Dither.NONE)


# ---------------------------------------------------------------------------------------------------- Python API
@dataclass
class FluidResult:
    """What ``FluidSegmenter.predict`` returns, as NumPy arrays at the input's own size."""

    labels: np.ndarray  # (N, H, W) uint8 class indices (0 background, 1 REA, 2 SRF, 3 PED); (H, W) for one B-scan
    detection: np.ndarray  # (N, 3) float32 per-B-scan lesion scores, as test.py writes them (``--detection``)
    quantities: dict  # metrics.quantify: voxels, volume_nl (None without a spacing), affected B-scans, en-face maps


class FluidSegmenter:
    """OCT fluid segmentation from Python with a checkpoint, by default the shipped one (docs/OCT_MODEL_CARD.md),
    exactly as predict.py does it (scale, calibration, detection score).

    >>> seg = FluidSegmenter.from_checkpoint()  # checkpoints/oct_unet.pth.tar
    >>> out = seg.predict(bscan)  # (H, W) or (N, H, W) uint8; spacing=(dz, dy, dx) in mm for volumes in nL
    >>> out.labels, out.detection, out.quantities["volume_nl"]
    >>> out = seg.predict_file("P0001.img")  # any file or folder predict.py reads
    """

    def __init__(self, predictor: Predictor, task: OctTask) -> None:
        self.predictor = predictor
        self.task = task
        self.count = 0  # inputs predicted: the default name of the next one is "volume <count + 1>"

    @classmethod
    def from_checkpoint(
        cls, paths=None, device=None, weights=None, scale=None, detection=None, **predictor_kwargs
    ) -> FluidSegmenter:
        """One checkpoint (default: the shipped OCT model), or several fused (``weights``: one per checkpoint);
        ``scale``: ``auto``, ``none`` or a factor; ``detection``: ``combined``, ``seg`` or ``head`` (the
        checkpoint's setting when not given); ``predictor_kwargs`` go to ``Predictor`` (``tta_flip``, ``amp``, ...)."""
        from tasks import load_predictor
        from utils.checkpoint import checked_class_bias, load_checkpoint
        from utils.config import Settings, scale_value

        if paths is None:
            paths = OctTask.shipped_checkpoint
            if not paths.is_file():
                raise FileNotFoundError(f"{paths}: the shipped OCT model is missing; give a checkpoint")
        paths = [str(paths)] if isinstance(paths, (str, Path)) else [str(p) for p in paths]
        overrides = {k: v for k, v in (("scale", scale), ("detection", detection)) if v is not None}
        if "scale" in overrides:
            overrides["scale"] = scale_value(overrides["scale"])  # checked before any checkpoint is read
        states = [load_checkpoint(p) for p in paths]
        settings = Settings.from_dict(states[0]["settings"], source=paths[0])
        if settings.task != OctTask.name:
            raise ValueError(f"{paths[0]}: a checkpoint of task {settings.task!r}, not 'oct'")
        for p, st in zip(paths, states):  # checked before the task logs it
            checked_class_bias(st.get("class_bias"), settings.num_classes, p)
        task = OctTask(settings.with_task(**overrides), states=states, weights=weights)
        return cls(load_predictor(paths, weights, device=device, **predictor_kwargs), task)

    def predict(self, image: np.ndarray, spacing=None, name: str | None = None) -> FluidResult:
        """image (H, W) (one B-scan) or (N, H, W) (a volume, B-scans in order) uint8 -> ``FluidResult``; ``spacing``
        (between B-scans, along depth, between A-scans) in mm, where known, gives volumes in nL and, with ``--scale
        auto``, the resampling to the model's pixel scale. Messages call the input ``name`` (default "volume N")."""
        self.count += 1
        name = name or f"volume {self.count}"
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or 0 in image.shape:
            raise ValueError(f"{name}: expected (H, W) or (N, H, W) uint8 B-scans, got {image.dtype} {image.shape}")
        bscan = image.ndim == 2
        if spacing is not None:  # as predict.py checks --spacing: 3 positive numbers in mm, an extent an eye can have
            if bscan:
                raise ValueError(f"{name}: a single B-scan has no fluid volume; give a spacing with a volume")
            spacing = check_spacing(spacing)
            check_extent(name, spacing, image.shape)
        sample = Volume(np.ascontiguousarray(image[None] if bscan else image), None, spacing, bscan, name)
        return self._result(sample)

    def predict_file(self, path, spacing=None, cube=None) -> FluidResult:
        """A B-scan image, a slice folder or a volume file, read as predict.py reads it (``spacing`` and ``cube`` as
        its ``--spacing`` and ``--cube``)."""
        return self._result(self.task.read_input(Path(path), cube=cube, spacing=spacing))

    def _result(self, sample: Volume) -> FluidResult:
        p = self.task.predict(self.predictor, sample)
        labels = p.labels.cpu().numpy()
        quant = self.task.quantify(sample, p)
        return FluidResult(labels[0] if sample.bscan else labels, p.det.float().cpu().numpy(), quant)
