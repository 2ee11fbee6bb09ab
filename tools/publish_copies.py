"""Copy the B-scans of an AI Challenger 2018 set as a publisher passes them on: every K-th B-scan of each volume,
squashed to one size whatever its aspect, saved as JPEG, with its label map beside it (challenge grey values
0 / 255 / 191 / 128, nearest-neighbour resized, PNG):

    python -m tools.publish_copies DATA_ROOT OUT [--split test] [--size 512x512] [--quality 75] [--every 4]

writes ``OUT/image/<pid>_<z>.jpg`` and ``OUT/mask/<pid>_<z>.png``, ``z`` the slice number (``z.bmp``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from data.common import DatasetError
from data.oct import SPLIT_FOLDERS, classes_to_grey, find_volumes, grey_to_classes, read_grey
from utils.io import save_image_atomic, staged_output_dir


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> (W, H), each side 16 to 4096 pixels."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or not all(16 <= int(s) <= 4096 for s in m.groups()):
        raise ValueError(f"--size must be WIDTHxHEIGHT with sides of 16 to 4096 pixels, e.g. 512x512; got {text!r}")
    return int(m.group(1)), int(m.group(2))


def publish_copies(
    root: str | Path,
    out: str | Path,
    split: str = "test",
    size: tuple[int, int] = (512, 512),
    quality: int = 75,
    every: int = 4,
    force: bool = False,
) -> int:
    """Write the copies (see the module's doc); returns the number of B-scans written."""
    if not 1 <= quality <= 100:
        raise ValueError(f"--quality must be 1 to 100, got {quality}")
    if every < 1:
        raise ValueError(f"--every must be at least 1, got {every}")
    records = find_volumes(root, split)
    for rec in records:
        if rec.label_paths is None:
            folder = Path(root) / SPLIT_FOLDERS[split] / "label_images" / f"{rec.pid}_labelMark"
            raise DatasetError(f"{folder}: no labels for volume {rec.pid}; published copies need labelled B-scans")
    written = 0
    with staged_output_dir(out, force, [("the data set", Path(root))]) as stage:
        (stage / "image").mkdir()
        (stage / "mask").mkdir()
        for rec in records:
            for image_path, label_path in list(zip(rec.image_paths, rec.label_paths))[::every]:
                name = f"{rec.pid}_{image_path.stem}"
                image = Image.fromarray(read_grey(image_path)).resize(size, Image.BICUBIC)
                classes = grey_to_classes(read_grey(label_path), label_path)
                classes = np.asarray(Image.fromarray(classes).resize(size, Image.NEAREST))
                save_image_atomic(stage / "image" / f"{name}.jpg", image, quality=quality)
                save_image_atomic(stage / "mask" / f"{name}.png", classes_to_grey(classes))
                written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="the AI Challenger data folder (holding Edema_*set/)")
    p.add_argument("out", help="the folder to write (image/, mask/)")
    p.add_argument("--split", default="test", choices=sorted(SPLIT_FOLDERS), help="split to copy (default test)")
    p.add_argument("--size", default="512x512", metavar="WxH", help="size of every copy (default 512x512)")
    p.add_argument("--quality", type=int, default=75, help="JPEG quality, 1-100 (default 75)")
    p.add_argument("--every", type=int, default=4, help="copy every K-th B-scan of a volume (default 4)")
    p.add_argument("--force", action="store_true", help="replace an earlier output of this toolkit at OUT")
    a = p.parse_args(argv)
    n = publish_copies(a.root, a.out, a.split, parse_size(a.size), a.quality, a.every, a.force)
    print(f"wrote {n} B-scans to {a.out}")
    return n


if __name__ == "__main__":
    try:
        main()
    except (ValueError, OSError, RuntimeError) as e:  # DatasetError, an OUT that must not be replaced, a full disk
        sys.exit("error: " + " ".join(str(e).split()))
