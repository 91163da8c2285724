"""Tumour masks: where a dataset's masks are, reading one safely, and scoring a heatmap against it.

A mask is a one-bit (or grey) image of the tumour outline filled in, white for tumour, with the same stem as its
scan. Masks are found in a folder beside the dataset whose name is a leading part of the dataset's name followed by
``-masks`` (``figshare-cheng-masks`` beside ``figshare-cheng-br35h``, ``lgg-tcga-glioma-masks`` beside
``lgg-tcga-glioma``), in the same class folder as the scan or at the mask folder's top level, or in a folder given
by hand (``--masks``).

A heatmap on the network's input grid is scored against the mask placed on that grid the way the scan was
(padded to a square, resized), inside the scan's own area (padding is left out):

* ``peak_in_mask``: the heatmap's maximum lies in the tumour;
* ``peak_in_dilated``: it lies in the tumour grown by :data:`DILATION_PX` pixels at 224 (an outline drawn by hand
  and a 7 x 7 feature map both blur the edge by a few pixels), or by a stated number of millimetres where the slice's
  pixel spacing is known (a DICOM or NIfTI slice, or a spacing stated for the dataset), measured on the scan itself
  by an exact distance transform: the margin is then the same piece of anatomy on every scan, whatever its field
  of view, and each row records what its margin came to in mm;
* ``energy_in_dilated``: the share of the heatmap's mass inside the grown tumour;
* ``iou`` and ``dice``: the overlap of the tumour (not grown) with the region where the heatmap reaches
  :data:`HEATMAP_LEVEL` of its maximum;
* ``dilated_share``: the grown tumour's share of the scan, which a uniform heatmap scores as its energy;
* ``peak_reachable``: the grown tumour holds a pixel where a heatmap resized from the explained layer's grid can
  peak at all (:func:`peak_points`): a layer4 map has 7 x 7 cells and its resized maximum lies at a cell's
  centre, so a small tumour between centres caps ``peak_in_dilated`` whatever the model does;
* ``energy_reachable``: the most of its heat such a heatmap can put inside the grown tumour, that of the single
  cell that puts the most (:func:`cell_footprints`; a mix of cells puts at most the share of its best one).

Each figure is also given for a heatmap that ignores the scan: a Gaussian blob at the image centre (sigma
:data:`BLOB_SIGMA` of the side), so that a reader sees what chance looks like.
"""

from __future__ import annotations

import functools
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from core.grid import square_geometry

DILATION_PX = 5.0       # at 224 px
HEATMAP_LEVEL = 0.5     # the highlighted region: where the heatmap reaches half its maximum
BLOB_SIGMA = 0.15       # the centre blob's spread, as a share of the image side
MASK_SUFFIX = "-masks"
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".gif", ".nii.gz", ".nii")  # NIfTI: a label volume
MAX_MASK_BYTES = 16 << 20
MAX_MASK_PIXELS = 40_000_000
SCORES = ("peak_in_mask", "peak_in_dilated", "energy_in_dilated", "iou", "dice")
OPTIONAL_SCORES = ("peak_reachable", "energy_reachable")  # not in runs made before it was measured
PATIENT = re.compile(r"^(TCGA_[A-Za-z0-9]{2}_[A-Za-z0-9]{4})_")  # lgg-tcga-glioma: TCGA_DU_6404_19850629_38


class MaskError(ValueError):
    """A mask cannot be used; the message says why."""


def find_mask_root(dataset_root: str | os.PathLike, given: str | os.PathLike | None = None) -> Path | None:
    """The folder holding a dataset's masks: ``given`` when set (it must exist), else the folder beside the dataset
    named like it (see the module docstring), else None."""
    if given is not None:
        folder = Path(given).expanduser()
        if not folder.is_dir():
            raise MaskError(f"the mask folder {folder} does not exist")
        return folder
    root = Path(dataset_root).expanduser().resolve()
    try:
        siblings = [p for p in root.parent.iterdir() if p.is_dir() and p.name.endswith(MASK_SUFFIX)]
    except OSError:
        return None
    fitting = [p for p in siblings if p != root and (root.name == p.name[:-len(MASK_SUFFIX)]
                                                     or root.name.startswith(p.name[:-len(MASK_SUFFIX)] + "-"))]
    return max(fitting, key=lambda p: len(p.name), default=None)


def mask_path(mask_root: Path, relpath: str) -> Path | None:
    """The mask of the scan at ``relpath`` (relative to its class tree: ``glioma/1841.jpg``), or None."""
    rel = Path(relpath)
    stems = [rel.stem]  # case.nii.gz: case.nii.png, as before NIfTI masks, then case.png or case.nii.gz
    if rel.name.lower().endswith(".nii.gz"):
        stems.append(rel.name[:-len(".nii.gz")])
    for folder in (mask_root / rel.parent, mask_root):
        for stem in stems:
            for extension in MASK_EXTENSIONS:
                candidate = folder / (stem + extension)
                if candidate.is_file():
                    return candidate
    return None


def masks_for(dataset_root: str | os.PathLike, samples: Sequence, given: str | os.PathLike | None = None
              ) -> tuple[Path | None, list[Path | None] | None]:
    """The mask folder of a dataset and each tumour sample's mask file (no-tumour samples: None); (None, None)
    when no folder is found or, found beside the dataset, it holds no mask of these samples. A folder given by hand
    that holds none is an error."""
    mask_root = find_mask_root(dataset_root, given)
    if mask_root is None:
        return None, None
    masks = [None if s.class_name == "notumor" else mask_path(mask_root, s.relpath) for s in samples]
    if any(masks):
        return mask_root, masks
    if given is not None:
        raise MaskError(f"{given} holds no mask named like a tumour image of {dataset_root} (same stem, .png, in its "
                        "class folder or at the top)")
    return None, None


def read_mask(path: str | os.PathLike, width: int, height: int, scan: dict | None = None) -> np.ndarray:
    """A mask file -> a boolean array of its scan's size (``height``, ``width``). A mask of another size with the
    same proportions (an outline drawn on a 256-pixel original of a 512-pixel scan) is resized to the scan; one
    of other proportions belongs to another image and is refused. A NIfTI label volume is a mask only for a NIfTI
    scan of the same shape, cut on the scan's own slice: ``scan`` is the scan's ``info`` as
    :func:`core.sources.read_image` gives it."""
    from core.sources import read_bytes

    if str(path).lower().endswith(".mat"):  # a slice of the figshare release carries its own mask (cjdata.tumorMask)
        return _mat_mask(path, width, height)
    if str(path).lower().endswith((".nii", ".nii.gz")):
        return _nifti_mask(path, width, height, scan or {})
    raw = read_bytes(path, MAX_MASK_BYTES, "mask file")
    try:
        with Image.open(io.BytesIO(raw), formats=("PNG", "BMP", "TIFF", "GIF")) as image:
            if image.width * image.height > MAX_MASK_PIXELS:
                raise MaskError(f"{Path(path).name}: {image.width} x {image.height} pixels is too large for a mask")
            image.load()
            grey = np.asarray(image.convert("L"))
    except MaskError:
        raise
    except Exception as error:  # damaged files raise many types
        raise MaskError(f"{Path(path).name} is not a readable mask image ({type(error).__name__})") from None
    return _fitted(grey > 127, width, height, Path(path).name)


def _fitted(mask: np.ndarray, width: int, height: int, name: str) -> np.ndarray:
    """A mask at its scan's size: one of another size with the same proportions is resized, one of other
    proportions refused."""
    if mask.shape == (height, width):
        return mask
    mask_height, mask_width = mask.shape
    if abs(mask_width / mask_height - width / height) > 0.01:
        raise MaskError(f"{name} is {mask_width} x {mask_height} pixels, its scan {width} x {height}: not the same "
                        "proportions, so it belongs to another image")
    picture = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(picture) > 127


def _nifti_mask(path: str | os.PathLike, width: int, height: int, scan: dict) -> np.ndarray:
    from core.sources import read_bytes
    from core.sources.volumes import MAX_SCAN_BYTES, nifti_mask_slice

    if scan.get("volume_kind") != "NIfTI" or not scan.get("slice") or not scan.get("volume_shape"):
        raise MaskError(f"{Path(path).name} is a NIfTI label volume, a mask only for a NIfTI scan of the same shape; "
                        "its scan is not one (a picture or DICOM slice is turned another way)")
    try:
        found = nifti_mask_slice(read_bytes(path, MAX_SCAN_BYTES, "mask volume"), int(scan["slice"]) - 1,
                                 tuple(scan["volume_shape"]))
    except ValueError as error:  # ScanRefused and FileRefused say why in words
        raise MaskError(f"{Path(path).name}: {error}") from None
    return _fitted(found, width, height, Path(path).name)


def _mat_mask(path: str | os.PathLike, width: int, height: int) -> np.ndarray:
    from core.sources.figshare import read_mat

    found = read_mat(path).mask
    if found is None:
        raise MaskError(f"{Path(path).name} holds no tumour mask (cjdata.tumorMask)")
    return _fitted(found, width, height, Path(path).name)


def on_grid(mask: np.ndarray, size: int) -> np.ndarray:
    """A mask of the scan's size -> the network's ``size`` x ``size`` grid, placed as the scan is."""
    height, width = mask.shape
    side = max(width, height)
    _, dx, dy = square_geometry(width, height, size)
    canvas = Image.new("L", (side, side))
    canvas.paste(Image.fromarray(mask.astype(np.uint8) * 255), (dx, dy))
    return np.asarray(canvas.resize((size, size), Image.Resampling.BILINEAR)) >= 128


def image_region(width: int, height: int, size: int) -> np.ndarray:
    """Where the scan itself lies on the grid (padding excluded)."""
    scale, dx, dy = square_geometry(width, height, size)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    return (xs >= dx * scale) & (xs <= (dx + width) * scale) & (ys >= dy * scale) & (ys <= (dy + height) * scale)


def dilate(mask: np.ndarray, pixels: float) -> np.ndarray:
    """Grow a mask by ``pixels`` (a disc of whole pixels)."""
    from scipy.ndimage import binary_dilation

    radius = int(np.floor(pixels))
    if radius < 1 or not mask.any():
        return mask.copy()
    ys, xs = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return binary_dilation(mask, structure=xs ** 2 + ys ** 2 <= pixels ** 2)


def grown_outline(mask: np.ndarray, size: int, dilation_px: float = DILATION_PX, dilation_mm: float | None = None,
                  spacing_mm: tuple[float, float] | None = None, placed: np.ndarray | None = None
                  ) -> tuple[np.ndarray, float | None]:
    """A mask of the scan's size grown for the tolerant scores and placed on the network's ``size`` grid, and the
    margin that came to in millimetres (None when the spacing is not known). ``placed``: the mask already on the
    grid (:func:`on_grid`), when the caller has it.

    ``dilation_mm`` takes in every pixel whose centre lies within that many millimetres of the tumour, measured on
    the scan itself with its (row, column) ``spacing_mm`` (an exact distance transform, so pixels that are not square
    are handled), which it then needs. Otherwise the tumour is grown on the grid by ``dilation_px`` at 224 (a disc of
    whole pixels), and the margin in mm is what those whole pixels come to on this scan (the mean of the two axes)."""
    height, width = mask.shape
    if dilation_mm is not None:
        if not spacing_mm:
            raise MaskError("the scan states no pixel spacing, so the tumour cannot be grown by millimetres; state "
                            "the dataset's spacing (--pixel-spacing-mm) or grow it by pixels")
        from scipy.ndimage import distance_transform_edt

        if not mask.any():
            return on_grid(mask, size), float(dilation_mm)
        # Only pixels within the margin of the tumour's bounding box can be taken in: the transform runs there alone.
        rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        reach = [int(np.ceil(dilation_mm / float(step))) + 1 for step in spacing_mm]
        top, bottom = max(0, rows[0] - reach[0]), min(height, rows[-1] + reach[0] + 1)
        left, right = max(0, columns[0] - reach[1]), min(width, columns[-1] + reach[1] + 1)
        distance = distance_transform_edt(~mask[top:bottom, left:right],
                                          sampling=(float(spacing_mm[0]), float(spacing_mm[1])))
        grown = np.zeros_like(mask, dtype=bool)
        grown[top:bottom, left:right] = distance <= dilation_mm
        return on_grid(grown, size), float(dilation_mm)
    radius = dilation_px * size / 224.0
    margin = None
    if spacing_mm:
        margin = float(np.floor(radius) * max(width, height) / size * (spacing_mm[0] + spacing_mm[1]) / 2)
    return dilate(on_grid(mask, size) if placed is None else placed, radius), margin


def centre_blob(size: int) -> np.ndarray:
    """The baseline heatmap: a Gaussian at the grid's centre (the scan's centre, since padding is symmetric)."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    sigma = BLOB_SIGMA * size
    return np.exp(-((xs - size / 2) ** 2 + (ys - size / 2) ** 2) / (2 * sigma ** 2))


def peak_points(grid: int, size: int) -> np.ndarray:
    """The rows (and columns) of a ``size`` grid where a ``grid`` x ``grid`` map resized bilinearly (half-pixel
    centres, edges held, as Grad-CAM resizes its maps) can have its first maximum: on either side of a cell's
    centre, or at the grid's first pixel when an edge cell wins (the map is level from there to that centre)."""
    centres = (np.arange(grid) + 0.5) * size / grid - 0.5
    points = np.concatenate([[0], np.floor(centres), np.ceil(centres)]).astype(int)
    return np.unique(points.clip(0, size - 1))


@functools.lru_cache(maxsize=4)
def cell_footprints(grid: int, size: int) -> np.ndarray:
    """(grid * grid, size, size): each cell of a ``grid`` x ``grid`` map resized as Grad-CAM resizes it (bilinear,
    half-pixel centres, edges held). A resized map, less its minimum, is a sum of these with non-negative weights."""
    import cv2

    cells = np.eye(grid * grid, dtype=np.float32).reshape(-1, grid, grid)
    footprints = np.stack([cv2.resize(cell, (size, size), interpolation=cv2.INTER_LINEAR) for cell in cells])
    footprints.flags.writeable = False  # shared by every caller
    return footprints


def mask_scores(heatmap: np.ndarray, mask: np.ndarray, region: np.ndarray, dilation_px: float = DILATION_PX,
                grown: np.ndarray | None = None) -> dict:
    """Score one heatmap against one mask, both on the network grid; ``region``: the scan's area there. The grown
    tumour is ``grown`` when given (:func:`grown_outline`), else the mask grown by ``dilation_px`` at 224."""
    size = heatmap.shape[-1]
    grown = (dilate(mask, dilation_px * size / 224.0) if grown is None else grown) & region
    mask = mask & region
    values = np.where(region, np.nan_to_num(heatmap.astype(np.float64), nan=0.0).clip(min=0), 0.0)
    total = values.sum()
    result = {"dilated_share": float(grown.sum() / max(1, region.sum()))}
    if not total > 0:  # a heatmap with no mass points nowhere: it fails every test
        return {**result, "peak_in_mask": False, "peak_in_dilated": False, "energy_in_dilated": 0.0, "iou": 0.0,
                "dice": 0.0}
    peak = np.unravel_index(int(np.argmax(values)), values.shape)
    highlighted = values >= HEATMAP_LEVEL * values.max()
    overlap, union = (highlighted & mask).sum(), (highlighted | mask).sum()
    return {**result, "peak_in_mask": bool(mask[peak]), "peak_in_dilated": bool(grown[peak]),
            "energy_in_dilated": float(values[grown].sum() / total),
            "iou": float(overlap / union) if union else 0.0,
            "dice": float(2 * overlap / (highlighted.sum() + mask.sum())) if union else 0.0}


def score_against_mask(heatmap: np.ndarray, mask: np.ndarray, dilation_px: float = DILATION_PX,
                       grid: int | None = None, dilation_mm: float | None = None,
                       spacing_mm: tuple[float, float] | None = None) -> dict:
    """Scores of a heatmap and of the centre blob against a mask of the scan's size: ``{score: value,
    "blob_" + score: value, "dilated_share": ..., "margin_mm": ...}``, and ``peak_reachable`` when the heatmap was
    resized from a ``grid`` x ``grid`` map. The tumour is grown as :func:`grown_outline` says; ``spacing_mm`` is the
    scan's (row, column) pixel spacing, where known, and ``margin_mm`` what the margin came to (NaN: not known)."""
    size = heatmap.shape[-1]
    height, width = mask.shape
    on_scan, region = on_grid(mask, size), image_region(width, height, size)
    if not (on_scan & region).any():
        raise MaskError("the mask is empty: it marks no tumour")
    grown, margin = grown_outline(mask, size, dilation_px, dilation_mm, spacing_mm, placed=on_scan)
    grown &= region
    ours = mask_scores(heatmap, on_scan, region, grown=grown)
    blob = mask_scores(centre_blob(size), on_scan, region, grown=grown)
    result = {**ours, **{f"blob_{key}": blob[key] for key in SCORES},
              "margin_mm": float("nan") if margin is None else margin}
    if grid is not None:
        result["peak_reachable"], result["energy_reachable"] = reachable(grown, region, grid)
    return result


def reachable(grown: np.ndarray, region: np.ndarray, grid: int) -> tuple[bool, float]:
    """The ceilings a ``grid`` x ``grid`` heatmap resized to the grown tumour's grid puts on the tolerant scores,
    whatever the network does: whether the grown tumour holds a point where the map can peak at all
    (``peak_reachable``), and the largest share of its heat inside the scan's ``region`` one cell, and so any mix of
    cells, can put inside it (``energy_reachable``)."""
    size = grown.shape[-1]
    points = peak_points(grid, size)
    footprints = cell_footprints(grid, size) * region
    inside = footprints[:, grown].sum(axis=1) / np.maximum(footprints.sum(axis=(1, 2)), 1e-12)
    return bool(grown[np.ix_(points, points)].any()), float(inside.max())


def patient_of(relpath: str) -> str | None:
    """The patient a file name gives (lgg-tcga-glioma's ``TCGA_DU_6404_...``), else None."""
    match = PATIENT.match(Path(relpath).name)
    return match.group(1) if match else None


def grouped_bootstrap(values: np.ndarray, groups: Sequence | None, resamples: int, confidence: float,
                      seed: int) -> tuple[float, float]:
    """A percentile interval of the mean of ``values``, resampling ``groups`` (patients) with their images when
    given, else single images."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    if groups is None:
        keys = np.arange(len(values))
    else:
        _, keys = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    sums = np.bincount(keys, weights=values)
    counts = np.bincount(keys).astype(np.float64)
    picks = rng.integers(0, len(sums), size=(resamples, len(sums)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    tail = (1 - confidence) / 2
    return (float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail)))


def margin_summary(table) -> dict | None:
    """What the tolerant scores' margin came to in millimetres over the scans whose spacing is known: their number,
    median, least and most; None when no scan's spacing is known (or the table predates the column)."""
    if "margin_mm" not in table:
        return None
    known = table["margin_mm"].to_numpy(dtype=np.float64)
    known = known[np.isfinite(known)]
    if not len(known):
        return None
    return {"images": int(len(known)), "of": int(table.shape[0]), "median": float(np.median(known)),
            "min": float(known.min()), "max": float(known.max())}


def margin_text(summary: dict) -> str:
    """The tolerant scores' margin in words, from a run's ``masks`` block: "3 mm" when it was set in millimetres,
    else "5 px at 224", followed by what that came to in mm where the spacing was known."""
    if summary.get("dilation_mm") is not None:
        return f"{summary['dilation_mm']:g} mm"
    said = f"{summary.get('dilation_px', DILATION_PX):g} px at 224"
    margin = summary.get("margin_mm")
    if not margin:
        return said
    spread = (f"{margin['median']:.1f} mm" if margin["max"] - margin["min"] < 0.05
              else f"{margin['median']:.1f} mm, {margin['min']:.1f}-{margin['max']:.1f} mm across the scans")
    known = "" if margin["images"] == margin["of"] else f" on the {margin['images']} of {margin['of']} with a spacing"
    return f"{said} (about {spread}{known})"


def mask_summary(table, resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                 dilation_px: float = DILATION_PX, dilation_mm: float | None = None) -> dict:
    """Per tumour class (and over all): the mean of every score, the heatmap's and the centre blob's, each with a
    bootstrap interval that resamples patients where the file names give them. ``table``: one row per scored
    image with ``path``, ``label`` and the columns of :func:`score_against_mask`."""
    def summarise(rows) -> dict:
        patients = [patient_of(p) for p in rows["path"]]
        groups = patients if rows.shape[0] and all(patients) else None
        out = {"images": int(rows.shape[0]), "patients": len(set(patients)) if groups else None}
        optional = [key for key in OPTIONAL_SCORES if key in rows and rows[key].notna().all()]
        for key in (*SCORES, *(f"blob_{s}" for s in SCORES), "dilated_share", *optional):
            values = rows[key].to_numpy(dtype=np.float64)
            out[key] = {"mean": float(values.mean()) if len(values) else float("nan"),
                        "interval": list(grouped_bootstrap(values, groups, resamples, confidence, seed))}
        return out

    per_class = {name: summarise(table[table["label"] == name]) for name in sorted(set(table["label"]))}
    return {"overall": summarise(table), "per_class": per_class, "dilation_px": dilation_px,
            "dilation_mm": dilation_mm, "margin_mm": margin_summary(table), "heatmap_level": HEATMAP_LEVEL,
            "blob_sigma": BLOB_SIGMA, "confidence": confidence,
            "resampled": "patients" if table.shape[0] and all(patient_of(p) for p in table["path"]) else "images"}
