"""Write a copy of a fundus photo set at another pixel scale, as another camera would see it, in the paired layout
(``<out>/<split>/image|mask|fov/<name>.png``): photos resized with bicubic filtering, vessel labels with bilinear
filtering cut at one half (so thin vessels stay as thin as the resize makes them), field-of-view masks by nearest
neighbour. eval.py reads the copy like any data set:

    python -m tools.rescale_photos ../shared/data/DRIVE /tmp/drive_x1.77 --factor 1.77
    python eval.py --seg-path checkpoints/drive_unet.pth.tar -d /tmp/drive_x1.77 [--scale none]
    python -m tools.rescale_photos ../shared/data/DRIVE /tmp/drive_jpeg75 --jpeg 75         # a publisher's JPEG
    python -m tools.rescale_photos ../shared/data/DRIVE /tmp/drive_warm --gains 1.15 1.0 0.85  # another white balance
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from data.photos import find_photos, load_photo
from utils.io import jpeg_copy, save_image_atomic, staged_output_dir

log = logging.getLogger(__name__)


MIN_SIDE, MAX_PIXELS = 32, 2**28  # a copy smaller than a training patch, or larger than memory, tests nothing


def rescale(rgb: np.ndarray, label: np.ndarray, fov: np.ndarray, factor: float):
    """(photo, label, field of view) resized by ``factor``: uint8 (h, w, 3), bool (h, w), bool (h, w)."""
    h, w = label.shape
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"--factor must be a finite number > 0, got {factor}")
    if min(h, w) * factor < MIN_SIDE or h * w * factor * factor > MAX_PIXELS:
        raise ValueError(
            f"--factor {factor:.3g} makes a {w}x{h} photo {w * factor:.3g} x {h * factor:.3g} pixels; a copy must be "
            f"{MIN_SIDE} to {MAX_PIXELS:.3g} pixels: choose a factor nearer 1"
        )
    size = (round(w * factor), round(h * factor))
    photo = np.asarray(Image.fromarray(rgb).resize(size, Image.BICUBIC))
    lab = np.asarray(Image.fromarray(label.astype(np.uint8) * 255).resize(size, Image.BILINEAR)) >= 128
    field = np.asarray(Image.fromarray(fov.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
    return photo, lab, field


def recolour(
    rgb: np.ndarray, gains: tuple[float, float, float] | None, quality: int | None
) -> tuple[np.ndarray, bytes | None]:
    """A photo as another camera or a publisher passes it on: each channel times its gain (white balance, rounded and
    clipped to 0..255) and, with ``quality``, its JPEG bytes (the decoded copy returned beside them)."""
    if gains is not None:
        if len(gains) != 3 or not all(math.isfinite(g) and 0 < g <= 4 for g in gains):
            raise ValueError(f"--gains takes 3 channel gains in (0, 4], got {gains}")
        rgb = np.clip(np.round(rgb.astype(np.float32) * np.asarray(gains, np.float32)), 0, 255).astype(np.uint8)
    if quality is None:
        return rgb, None
    if not 1 <= quality <= 95:
        raise ValueError(f"--jpeg takes a quality of 1 to 95, got {quality}")
    return jpeg_copy(rgb, quality)  # the training augmentation's encoder (--random-jpeg)


def write_rescaled(
    src: str | Path, out: str | Path, factor: float, splits=("train", "test"), force=False, gains=None, jpeg=None
) -> Path:
    """The photos of ``splits`` resized by ``factor``, recoloured by ``gains`` and saved as JPEG of quality ``jpeg``
    where given (labels and fields of view as PNG, never compressed)."""
    skipped: list[str] = []
    with staged_output_dir(out, force, [("the source photos", Path(src))]) as stage:
        for split in splits:
            for rec in find_photos(src, split):
                p = load_photo(rec)
                if p.label is None:  # a scale test needs the reference: say which photos were left out
                    skipped.append(f"{split}/{rec.name}")
                    continue
                photo, lab, field = rescale(p.rgb, p.label, p.fov, factor) if factor != 1 else (p.rgb, p.label, p.fov)
                photo, encoded = recolour(photo, gains, jpeg)
                for sub in ("image", "mask", "fov"):
                    (stage / split / sub).mkdir(parents=True, exist_ok=True)
                if encoded is None:
                    save_image_atomic(stage / split / "image" / f"{rec.name}.png", photo)
                else:
                    (stage / split / "image" / f"{rec.name}.jpg").write_bytes(encoded)  # inside the staged folder
                for sub, array in (("mask", lab.astype(np.uint8) * 255), ("fov", field * 255)):
                    save_image_atomic(stage / split / sub / f"{rec.name}.png", array.astype(np.uint8))
    if skipped:
        log.warning(f"{len(skipped)} photos without a label were not copied: {', '.join(skipped[:5])}")
    return Path(out)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a photo set (DRIVE or paired layout)")
    p.add_argument("out", help="the folder to write")
    p.add_argument("--factor", type=float, default=1.0, help="resize factor (e.g. 1.77: a 999 x 960 camera)")
    p.add_argument("--splits", nargs="+", default=["test"], choices=["train", "test"], help="splits to copy")
    p.add_argument("--force", action="store_true", help="replace an earlier copy written by this tool")
    p.add_argument("--gains", type=float, nargs=3, metavar=("R", "G", "B"), help="colour shift: a gain per channel")
    p.add_argument("--jpeg", type=int, metavar="QUALITY", help="save the photos as JPEG of this quality (1-95)")
    a = p.parse_args(argv)
    if not (math.isfinite(a.factor) and a.factor > 0):
        raise ValueError(f"--factor must be a finite number > 0, got {a.factor}")
    path = write_rescaled(a.source, a.out, a.factor, a.splits, a.force, a.gains, a.jpeg)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError, RuntimeError) as e:  # DatasetError, an --out that must not be replaced, a full disk
        sys.exit("error: " + " ".join(str(e).split()))
