#!/usr/bin/env python
"""Segment the vessels of fundus photographs with a trained checkpoint.

    python predict.py photo1.tif photo2.jpg --checkpoint checkpoints/drive_unet.pth.tar --out predictions/

writes ``<stem>_mask.png`` (0/255) and ``<stem>_blend.png`` (vessels over the photo; ``--no-blend`` skips it).
From Python: ``Segmenter.from_checkpoint(path).predict(rgb)`` (``utils.vessel``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "drive_unet.pth.tar"


def main(argv: list[str] | None = None) -> list[Path]:
    from data.photos import read_rgb
    from utils.vessel import Segmenter, save_outputs

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="default: the shipped DRIVE model")
    p.add_argument("--out", type=Path, default=Path("predictions"))
    p.add_argument("--no-blend", action="store_true", help="write only the masks")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    a = p.parse_args(argv)
    seg = Segmenter.from_checkpoint(a.checkpoint, device=a.device)
    written = []
    for path in a.images:
        rgb = read_rgb(path)
        _, mask = seg.predict(rgb)
        written += save_outputs(a.out, path.stem, rgb, mask, with_blend=not a.no_blend)
        print(f"{path}: {mask.mean() * 100:.1f}% vessel pixels -> {a.out / (path.stem + '_mask.png')}", flush=True)
    return written


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        sys.exit(f"error: {e}")
