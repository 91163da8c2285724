"""Localisation: does a heatmap point at the tumour?

A heatmap on the network's input grid is scored against the tumour boxes of its image (YOLO boxes,
normalised to the original image): the pointing game, strict (the peak lies in a box) and tolerant
(within 15 px at 224, the game's usual tolerance), the share of the heatmap's mass inside the boxes,
and the boxes' own share of the image, which is what a uniform heatmap scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from core.data import CLASSES, read_yolo_boxes
from core.grid import square_geometry

POINTING_TOLERANCE_PX = 15  # at 224 px, the pointing game's usual tolerance


def box_on_grid(box: Sequence[float], width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """A YOLO box (x_centre, y_centre, w, h normalised to the original image) -> (x0, y0, x1, y1) on
    the network input grid."""
    scale, dx, dy = square_geometry(width, height, size)
    xc, yc, bw, bh = (float(v) for v in box)
    x0, x1 = (xc - bw / 2) * width, (xc + bw / 2) * width
    y0, y1 = (yc - bh / 2) * height, (yc + bh / 2) * height
    return ((x0 + dx) * scale, (y0 + dy) * scale, (x1 + dx) * scale, (y1 + dy) * scale)


def localisation_scores(heatmap: np.ndarray, boxes: Sequence[Sequence[float]], width: int, height: int,
                        tolerance_px: float = POINTING_TOLERANCE_PX) -> dict:
    """Score one heatmap (network input grid) against tumour boxes (YOLO, normalised to the original).

    * ``pointing_strict``: the heatmap's maximum lies in a box;
    * ``pointing_tolerant``: it lies within ``tolerance_px`` (given at 224 px, scaled to the grid) of one;
    * ``energy_in_box``: the share of the heatmap's mass inside the boxes;
    * ``box_share``: the boxes' share of the image, which a uniform heatmap would score.
    Only the image's own area counts: padding added to make it square is left out.
    """
    size = heatmap.shape[-1]
    scale, dx, dy = square_geometry(width, height, size)
    # The image's area on the grid, and pixel centres inside it.
    gx0, gy0 = int(np.floor(dx * scale)), int(np.floor(dy * scale))
    gx1, gy1 = min(size, int(np.ceil((dx + width) * scale))), min(size, int(np.ceil((dy + height) * scale)))
    region = heatmap[gy0:gy1, gx0:gx1].astype(np.float64)
    ys, xs = np.mgrid[gy0:gy1, gx0:gx1] + 0.5
    inside = np.zeros(region.shape, dtype=bool)
    grid_boxes = [box_on_grid(b, width, height, size) for b in boxes]
    for x0, y0, x1, y1 in grid_boxes:
        inside |= (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
    total = region.sum()
    result = {"box_share": float(inside.mean()) if inside.size else float("nan"),
              "energy_in_box": float(region[inside].sum() / total) if total > 0 else float("nan")}
    if total <= 0:  # an empty heatmap points nowhere
        result.update(pointing_strict=False, pointing_tolerant=False)
        return result
    peak = np.unravel_index(int(np.argmax(region)), region.shape)
    px, py = xs[peak], ys[peak]
    tolerance = tolerance_px * size / 224.0
    distances = [np.hypot(max(x0 - px, 0.0, px - x1), max(y0 - py, 0.0, py - y1)) for x0, y0, x1, y1 in grid_boxes]
    result["pointing_strict"] = bool(inside[peak])
    result["pointing_tolerant"] = bool(min(distances, default=np.inf) <= tolerance)
    return result


def has_box(path: Path) -> bool:
    """Whether a box file lies beside the image (a damaged one counts: it is reported when read)."""
    try:
        return bool(read_yolo_boxes(path))
    except ValueError:
        return True


def localisation_summary(table: pd.DataFrame) -> dict:
    """Mean scores over all scored images, per class, and over the correctly classified ones."""
    def summarise(rows: pd.DataFrame) -> dict:
        return {"images": int(len(rows)),
                "pointing_strict": float(rows["pointing_strict"].mean()) if len(rows) else float("nan"),
                "pointing_tolerant": float(rows["pointing_tolerant"].mean()) if len(rows) else float("nan"),
                "energy_in_box": float(rows["energy_in_box"].mean()) if len(rows) else float("nan"),
                "box_share": float(rows["box_share"].mean()) if len(rows) else float("nan")}

    return {"overall": summarise(table),
            "per_class": {name: summarise(table[table["label"] == name]) for name in CLASSES
                          if (table["label"] == name).any()},
            "correctly_classified": summarise(table[table["label"] == table["pred"]])}
