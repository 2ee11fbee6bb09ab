"""Joint image/label augmentation on single samples (uint8 image (3, H, W), uint8 label (H, W))."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def resize_pair(image: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int]):
    """Bilinear for the image, nearest for the label."""
    img = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    img = img.round().clamp(0, 255).to(torch.uint8)
    if label is None:
        return img, None
    lab = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8)
    return img, lab


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(C, H, W) float blurred by a separable Gaussian of ``sigma`` pixels (edges replicated)."""
    if sigma < 0.1:
        return x
    r = max(1, int(3 * sigma + 0.5))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[0]
    y = F.pad(x[None], (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y[0]


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
        def u(r):
            return (torch.rand((), generator=gen).item() * 2 - 1) * r

        x = image.float() / 255
        if self.brightness or self.contrast or self.gamma:
            x = x.clamp(0, 1) ** (1 + u(self.gamma))
            x = (x - x.mean()) * (1 + u(self.contrast)) + x.mean() + u(self.brightness)
        if self.blur and torch.rand((), generator=gen) < 0.5:
            x = gaussian_blur(x, torch.rand((), generator=gen).item() * self.blur)
        if self.noise:
            std = torch.rand((), generator=gen).item() * self.noise
            x = x + std * torch.randn(x.shape, generator=gen)
        return (x * 255).round().clamp(0, 255).to(torch.uint8)

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
