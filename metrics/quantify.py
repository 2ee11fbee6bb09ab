"""Fluid quantification of a predicted (or reference) label volume: per lesion class the volume in nL, the B-scans
it appears on, and an en-face map of its height per A-scan.

1 mm³ = 1 µL = 1000 nL, so a class's volume is its voxel count x the voxel's size in mm³ x 1000.
"""

from __future__ import annotations

import numpy as np

NL_PER_MM3 = 1000.0
# the ETDRS grid's sectors (metrics.etdrs), named as they lie on the en-face map
SECTORS = ("central", *(f"{ring}-{side}" for ring in ("inner", "outer") for side in ("top", "right", "bottom", "left")))


def quantify(
    labels: np.ndarray, spacing: tuple[float, float, float] | None, class_names: tuple[str, ...]
) -> dict[str, object]:
    """labels (Z, H, W) class indices (0 background, k = ``class_names[k - 1]``), spacing (between B-scans, along
    depth, between A-scans) in mm or None -> the report's figures:

    ``voxels`` and ``volume_nl`` (None without a spacing) per class, ``affected_bscans`` (1-based slice numbers),
    ``enface`` (Z, W) float32 per class: the class's height at each A-scan in mm (in voxels without a spacing), and
    ``enface_unit``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be (Z, H, W), got shape {labels.shape}")
    counts = np.bincount(labels.reshape(-1), minlength=len(class_names) + 1)
    voxel_nl = None if spacing is None else float(np.prod(spacing)) * NL_PER_MM3
    out: dict[str, object] = {
        "spacing": None if spacing is None else tuple(float(s) for s in spacing),
        "voxels": {},
        "volume_nl": None if voxel_nl is None else {},
        "affected_bscans": {},
        "enface": {},
        "enface_unit": "voxels" if spacing is None else "mm",
    }
    for k, name in enumerate(class_names, start=1):
        mask = labels == k
        column = mask.sum(axis=1, dtype=np.int32)  # (Z, W): voxels of the class along each A-scan
        out["voxels"][name] = int(counts[k])
        if voxel_nl is not None:
            out["volume_nl"][name] = int(counts[k]) * voxel_nl
        out["affected_bscans"][name] = (np.flatnonzero(column.any(axis=1)) + 1).tolist()
        out["enface"][name] = column.astype(np.float32) * (1.0 if spacing is None else float(spacing[1]))
    return out


def ranges(numbers: list[int]) -> str:
    """[3, 4, 5, 6, 7, 12] -> "3-7, 12"."""
    parts, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ", ".join(parts)


def quantify_row(name: str, quant: dict, class_names: tuple[str, ...]) -> dict[str, object]:
    """One ``quantify.csv`` row: the patient, the spacing, and per class nL, voxels and affected B-scans."""
    spacing = quant["spacing"] or (None, None, None)
    row: dict[str, object] = {"patient": name, "dz_mm": spacing[0], "dy_mm": spacing[1], "dx_mm": spacing[2]}
    for c in class_names:
        row[f"{c}_nl"] = None if quant["volume_nl"] is None else round(quant["volume_nl"][c], 4)
        row[f"{c}_voxels"] = quant["voxels"][c]
        row[f"{c}_bscans"] = len(quant["affected_bscans"][c])
        row[f"{c}_affected"] = ranges(quant["affected_bscans"][c])
    grid = quant.get("etdrs")  # metrics.etdrs: the columns are there (empty) whether or not the grid is
    row["cst_um"] = None if grid is None or grid["cst_um"] is None else round(grid["cst_um"], 1)
    row["fovea_found"] = None if grid is None else grid["fovea"]["found"]
    for sector in SECTORS:
        s = None if grid is None else next(x for x in grid["sectors"] if x["key"] == sector)
        row[f"thickness_{sector}_um"] = None if s is None or s["thickness_um"] is None else round(s["thickness_um"], 1)
        for c in class_names:
            row[f"{c}_{sector}_nl"] = None if s is None else round(s["fluid_nl"][c], 4)
    return row
