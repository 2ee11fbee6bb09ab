"""Pictures: per-slice overlays (image | prediction | ground truth) and an animated GIF per volume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# background, REA, SRF, PED
CLASS_COLOURS = np.array([[0, 0, 0], [230, 60, 60], [60, 200, 80], [70, 120, 255]], dtype=np.float32)


def overlay(image: np.ndarray, classes: np.ndarray, alpha: float = 0.5) -> np.ndarray:
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
    out_dir: Path, pid: str, volume: np.ndarray, pred: np.ndarray, truth: np.ndarray | None, gif_scale: float = 0.5
) -> Path:
    """Writes ``out_dir/<pid>/<z>.png`` for every slice and ``out_dir/<pid>.gif``; returns the GIF path."""
    folder = out_dir / pid
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for z in range(volume.shape[0]):
        pic = panel(np.asarray(volume[z]), np.asarray(pred[z]), None if truth is None else np.asarray(truth[z]))
        Image.fromarray(pic).save(folder / f"{z + 1}.png")
        im = Image.fromarray(pic)
        if gif_scale != 1:
            im = im.resize((max(1, int(im.width * gif_scale)), max(1, int(im.height * gif_scale))), Image.BILINEAR)
        frames.append(im.convert("P", palette=Image.ADAPTIVE, colors=64))
    gif = out_dir / f"{pid}.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=120, loop=0)
    return gif
