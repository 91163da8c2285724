"""The figshare brain tumour release as published (Cheng et al.; doi:10.6084/m9.figshare.1512427): folders
``brainTumorDataPublic_*`` of MATLAB v7.3 files ``1.mat`` ... ``3064.mat`` and ``cvind.mat``, the release's own
patient-wise five-fold split.

Each ``.mat`` is an HDF5 file (read with h5py) holding a struct ``cjdata``: ``image`` (int16, mostly 512 x 512),
``label`` (1 meningioma, 2 glioma, 3 pituitary), ``PID`` (the patient, as MATLAB characters), ``tumorBorder`` (the
outline's x, y points) and ``tumorMask`` (the filled outline). MATLAB writes arrays column-major, so h5py returns them
transposed; they are turned back here.

Intensities become 8 bits by one documented window, the same wherever a slice is read (training, evaluation, the
dashboard): the slice's own 0.5th to 99.5th percentiles (:func:`core.sources.volumes.to_8_bit`), as the release
states no window.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.sources.files import ImageRefused, read_bytes, size_text

LABELS = {1: "meningioma", 2: "glioma", 3: "pituitary"}
MAX_MAT_BYTES = 16 << 20     # a 512 x 512 slice with its mask is about 0.8 MB
MAX_SIDE = 2048
RELEASE_FOLDER = re.compile(r"^brainTumorDataPublic", re.IGNORECASE)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class MatRefused(ImageRefused):
    """A .mat file that is not a slice of the figshare release, with the reason in words."""


@dataclass(frozen=True)
class FigshareSlice:
    pixels: np.ndarray        # (rows, columns) uint8, after the window
    label: str                # meningioma, glioma or pituitary
    patient: str              # the release's PID
    mask: np.ndarray | None   # (rows, columns) bool, the filled tumour outline
    window: str

    def image(self) -> Image.Image:
        return Image.fromarray(self.pixels, "L")


def is_mat(blob: bytes) -> bool:
    """A MATLAB v7.3 file: a 512-byte MATLAB header, then an HDF5 file."""
    return blob[:6] == b"MATLAB" and blob[512:520] == HDF5_SIGNATURE


MAX_DATASET_BYTES = MAX_SIDE * MAX_SIDE * 8


def _array(group, name: str, path: str, max_bytes: int = MAX_DATASET_BYTES) -> np.ndarray:
    """A dataset of the file, read only when it is a plain numeric array stored in the file itself and small enough:
    HDF5 can point a dataset at another file on the server (external storage, external links, virtual datasets),
    and its header can claim any size, so both are checked before a byte is read."""
    import h5py

    link = group.get(name, getlink=True)
    if link is None:
        raise MatRefused(f"{path} has no cjdata.{name}: not a slice of the figshare release")
    if not isinstance(link, h5py.HardLink):
        raise MatRefused(f"{path}: cjdata.{name} points outside the file; refused")
    dataset = group[name]
    if not isinstance(dataset, h5py.Dataset) or dataset.external or dataset.is_virtual:
        raise MatRefused(f"{path}: cjdata.{name} is not an array stored in the file; refused")
    if dataset.dtype.subdtype is not None or dataset.dtype.kind not in "iufb":
        raise MatRefused(f"{path}: cjdata.{name} holds {dataset.dtype}, not plain numbers")
    size = int(np.prod(dataset.shape, dtype=np.int64)) * dataset.dtype.itemsize
    if size > max_bytes:
        raise MatRefused(f"{path}: cjdata.{name} would take {size:,} bytes, over the {max_bytes:,}-byte limit")
    return np.asarray(dataset[()])


def _patient(codes: np.ndarray) -> str:
    """The patient ID from MATLAB's characters (UTF-16 code units, zero-padded)."""
    return "".join(chr(int(c)) for c in codes.ravel() if int(c) > 0).strip()


def read_mat(source: str | os.PathLike | bytes, name: str = "slice") -> FigshareSlice:
    """One slice of the release (a path or the file's bytes), refused with a sentence when it is not one."""
    import h5py

    from core.sources.volumes import to_8_bit

    blob = source if isinstance(source, bytes) else read_bytes(source, MAX_MAT_BYTES, "MATLAB file")
    path = name if isinstance(source, bytes) else os.path.basename(source)
    if len(blob) > MAX_MAT_BYTES:
        raise MatRefused(f"{path} is {size_text(len(blob))}, over the {size_text(MAX_MAT_BYTES)} limit")
    if not is_mat(blob):
        raise MatRefused(f"{path} is not a MATLAB v7.3 file (the release's .mat files are HDF5 inside)")
    try:
        with h5py.File(io.BytesIO(blob), "r") as handle:
            if "cjdata" not in handle:
                raise MatRefused(f"{path} has no cjdata struct: not a slice of the figshare release")
            group = handle["cjdata"]
            image = _array(group, "image", path).T
            label = int(np.asarray(_array(group, "label", path)).ravel()[0])
            patient = _patient(_array(group, "PID", path))
            mask = _array(group, "tumorMask", path).T.astype(bool) if "tumorMask" in group else None
    except MatRefused:
        raise
    except Exception as error:  # damaged HDF5 raises many types
        raise MatRefused(f"{path} is a damaged MATLAB file ({type(error).__name__})") from None
    if label not in LABELS:
        raise MatRefused(f"{path} has label {label}; the release uses 1 (meningioma), 2 (glioma), 3 (pituitary)")
    if image.ndim != 2 or min(image.shape) < 16:
        raise MatRefused(f"{path}: cjdata.image has shape {image.shape}, not a slice")
    if mask is not None and mask.shape != image.shape:
        raise MatRefused(f"{path}: the tumour mask is {mask.shape}, the image {image.shape}")
    pixels, window = to_8_bit(image, None)
    return FigshareSlice(pixels, LABELS[label], patient or "unknown", mask, window)


def read_label(path: str | os.PathLike) -> tuple[str, str]:
    """(class, patient) of a release slice, read without decoding its image (listing a release stays fast)."""
    import h5py

    blob = read_bytes(path, MAX_MAT_BYTES, "MATLAB file")
    if not is_mat(blob):
        raise MatRefused(f"{os.path.basename(path)} is not a MATLAB v7.3 file")
    try:
        with h5py.File(io.BytesIO(blob), "r") as handle:
            group = handle["cjdata"]
            label = int(_array(group, "label", str(path), 1024).ravel()[0])
            patient = _patient(_array(group, "PID", str(path), 4096))
    except MatRefused:
        raise
    except Exception as error:  # damaged, or not the release's
        raise MatRefused(f"{os.path.basename(path)} is not a readable slice of the release "
                         f"({type(error).__name__})") from None
    if label not in LABELS:
        raise MatRefused(f"{os.path.basename(path)} has label {label}; the release uses 1, 2 and 3")
    return LABELS[label], patient or "unknown"


def mat_image(source: str | os.PathLike | bytes) -> Image.Image:
    """A release slice as a picture, with its patient in ``info["patient"]``."""
    found = read_mat(source)
    picture = found.image()
    picture.info["patient"] = found.patient
    return picture


# --------------------------------------------------------------------------------------------------
# The release on disk


def is_release(root: str | os.PathLike) -> bool:
    """Whether a folder is the release: it holds brainTumorDataPublic_* folders (or is one) of numbered .mat files."""
    root = Path(root)
    folders = [p for p in root.iterdir() if p.is_dir() and RELEASE_FOLDER.match(p.name)] if root.is_dir() else []
    return bool(folders) or (RELEASE_FOLDER.match(root.name) is not None and any(root.glob("[0-9]*.mat")))


def release_files(root: str | os.PathLike) -> list[Path]:
    """The release's slice files, in the order of their numbers (cvind.mat and other files aside)."""
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and RELEASE_FOLDER.match(p.name)) or [root]
    files = [f for folder in folders for f in folder.iterdir() if f.is_file() and re.fullmatch(r"\d+\.mat", f.name)]
    return sorted(files, key=lambda f: int(f.stem))


def cv_folds(root: str | os.PathLike) -> dict[int, int] | None:
    """The release's own five folds from ``cvind.mat`` (slice number -> fold 1-5), or None when it is absent."""
    import h5py

    found = [p for p in [Path(root) / "cvind.mat", *Path(root).glob("*/cvind.mat")] if p.is_file()]
    if not found:
        return None
    blob = read_bytes(found[0], MAX_MAT_BYTES, "cvind.mat")
    try:
        with h5py.File(io.BytesIO(blob), "r") as handle:
            values = _array(handle, "cvind", "cvind.mat", 1 << 20).ravel().astype(np.float64)
    except MatRefused:
        raise
    except Exception as error:  # damaged or not the release's
        raise MatRefused(f"cvind.mat cannot be read ({type(error).__name__})") from None
    return {k + 1: fold for k, fold in enumerate(_fold_numbers(values))}


def _fold_numbers(values: np.ndarray) -> list[int]:
    """cvind.mat's values as fold numbers, refused unless each is a whole number from 1 to 10 (MATLAB stores them as
    doubles: 1.5 or NaN would otherwise be cut to a fold, or become one)."""
    wrong = values[~np.isfinite(values) | (values != np.round(values)) | (values < 1) | (values > 10)]
    if wrong.size:
        raise MatRefused(f"cvind.mat holds {wrong[0]:g} where a fold number should be (a whole number from 1 to 10; "
                         "the release's are 1 to 5); download the release's own cvind.mat again")
    return [int(value) for value in values]
