"""Joint image/label augmentation on single samples (uint8 image (3, H, W), uint8 label (H, W))."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from utils.io import jpeg_copy

IGNORE_INDEX = 255
# a pixel of one of the lesion classes, which one unknown: a reference that marks only "fluid" (``--label-map
# 255:fluid``); the losses count it as any lesion (losses.functional.partial_cross_entropy)
ANY_LESION = 254


def resize_pair(image: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int]):
    """Bilinear for the image, nearest for the label."""
    img = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    img = img.round().clamp(0, 255).to(torch.uint8)
    if label is None:
        return img, None
    lab = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8)
    return img, lab


def jpeg_round_trip(image: torch.Tensor, quality: int, colour: bool) -> torch.Tensor:
    """A uint8 (3, H, W) image written as JPEG at ``quality`` and read back: as one colour image when ``colour``,
    else each plane as a grey JPEG."""

    x = image.numpy()
    if colour:
        out = jpeg_copy(np.ascontiguousarray(x.transpose(1, 2, 0)), quality)[0].transpose(2, 0, 1)
    else:
        out = np.stack([jpeg_copy(plane, quality)[0] for plane in x])
    return torch.from_numpy(np.ascontiguousarray(out))


@dataclass
class Augment:
    """Random horizontal flip (always), rotation (+-degrees), scale (1 +- s), crop; ``resize`` first if set.

    Where crops go (``placement``): "tiles", one tile of a random tiling of the slice (``tile_centre``), so that over
    many draws every row and column is trained on about equally often (OCT slices: lesions reach the edges); "inside",
    anywhere the rotated crop lies wholly inside the image, which favours its middle (fundus photos, whose edges lie
    outside the field of view and are ignored anyway). Rotation and scale turn the crop about its centre, reading the
    image's own pixels wherever they exist.
    """

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
    jpeg: int = 0  # half of the time, a JPEG round trip at quality U(jpeg, 95) (a publisher's copy); 0: never
    colour: bool = False  # the 3 channels are one colour image (JPEG as colour), else 3 grey planes (OCT neighbours)
    placement: str = "tiles"  # or "inside" (see above)

    def __post_init__(self) -> None:
        if self.placement not in ("tiles", "inside"):
            raise ValueError(f"Augment placement must be 'tiles' or 'inside', got {self.placement!r}")
        if self.jpeg and not 1 <= self.jpeg <= 95:
            raise ValueError(f"Augment jpeg is the lowest JPEG quality, 1 to 95 (0: off), got {self.jpeg}")

    def __call__(self, image: torch.Tensor, label: torch.Tensor, gen: torch.Generator):
        if self.resize:
            image, label = resize_pair(image, label, self.resize)
        if self.crop_size or self.rotate > 0 or self.scale > 0:
            image, label = self._geometric(image, label, gen)
        if self.flip and torch.rand((), generator=gen) < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        if self.vflip and torch.rand((), generator=gen) < 0.5:
            image, label = image.flip(-2), label.flip(-2)
        if self.brightness or self.contrast or self.gamma or self.noise or self.blur:
            image = self._photometric(image, gen)
        if self.jpeg and torch.rand((), generator=gen) < 0.5:
            quality = self.jpeg + int(torch.randint(0, 96 - self.jpeg, (), generator=gen))
            image = jpeg_round_trip(image, quality, self.colour)
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

    def _geometric(self, image: torch.Tensor, label: torch.Tensor, gen: torch.Generator):
        """A crop (``crop_size``, else the whole slice) rotated and scaled about its centre, sampled from the slice.

        Output pixels whose source lies outside the slice are 0 in the image and ``IGNORE_INDEX`` in the label.
        """
        h, w = label.shape
        angle, zoom = 0.0, 1.0
        if self.rotate > 0 or self.scale > 0:
            angle = math.radians((torch.rand((), generator=gen).item() * 2 - 1) * self.rotate)
            zoom = 1 + (torch.rand((), generator=gen).item() * 2 - 1) * self.scale
        cos, sin = math.cos(angle), math.sin(angle)
        if self.crop_size:
            # the rotated crop's extent along either axis is a box `tile` wide blurred by a box `ramp` wide
            side = self.crop_size / zoom
            tile, ramp = side * max(abs(cos), abs(sin)), side * min(abs(cos), abs(sin))
            if self.placement == "inside":
                cy, cx = (inside_centre(n, tile + ramp, gen) for n in (h, w))
            else:
                # hanging out is judged on the unscaled crop: where it is as long as the slice, the zoomed-out draws
                # already cover the slice whole, and hanging out would only add padding
                cy, cx = (tile_centre(n, tile, ramp, gen, self.crop_size < n < 2 * self.crop_size) for n in (h, w))
            out_h = out_w = self.crop_size
        else:
            (cy, cx), (out_h, out_w) = ((h - 1) / 2, (w - 1) / 2), (h, w)
        if angle == 0 and zoom == 1:  # a plain window: whole pixels, no interpolation
            return _window(image, label, round(cy - (out_h - 1) / 2), round(cx - (out_w - 1) / 2), out_h, out_w)
        # where each output pixel comes from, in slice pixels: (out_h, out_w)
        v = torch.arange(out_h, dtype=torch.float32)[:, None] - (out_h - 1) / 2
        u = torch.arange(out_w, dtype=torch.float32)[None, :] - (out_w - 1) / 2
        x = cx + (cos * u - sin * v) / zoom
        y = cy + (sin * u + cos * v) / zoom
        # read only the part of the slice the crop reaches (a 512 crop of a 1024x512 slice: about 512x512 pixels)
        corners = [(x[i, j].item(), y[i, j].item()) for i in (0, -1) for j in (0, -1)]
        x0, x1 = max(math.floor(min(c[0] for c in corners)), 0), min(math.ceil(max(c[0] for c in corners)), w - 1)
        y0, y1 = max(math.floor(min(c[1] for c in corners)), 0), min(math.ceil(max(c[1] for c in corners)), h - 1)
        if x0 > x1 or y0 > y1:  # nothing of the slice is reached
            return _window(image, label, -out_h, -out_w, out_h, out_w)
        sub_h, sub_w = y1 - y0 + 1, x1 - x0 + 1
        grid = torch.stack(((2 * (x - x0) + 1) / sub_w - 1, (2 * (y - y0) + 1) / sub_h - 1), -1)[None]
        sub = image[:, y0 : y1 + 1, x0 : x1 + 1]
        img = F.grid_sample(sub[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # labels are shifted by one so that 0 marks pixels from outside the slice, which the losses ignore
        lab = label[y0 : y1 + 1, x0 : x1 + 1][None, None].float() + 1
        lab = F.grid_sample(lab, grid, mode="nearest", padding_mode="zeros", align_corners=False)[0, 0]
        lab = torch.where(lab == 0, IGNORE_INDEX, lab - 1)
        return img[0].round().clamp(0, 255).to(torch.uint8), lab.to(torch.uint8)


def tile_centre(length: int, tile: float, ramp: float, gen: torch.Generator, spill: bool = False) -> float:
    """Along one axis of a slice ``length`` pixels long, the centre of a training crop (pixel i at i): one tile, chosen
    uniformly, of a random tiling of the slice by tiles ``tile`` long.

    Crops placed uniformly where they fit reach the slice's first and last pixels from one position only: a crop half
    the slice long trains its edges hundreds of times less often than its middle. Tiles laid edge to edge cover every
    pixel once. The k tiles exceed the slice by ``k * tile - length``, and that surplus becomes an overlap at one of the
    k - 1 joins, chosen at random: no pixel is covered more than k / (k - 1) times as often as another. With two tiles
    the one join is always the same, and the middle is covered twice as often as the ends; with ``spill`` the two tiles
    then hang out of the slice a third of the time instead, the surplus split at random between its ends (padding,
    which the losses ignore), so that the ends are covered at least 0.6 times as often as the middle.

    ``ramp``: a crop rotated by a covers, along either axis, a box ``tile`` wide (side * max(|cos a|, |sin a|)) blurred
    by a box ``ramp`` wide (side * min(...)). The end tiles hang out by half the ramp, so the slice's first and last
    pixels see the whole side of the crop, as the others do; only the rotated corners fall outside.
    A tile at least as long as the slice is centred on it (padding both sides equally when longer).
    """
    if tile >= length:
        return (length - 1) / 2
    k = math.ceil(length / tile - 1e-6)
    hang = min(ramp, k * tile - length) / 2
    surplus = k * tile - length - 2 * hang
    i = int(torch.randint(k, (), generator=gen))  # which tile
    if k == 2 and spill and torch.rand((), generator=gen) < 1 / 3:
        start = -0.5 - hang - torch.rand((), generator=gen).item() * surplus + i * tile
    else:
        join = int(torch.randint(1, k, (), generator=gen))  # tiles from this one on are moved back by the surplus
        start = -0.5 - hang + i * tile - (surplus if i >= join else 0.0)
    return start + tile / 2


def inside_centre(length: int, extent: float, gen: torch.Generator) -> float:
    """Along one axis, the centre of a crop ``extent`` pixels across, uniform over where it lies inside the slice
    (centred on a slice shorter than it). Pixels near the ends are reached by few positions: see ``tile_centre``."""
    if extent >= length:
        return (length - 1) / 2
    return (extent - 1) / 2 + torch.rand((), generator=gen).item() * (length - extent)


def _window(image: torch.Tensor, label: torch.Tensor, y: int, x: int, out_h: int, out_w: int):
    """image[:, y : y + out_h, x : x + out_w] and the label's window; parts outside the slice are 0 / IGNORE_INDEX."""
    h, w = label.shape
    if y >= 0 and x >= 0 and y + out_h <= h and x + out_w <= w:
        return image[:, y : y + out_h, x : x + out_w], label[y : y + out_h, x : x + out_w]
    img = image.new_zeros((image.shape[0], out_h, out_w))
    lab = label.new_full((out_h, out_w), IGNORE_INDEX)
    ys, ye, xs, xe = max(y, 0), min(y + out_h, h), max(x, 0), min(x + out_w, w)
    if ys < ye and xs < xe:
        img[:, ys - y : ye - y, xs - x : xe - x] = image[:, ys:ye, xs:xe]
        lab[ys - y : ye - y, xs - x : xe - x] = label[ys:ye, xs:xe]
    return img, lab
