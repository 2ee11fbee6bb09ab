"""Joint image/label augmentation on single samples (uint8 image (3, H, W), uint8 label (H, W))."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

IGNORE_INDEX = 255


def resize_pair(image: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int]):
    """Bilinear for the image, nearest for the label."""
    img = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    img = img.round().clamp(0, 255).to(torch.uint8)
    if label is None:
        return img, None
    lab = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8)
    return img, lab


@dataclass
class Augment:
    """Random horizontal flip (always), rotation (+-degrees), scale (1 +- s), crop; ``resize`` first if set."""

    flip: bool = True
    rotate: float = 0.0
    scale: float = 0.0
    crop_size: int = 0
    resize: tuple[int, int] | None = None
    vflip: bool = False
    brightness: float = 0.0  # add U(-b, b) * 255
    contrast: float = 0.0  # scale about the mean by 1 + U(-c, c)
    gamma: float = 0.0  # power 1 + U(-g, g)
    noise: float = 0.0  # additive Gaussian noise of std U(0, n) of full scale
    blur: float = 0.0  # half of the time, a Gaussian blur of sigma U(0, b) pixels (another scanner's optics)

    def __call__(self, image: torch.Tensor, label: torch.Tensor, gen: torch.Generator):
        if self.resize:
            image, label = resize_pair(image, label, self.resize)
        if self.crop_size:  # crop with a margin first, so rotation and scaling work on a small patch
            image, label = self._crop(image, label, gen, margin=self.rotate > 0 or self.scale > 0)
        if self.rotate > 0 or self.scale > 0:
            image, label = self._affine(image, label, gen)
            if self.crop_size:
                image, label = self._center(image, label)
        if self.flip and torch.rand((), generator=gen) < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        if self.vflip and torch.rand((), generator=gen) < 0.5:
            image, label = image.flip(-2), label.flip(-2)
        if self.brightness or self.contrast or self.gamma or self.noise or self.blur:
            image = self._photometric(image, gen)
        return image, label

    def _photometric(self, image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Grey curve (a 256-entry table: a pixel's new value depends only on its old one and the image mean),
        then blur and noise, in float32 NumPy (a workers' CPU cost: ``bench.py``'s data pipeline rows)."""

        def u(r):
            return (torch.rand((), generator=gen).item() * 2 - 1) * r

        x_u8 = image.numpy()
        if self.brightness or self.contrast or self.gamma:
            gamma, contrast, brightness = 1 + u(self.gamma), 1 + u(self.contrast), u(self.brightness)
            lut = (np.arange(256, dtype=np.float64) / 255) ** gamma
            hist = np.bincount(x_u8.ravel(), minlength=256)
            mean = float(hist @ lut) / x_u8.size
            x = ((lut - mean) * contrast + mean + brightness).astype(np.float32)[x_u8]
        else:
            x = x_u8.astype(np.float32) / 255
        if self.blur and torch.rand((), generator=gen) < 0.5:
            sigma = torch.rand((), generator=gen).item() * self.blur
            if sigma >= 0.1:
                x = ndimage.gaussian_filter(x, (0, sigma, sigma), mode="nearest", truncate=3.0)
        if self.noise:
            std = torch.rand((), generator=gen).item() * self.noise
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (), generator=gen)))
            x = x + std * rng.standard_normal(x.shape, dtype=np.float32)
        return torch.from_numpy(np.clip(np.rint(x * 255), 0, 255).astype(np.uint8))

    def _center(self, image, label):
        s = self.crop_size
        h, w = label.shape
        y, x = (h - s) // 2, (w - s) // 2
        return image[:, y : y + s, x : x + s], label[y : y + s, x : x + s]

    def _affine(self, image, label, gen):
        angle = math.radians((torch.rand((), generator=gen).item() * 2 - 1) * self.rotate)
        s = 1 + (torch.rand((), generator=gen).item() * 2 - 1) * self.scale
        h, w = label.shape
        # the inverse map in normalised coordinates, correcting for the aspect ratio
        cos, sin = math.cos(angle) / s, math.sin(angle) / s
        theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]])
        grid = F.affine_grid(theta[None], [1, 1, h, w], align_corners=False)
        img = F.grid_sample(image[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # pixels that come from outside the slice are ignored by the losses
        lab = F.grid_sample(
            label[None, None].float() + 1, grid, mode="nearest", padding_mode="zeros", align_corners=False
        )
        lab = torch.where(lab == 0, torch.full_like(lab, IGNORE_INDEX + 1), lab) - 1
        return img[0].round().clamp(0, 255).to(torch.uint8), lab[0, 0].to(torch.uint8)

    def _crop(self, image, label, gen, margin: bool = False):
        s = int(self.crop_size * 1.5) if margin else self.crop_size
        h, w = label.shape
        ph, pw = max(s - h, 0), max(s - w, 0)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph))
            label = F.pad(label, (0, pw, 0, ph), value=IGNORE_INDEX)
            h, w = label.shape
        y = int(torch.randint(0, h - s + 1, (), generator=gen))
        x = int(torch.randint(0, w - s + 1, (), generator=gen))
        return image[:, y : y + s, x : x + s], label[y : y + s, x : x + s]
