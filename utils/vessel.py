"""Vessel task outputs and the Python API: masks, blends, ROC / PR plots, ``Segmenter``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from utils.inference import Predictor

VESSEL_COLOUR = np.array([255, 40, 40], dtype=np.float32)


def blend(rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Vessels drawn over the photo: (H, W, 3) uint8."""
    out = rgb.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * VESSEL_COLOUR
    return out.clip(0, 255).astype(np.uint8)


def save_outputs(out_dir: Path, name: str, rgb: np.ndarray, mask: np.ndarray, with_blend: bool = True) -> list[Path]:
    """``<name>_mask.png`` (0/255) and, unless turned off, ``<name>_blend.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}_mask.png"]
    Image.fromarray(mask.astype(np.uint8) * 255).save(paths[0])
    if with_blend:
        paths.append(out_dir / f"{name}_blend.png")
        Image.fromarray(blend(rgb, mask)).save(paths[1])
    return paths


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
    """Vessel segmentation of fundus photographs with a trained checkpoint.

    >>> seg = Segmenter.from_checkpoint("checkpoints/drive_unet.pth.tar")
    >>> prob, mask = seg.predict(rgb)  # rgb (H, W, 3) uint8 -> vessel probability (H, W), mask (H, W) bool
    """

    def __init__(self, predictor: Predictor, threshold: float) -> None:
        self.predictor = predictor
        self.threshold = threshold

    @classmethod
    def from_checkpoint(cls, path: str | Path, device=None) -> Segmenter:
        from utils.checkpoint import load_checkpoint

        state = load_checkpoint(path)
        if state["settings"].get("task") != "vessel":
            raise ValueError(f"{path}: a checkpoint of task {state['settings'].get('task')!r}, not 'vessel'")
        predictor = Predictor.from_checkpoints([path], device=device)
        return cls(predictor, float(state.get("threshold", 0.5)))

    def probabilities(self, rgb: np.ndarray) -> np.ndarray:
        return self.predictor.predict_image(np.ascontiguousarray(rgb, dtype=np.uint8))[1]

    def predict(self, rgb: np.ndarray, fov: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(vessel probability (H, W) float32, mask (H, W) bool); outside ``fov`` (computed when not given) no
        vessels are reported."""
        from data.photos import fov_from_photo

        prob = self.probabilities(rgb)
        fov = fov_from_photo(rgb) if fov is None else fov
        return prob, (prob >= self.threshold) & fov
