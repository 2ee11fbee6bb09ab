"""Fundus vessels: 2-class segmentation of retinal blood vessels in colour fundus photographs (DRIVE and a generic
paired layout), scored on the field-of-view pixels of all photos pooled, as published.

The last ``--val-count`` training photos validate: they pick the best checkpoint (F1) and the probability threshold
(the F1-best one), which the checkpoint carries; test photos are never used for either.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from data.bscans import looks_like_fundus
from data.common import DatasetError
from data.dataset import PhotoPatchDataset
from data.photos import (
    Photo,
    PhotoRecord,
    VesselSettings,
    fov_diameter,
    fov_from_photo,
    load_photo,
    network_input,
    photo_normalization,
    read_rgb,
    split_photos,
)
from inference.predictor import Predictor, resample_probabilities
from metrics import best_f1_threshold, binary_metrics, curves
from tasks import load_predictor, register_task
from tasks.base import SHIPPED_DIR, Evaluator, Task, scaled_size
from utils.config import scale_value
from utils.io import save_csv_atomic, save_image_atomic

log = logging.getLogger(__name__)
VESSEL_COLOUR = np.array([255, 40, 40], dtype=np.float32)
MAX_PIXELS = 2**28  # a photo resized beyond this (16384 x 16384) ran out of memory with a traceback: refused
SUMMARY = ("auc_roc", "auc_pr", "f1", "iou", "accuracy", "sensitivity", "specificity", "threshold")


@dataclass
class VesselPrediction:
    prob: np.ndarray  # (H, W) float32 vessel probability
    mask: np.ndarray | None  # (H, W) bool at the checkpoint's threshold, inside the field of view; None without one


class VesselEvaluator(Evaluator):
    """parts: (name, probabilities of the FOV pixels, their labels). Scores at ``threshold``, or at the F1-best
    threshold of the pooled pixels when it is None (validation during training)."""

    def __init__(self, threshold: float | None = None) -> None:
        super().__init__()
        self.threshold = threshold

    def update(self, record, sample: Photo, prediction: VesselPrediction) -> dict[str, float]:
        if sample.label is None:
            raise ValueError(f"{record.image}: no label to evaluate against")
        self.parts.append((record.name, prediction.prob[sample.fov].astype(np.float32), sample.label[sample.fov]))
        return {}

    def _pooled(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.parts:
            raise ValueError("no photos were evaluated")
        return np.concatenate([p[2] for p in self.parts]), np.concatenate([p[1] for p in self.parts])

    def aggregate(self) -> dict[str, float]:
        labels, scores = self._pooled()
        threshold = best_f1_threshold(labels, scores) if self.threshold is None else self.threshold
        return binary_metrics(labels, scores, threshold)

    def write(self, out: Path, result: dict) -> list[Path]:
        """``per_image.csv`` and ROC / PR curves (``roc.png``, ``pr.png``)."""
        rows = [{"name": n, **binary_metrics(y, p, result["threshold"])} for n, p, y in self.parts]
        save_csv_atomic(out / "per_image.csv", rows)
        labels, scores = self._pooled()
        return [out / "per_image.csv", *plot_curves(curves(labels, scores), result["auc_roc"], result["auc_pr"], out)]


@register_task
class VesselTask(Task):
    name = "vessel"
    names_are_ids = False  # train/image/1.png and test/image/1.png are different photos
    settings_class = VesselSettings
    score_key = "f1"
    noun = "photos"
    eval_split = "test"
    state_keys = ("threshold",)
    int8_tolerances = {"auc_roc": 0.002, "f1": 0.005}  # issue 27: DRIVE's AUC-ROC and F1
    summary_keys = SUMMARY
    KEEP = 32
    shipped_checkpoint = SHIPPED_DIR / "drive_unet.pth.tar"  # DRIVE vessels (docs: README "Vessels")

    @classmethod
    def claims(cls, path: Path) -> bool:
        """A fundus photo: a round field of view, or the fundus's colours (``data.bscans.looks_like_fundus``)."""
        return path.is_file() and looks_like_fundus(path)

    def __init__(self, settings, states=(), weights=None) -> None:
        super().__init__(settings, states, weights)
        self.scale = self.own.scale  # how photos are brought to the training pixel scale
        # fused checkpoints: their thresholds averaged with the fusion weights; none (training): chosen on validation
        thresholds = [float(s.get("threshold", 0.5)) for s in self.states]
        self.threshold = float(np.average(thresholds, weights=self.weights)) if thresholds else None
        trained = {(s.get("settings") or {}).get("task_settings", {}).get("preprocess", "rgb") for s in self.states}
        if len(trained) > 1:
            raise ValueError(
                f"the fused checkpoints were trained on differently preprocessed photos "
                f"({', '.join(sorted(trained))}): each would see the photos the first one's way; fuse checkpoints of "
                "one --preprocess"
            )
        if trained and self.own.preprocess not in trained:
            raise ValueError(
                f"--preprocess {self.own.preprocess}, but the checkpoint was trained on {trained.pop()} photos: the "
                "network would see photos unlike its training ones; leave --preprocess out"
            )
        self._photos: OrderedDict[Path, Photo] = OrderedDict()  # the last few decoded photos
        self._warned: set[tuple[str, str]] = set()  # (photo, what): each warning once per photo (validation repeats)
        # the training photos' field-of-view diameter (pixels), which ``--scale auto`` brings every photo to
        diameters = [(s.get("normalization") or {}).get("fov_diameter") for s in self.states]
        known = [(d, w) for d, w in zip(diameters, self.weights) if d]
        self.train_diameter = float(np.average([d for d, _ in known], weights=[w for _, w in known])) if known else None
        if self.states and self.train_diameter is None and self.scale == "auto":
            log.warning(
                "the checkpoint records no training pixel scale (it predates it, or no training photo had a "
                "field-of-view border): photos are predicted at their "
                "native size, as with --scale none; give --scale FACTOR for photos of another camera"
            )

    @staticmethod
    def predictor_options(settings) -> dict:
        # as validation picked the threshold: photos resized as in training (--resize), in windows of the training
        # patch size (probabilities go back to the native size)
        return {"resize": settings.resize_hw, "window": settings.crop_size or None}

    def records(self, split, data_dir=None, list_dir=None) -> list[PhotoRecord]:
        return split_photos(data_dir or self.settings.data_dir, split, self.own.val_count)

    def input_paths(self, records: list[PhotoRecord]) -> list[Path]:
        return [p for r in records for p in (r.image, r.label, r.fov) if p is not None]

    def load(self, record: PhotoRecord) -> Photo:
        """Decoded photos are kept (up to ``KEEP``: validation decodes its photos once, eval of a large set streams)."""
        if record.image in self._photos:
            self._photos.move_to_end(record.image)
        else:
            self._photos[record.image] = load_photo(record)
            if len(self._photos) > self.KEEP:
                self._photos.popitem(last=False)
        return self._photos[record.image]

    def predicted_classes(self, prediction: VesselPrediction) -> np.ndarray:
        return prediction.mask if prediction.mask is not None else prediction.prob >= 0.5

    def read_input(self, path: Path) -> Photo:
        if path.is_dir():
            raise DatasetError(f"{path}: a folder; a vessel checkpoint predicts photographs (image files)")
        rgb = read_rgb(path)
        return Photo(path.stem, rgb, None, fov_from_photo(rgb), path)

    def normalization(self, records) -> dict[str, list[float]]:
        return photo_normalization([self._seen(self.load(r)) for r in records])

    def _seen(self, photo: Photo) -> Photo:
        """The photo as the network sees it (``--preprocess``); its pictures and checks keep the photo itself."""
        return dataclasses.replace(photo, rgb=network_input(photo.rgb, self.own.preprocess))

    def train_dataset(self, records, augment) -> PhotoPatchDataset:
        s = self.settings
        samples = (s.steps_per_epoch or 100) * s.batch_size if s.crop_size else None
        # patches where the rotated patch stays inside the photo: the photo's edges are the dark surround of the
        # field of view, whose ignored pixels would fill a third of every tiled patch (OCT tiles the slice instead)
        if augment.jpeg and self.own.preprocess != "rgb":
            # the patches are already the green channel or CLAHE's output: their JPEG round trip would not be a
            # publisher's copy of the photo (whose 4:2:0 chroma leaks into green and whose blocks CLAHE amplifies)
            raise ValueError(
                f"--random-jpeg with --preprocess {self.own.preprocess}: the round trip would compress the "
                f"preprocessed patches, not the colour photo a publisher compresses; use one or the other"
            )
        augment = dataclasses.replace(augment, placement="inside", colour=True)  # JPEG round trips as colour photos
        return PhotoPatchDataset([self._seen(self.load(r)) for r in records], augment, samples, seed=s.seed)

    def scale_factor(self, sample: Photo) -> float:
        """How much ``sample`` is resized before the model sees it: ``--scale auto`` brings its field of view to the
        training photos' diameter (within 5% of it, a photo is left as it is), ``none`` is 1, a number is itself."""
        if self.scale == "none":
            return 1.0
        if self.scale != "auto":
            return float(self.scale)
        if self.train_diameter is None:
            return 1.0
        if sample.fov.all():  # no dark border: the frame is a crop, and its size says nothing of the pixel scale
            self._warn_once(
                sample,
                "unscaled",
                "no field-of-view border found (a crop inside the fundus?), so --scale auto cannot measure the pixel "
                "scale: predicted as it is; give --scale FACTOR if it differs from the training photos'",
            )
            return 1.0
        factor = self.train_diameter / fov_diameter(sample.fov)
        return 1.0 if abs(factor - 1) < 0.05 else factor

    def check_photo(self, sample: Photo, factor: float) -> None:
        """What would give a wrong mask without an error, said before the model runs on a checkpoint's behalf
        (training validation predicts its own photos): a photo smaller than the training patch, at its own size or
        resized by ``factor``, or larger than ``MAX_PIXELS`` resized, is refused (``ValueError``); a field of view
        under half the training photos' diameter after resizing, and more blue than red inside the field of view
        (channels swapped), are warned once a photo."""
        if not self.states:
            return
        who, patch = photo_name(sample), self.settings.crop_size
        h, w = sample.rgb.shape[:2]
        if h * w * factor * factor > MAX_PIXELS:  # before rounding: a factor of 1e307 makes no integer size
            raise ValueError(
                f"{who}: {h}x{w} pixels, {h * factor:.3g} x {w * factor:.3g} after {self._scaling(factor)}: more than "
                f"{MAX_PIXELS} pixels to predict; pass a smaller --scale (auto brings the field of view to the "
                "training photos' size)"
            )
        sh, sw = scaled_size(h, w, factor)
        if patch and min(h, w) < patch:  # a thumbnail: resizing cannot bring back vessels its pixels do not hold
            raise ValueError(
                f"{who}: a {h}x{w} photo, smaller than the {patch}x{patch} patches the model was trained on (a "
                "thumbnail?): too few pixels to show the vessels; predict the full-size photo"
            )
        if patch and min(sh, sw) < patch:
            raise ValueError(
                f"{who}: {h}x{w} pixels, {sh}x{sw} after {self._scaling(factor)}: smaller than the {patch}x{patch} "
                "patches the model was trained on; pass a larger --scale (auto brings the field of view to the "
                "training photos' size) or a larger photo"
            )
        if self.train_diameter and not sample.fov.all():  # a crop without a border has no measurable scale
            seen = fov_diameter(sample.fov) * factor
            if seen < self.train_diameter / 2:
                self._warn_once(
                    sample,
                    "small",
                    f"its field of view is {seen:.0f} pixels across after {self._scaling(factor)}, under half "
                    f"the training photos' {self.train_diameter:.0f}: vessels look thinner than the model learned "
                    f"them and many will be missed; give --scale auto (here "
                    f"{self.train_diameter / fov_diameter(sample.fov):.3g})",
                )
        inside = sample.rgb[sample.fov] if sample.fov.any() else sample.rgb.reshape(-1, 3)  # (N, 3)
        red, blue = inside[:, 0].mean(dtype=np.float64), inside[:, 2].mean(dtype=np.float64)
        if blue > red:  # a fundus is red: blue brighter than red is a BGR array (OpenCV) or a swapped file
            self._warn_once(
                sample,
                "bgr",
                f"mean blue {blue:.0f} exceeds mean red {red:.0f} inside the field of view, where a fundus "
                "photo is red: red and blue swapped (a BGR array from OpenCV's imread?); vessels are missed in such a "
                "photo: convert it to RGB (cv2.cvtColor(img, cv2.COLOR_BGR2RGB), or img[..., ::-1])",
            )

    def _scaling(self, factor: float) -> str:
        """How a photo was resized, for messages: ``--scale auto (x8.44)``, ``--scale 1e-09``."""
        if isinstance(self.scale, str):
            return f"--scale {self.scale} (x{factor:.3g})"
        return f"--scale {self.scale:g}"

    def _warn_once(self, sample: Photo, what: str, message: str) -> None:
        key = (photo_name(sample), what)
        if key not in self._warned:
            self._warned.add(key)
            log.warning(f"{key[0]}: {message}")

    def predict(self, predictor: Predictor, sample: Photo) -> VesselPrediction:
        rgb = sample.rgb
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"{photo_name(sample)}: expected an (H, W, 3) uint8 photo, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        factor = self.scale_factor(sample)
        self.check_photo(sample, factor)
        rgb = network_input(rgb, self.own.preprocess)  # on the photo as given, as training did
        if factor != 1.0:  # PIL's bilinear resize filters when it shrinks (no aliasing of thin vessels)
            sh, sw = scaled_size(h, w, factor)
            rgb = np.asarray(Image.fromarray(rgb).resize((sw, sh), Image.BILINEAR))
        x = predictor.upload(np.ascontiguousarray(rgb.transpose(2, 0, 1))[None])  # (1, 3, h, w) uint8
        probs = predictor.predict(lambda a, b: x[a:b], 1, keep_probs=True).probs[:, 1:2]
        if factor != 1.0:  # probabilities back at the photo's native size, resampled as log-odds
            probs = resample_probabilities(probs, (h, w), antialias=factor > 1)
        prob = probs[0, 0].cpu().numpy()
        mask = None if self.threshold is None else (prob >= self.threshold) & sample.fov
        return VesselPrediction(prob, mask)

    def evaluator(self) -> VesselEvaluator:
        return VesselEvaluator(self.threshold)

    def save_pictures(self, folder: Path, name: str, sample: Photo, prediction: VesselPrediction) -> list[Path]:
        """``<name>_blend.png``: vessels drawn over the photo."""
        folder.mkdir(parents=True, exist_ok=True)
        return [save_image_atomic(folder / f"{name}_blend.png", blend(sample.rgb, prediction.mask))]

    def write_prediction(
        self, folder: Path, name: str, prediction: VesselPrediction, seg: bool, det: bool, sample=None
    ) -> list[Path]:
        """``<name>_mask.png`` (0/255)."""
        if det:
            raise ValueError("vessel predictions have no detection scores; drop --det")
        if not seg:
            return []
        return [save_image_atomic(folder / f"{name}_mask.png", prediction.mask.astype(np.uint8) * 255)]


def photo_name(sample: Photo) -> str:
    """What messages call a photo: its file, or the name it was given (``photo 3``: Segmenter's third array)."""
    return str(sample.path) if sample.path is not None else sample.name


def blend(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Vessels drawn over the photo: (H, W, 3) uint8."""
    out = rgb.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * VESSEL_COLOUR
    return out.clip(0, 255).astype(np.uint8)


def plot_curves(curves: dict[str, np.ndarray], auc_roc: float, auc_pr: float, out_dir: Path) -> list[Path]:
    """roc.png and pr.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, x, y, xl, yl, label in (
        ("roc", curves["fpr"], curves["tpr"], "false positive rate", "true positive rate", f"AUC-ROC {auc_roc:.4f}"),
        ("pr", curves["recall"], curves["precision"], "recall", "precision", f"AUC-PR {auc_pr:.4f}"),
    ):
        fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
        ax.plot(x, y, lw=1.5, label=label)
        ax.set(xlabel=xl, ylabel=yl, xlim=(0, 1), ylim=(0, 1.01), title=f"{name.upper()} on the FOV pixels")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if name == "roc" else "lower left")
        fig.tight_layout()
        paths.append(out_dir / f"{name}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


class Segmenter:
    """Vessel segmentation of fundus photographs with a trained checkpoint (or a fusion of several).

    >>> seg = Segmenter.from_checkpoint("checkpoints/drive_unet.pth.tar")
    >>> prob, mask = seg.predict(rgb)  # rgb (H, W, 3) uint8 -> vessel probability (H, W), mask (H, W) bool
    """

    def __init__(self, predictor: Predictor, task: VesselTask) -> None:
        self.predictor = predictor
        self.task = task
        self.count = 0  # photos predicted: the default name of the next one is photo <count + 1>

    @classmethod
    def from_checkpoint(cls, paths, device=None, weights=None, scale=None, **predictor_kwargs) -> Segmenter:
        """One checkpoint, or a list of several fused (``weights``: one per checkpoint); ``scale``: ``auto`` (photos
        brought to the training pixel scale), ``none`` or a factor; ``predictor_kwargs`` go to ``Predictor``
        (``tta_flip``, ``amp``, ``batch_size``, ...)."""
        from utils.checkpoint import load_checkpoint
        from utils.config import Settings

        scale = scale_value(scale) if scale is not None else None  # before any checkpoint is read
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        states = [load_checkpoint(p) for p in paths]
        settings = Settings.from_dict(states[0]["settings"], source=str(paths[0]))
        if settings.task != VesselTask.name:
            raise ValueError(f"{paths[0]}: a checkpoint of task {settings.task!r}, not 'vessel'")
        predictor = load_predictor(paths, weights, device=device, **predictor_kwargs)
        if scale is not None:  # else the checkpoint's (auto unless trained otherwise), as in predict.py
            settings = settings.with_task(scale=scale)
        return cls(predictor, VesselTask(settings, states=states, weights=weights))

    @property
    def threshold(self) -> float:
        return self.task.threshold

    def predict(
        self, rgb: np.ndarray, fov: np.ndarray | None = None, name: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """rgb (H, W, 3) uint8, or float in [0, 1] -> (vessel probability (H, W) float32, mask (H, W) bool);
        outside ``fov`` (computed from the photo when not given) no vessels are reported. Warnings and errors call
        the photo ``name``, by default ``photo N`` for the Nth this segmenter was given (counted from 1). A photo
        smaller than the training patch is refused (``ValueError``); one with a small field of view, or with blue
        brighter than red (a BGR array), gets a warning."""
        self.count += 1
        name = name or f"photo {self.count}"
        rgb = np.asarray(rgb)
        if rgb.dtype.kind == "f":
            if rgb.size and (np.nanmin(rgb) < 0 or np.nanmax(rgb) > 1 or np.isnan(rgb).any()):
                raise ValueError(
                    f"{name}: a float photo must hold values in [0, 1], got {np.nanmin(rgb)}..{np.nanmax(rgb)}"
                )
            rgb = np.round(rgb * 255).astype(np.uint8)
        elif rgb.dtype != np.uint8:
            raise ValueError(f"{name}: expected a uint8 photo or floats in [0, 1], got {rgb.dtype}")
        if fov is None:
            fov = fov_from_photo(rgb)
        else:  # a 0/254 JPEG mask or a 0/128 one is a mask too: the bitwise AND with it reported no vessels at all
            fov = np.asarray(fov)
            if fov.shape != rgb.shape[:2]:
                raise ValueError(
                    f"{name}: fov is {fov.shape}, the photo {rgb.shape[:2]}: one field-of-view pixel per pixel"
                )
            fov = fov if fov.dtype == bool else fov > (float(fov.max()) / 2 if fov.max() > 0 else 0)
        photo = Photo(name, np.ascontiguousarray(rgb), None, fov)
        p = self.task.predict(self.predictor, photo)
        return p.prob, p.mask
