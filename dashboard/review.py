"""Reviewing the cases of an evaluation run: which cases to look at first, how their columns read, and the
ground truth (tumour box, tumour mask) to draw over a heatmap. No Streamlit here, like dashboard/charts.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from core.data import CLASS_LABELS, read_yolo_boxes
from core.sources import FileRefused, contained_path, is_within

# What a reviewer asks for first, and how the run's cases are filtered and ordered for it.
VIEWS = {
    "errors": "Most confident errors",
    "unsure_right": "Least confident correct answers",
    "worst_localised": "Worst-localised tumours (heatmap energy on the tumour)",
    "unfamiliar": "Scans the familiarity check warned on",
    "all": "Every case",
}
COLUMN_NAMES = {"path": "image", "label": "true class", "pred": "predicted class", "confidence": "confidence",
                "correct": "right?", "familiarity": "familiarity score", "unfamiliar": "warned",
                "energy_in_box": "heatmap energy in box", "pointing_tolerant": "peak near the tumour",
                "energy_in_dilated": "heatmap energy on the tumour", "peak_in_dilated": "peak on the tumour",
                "train_duplicate_kind": "copy of a training image", "train_match": "training image it copies"}


def available_views(run) -> list[str]:
    views = ["errors", "unsure_right"]
    if localisation_scores(run) is not None:
        views.append("worst_localised")
    if "familiarity" in run.predictions:
        views.append("unfamiliar")
    return views + ["all"]


def localisation_scores(run) -> tuple[pd.DataFrame, str] | None:
    """Each tumour case's localisation scores and the column to sort the worst first by: against the tumour masks
    where the run has them, else against the boxes; None when it has neither."""
    if run.masks is not None and len(run.masks):
        return run.masks[["path", "energy_in_dilated", "peak_in_dilated"]], "energy_in_dilated"
    if run.localisation is not None and len(run.localisation):
        return run.localisation[["path", "energy_in_box", "pointing_tolerant"]], "energy_in_box"
    return None


def cases(run, rows: pd.DataFrame, view: str | None, true: str | None = None, pred: str | None = None
          ) -> pd.DataFrame:
    """The run's cases for a review ``view`` (None: the rows as given, in their order), optionally of one true and
    one predicted class, in the order to look at them, with the columns a reviewer reads (named for people,
    :data:`COLUMN_NAMES`)."""
    table = rows.assign(correct=rows["label"] == rows["pred"])
    if true:
        table = table[table["label"] == true]
    if pred:
        table = table[table["pred"] == pred]
    if view == "errors":
        table = table[~table["correct"]].sort_values("confidence", ascending=False)
    elif view == "unsure_right":
        table = table[table["correct"]].sort_values("confidence")
    elif view == "worst_localised":
        local, energy = localisation_scores(run)
        table = table.merge(local, on="path", how="inner").sort_values(energy)
    elif view == "unfamiliar":
        flagged = table["unfamiliar"].fillna(False).astype(bool) if "unfamiliar" in table else table["label"].isna()
        table = table[flagged].sort_values("familiarity", ascending=False)
    elif view == "all":
        table = table.sort_values("path")
    shown = [c for c in COLUMN_NAMES if c in table]
    out = table[shown].rename(columns=COLUMN_NAMES).reset_index(drop=True)
    for column in ("true class", "predicted class"):
        out[column] = out[column].map(lambda name: CLASS_LABELS.get(name, name))
    if "copy of a training image" in out:
        out["copy of a training image"] = out["copy of a training image"].replace({"": "no", "none": "no"})
    return out


def error_cell(rows: pd.DataFrame, classes: list[str]) -> tuple[str, str]:
    """(true, predicted) of the most frequent mistake among ``rows``; when there is none, the largest cell."""
    counts = pd.crosstab(rows["label"], rows["pred"]).reindex(index=classes, columns=classes, fill_value=0)
    values = counts.to_numpy()
    off = values.copy()
    np.fill_diagonal(off, -1)
    i, j = np.unravel_index(int(np.argmax(off if off.max() > 0 else values)), values.shape)
    return classes[int(i)], classes[int(j)]


def mask_path(datasets_root: str | Path, dataset: str, relative: str) -> Path | None:
    """The tumour mask published beside a dataset for one of its images, found as evaluation runs find it
    (:func:`core.masks.find_mask_root`, :func:`core.masks.mask_path`), when it is there; never outside
    ``datasets_root`` (``dataset`` and ``relative`` come from a run file)."""
    from core.masks import find_mask_root
    from core.masks import mask_path as mask_beside

    try:
        dataset_root = contained_path(datasets_root, dataset, "dataset")
        image = contained_path(dataset_root, relative, "image")
    except FileRefused:
        return None
    if relative.lower().endswith(".mat"):  # a slice of the figshare release holds its own mask
        return image if image.is_file() else None
    mask_root = find_mask_root(dataset_root)
    found = mask_beside(mask_root, relative) if mask_root is not None else None
    return found if found is not None and is_within(found, [datasets_root]) else None


def draw_truth(image: Image.Image, image_path: Path, mask: Path | None) -> tuple[Image.Image, list[str]]:
    """``image`` (the heatmap overlay, at any size) with the tumour box drawn in white and the mask's outline in
    cyan, where the data has them; and what was drawn, for the caption."""
    drawn = image.convert("RGB").copy()
    draw = ImageDraw.Draw(drawn)
    width, height = drawn.size
    notes = []
    try:
        boxes = read_yolo_boxes(image_path) or []
    except ValueError:
        boxes = []
    for xc, yc, bw, bh in boxes:
        draw.rectangle([(xc - bw / 2) * width, (yc - bh / 2) * height, (xc + bw / 2) * width, (yc + bh / 2) * height],
                       outline=(255, 255, 255), width=max(2, width // 200))
    if boxes:
        notes.append("white box: the tumour box of the data")
    if mask is not None:
        try:
            outline = _mask_outline(mask, (width, height), image_path)
        except ValueError:
            outline = None
        if outline is not None and outline.any():
            pixels = np.asarray(drawn).copy()
            pixels[outline] = (0, 255, 255)
            drawn = Image.fromarray(pixels)
            notes.append("cyan line: the tumour outline drawn by the dataset's authors")
    return drawn, notes


def _mask_outline(mask: Path, size: tuple[int, int], image_path: Path) -> np.ndarray:
    """The boundary pixels of a mask file (core.masks.read_mask: a PNG, a release .mat's own, or a NIfTI label volume
    of the NIfTI scan at ``image_path``) at ``size``, two pixels wide at typical sizes."""
    from scipy.ndimage import binary_erosion

    from core.masks import read_mask
    from core.sources import read_image

    scan = read_image(image_path).info if mask.name.lower().endswith((".nii", ".nii.gz")) else None
    inside = read_mask(mask, *size, scan)
    width = max(1, size[0] // 250)
    return inside & ~binary_erosion(inside, iterations=width)
