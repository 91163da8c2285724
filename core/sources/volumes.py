"""Scans as hospitals and research groups keep them: DICOM (one file, a multi-frame file, or a series of files, also
in a zip) and NIfTI (``.nii``, ``.nii.gz``), turned into 8-bit slices the model can read, with their pixel spacing.

What comes out is a :class:`Volume`: the slices' pixels, the spacing in millimetres, how the grey levels were set,
and what was withheld. Nothing identifying leaves this module. The DICOM dataset is read here and dropped here; a
Volume carries only geometry and display settings, plus the *names* of the identifying attributes that were present
and not kept (the DICOM PS3.15 basic de-identification profile's kind: names, IDs, dates, UIDs, institutions,
free text, private tags), so that a page can say what was removed without ever holding a value. Burned-in
annotation is flagged when the header says the pixels carry it.

Every input is bounded before it is decoded, from what its headers state: file and archive sizes, the number of
files in a zip and the sizes it states, the bytes a .nii.gz unpacks to (inflated no further than its header says),
frames, voxels, and the size each compressed frame declares (core.sources.codestreams). A deflated DICOM file is
known by pydicom's own reading of its meta group and refused before anything is inflated. A pixel spacing or voxel
size that is not a length (0, negative, NaN, infinite, over 50 mm) is no spacing; a rescale that is not a finite
number refuses the file; a series cut in two directions, or holding one image twice, is refused.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from core.sources.files import ImageRefused, size_text

# One limit for a scan's bytes, stored or unpacked (a DICOM series, the files a zip unpacks to, a NIfTI file once
# unzipped, its voxels counted at 32 bits at most), checked while a zip or a .nii.gz is inflated: at the voxel limit a
# series of 32-bit pixels is 200 MB, and a refused bomb stops here, half the 500 MB any one upload may cost.
MAX_SCAN_BYTES = 256 << 20
MAX_FILES = 2000                  # files in one series or zip
MAX_VOXELS = 96 * 512 * 512 * 2   # 50 M voxels: a 512 x 512 slab of 192 slices, ~200 MB as float32
MAX_SIDE = 4096
SPACING_MM = (0.01, 50.0)         # a pixel spacing or voxel size outside this (or not a number) is no spacing at all
AUTO_WINDOW = (0.5, 99.5)         # percentiles of the volume's values, when the file states no window
WINDOW_SAMPLE = 1 << 22           # voxels the automatic window is computed from: all of a small scan, evenly spread
BLOCK_VOXELS = 1 << 20            # voxels turned to 8 bits at a time (4 MB as float32, whatever the scan's size)
AXES = {2: "axial", 1: "coronal", 0: "sagittal"}

# Attributes of the PS3.15 basic profile that identify a patient, a visit or a place (by keyword), looked for only
# to say that they were present and not kept.
IDENTIFYING = ("PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex", "PatientAge",
               "OtherPatientIDs", "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers",
               "PatientMotherBirthName", "MilitaryRank", "EthnicGroup", "PatientComments", "AccessionNumber",
               "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianName",
               "PerformingPhysicianName", "OperatorsName", "NameOfPhysiciansReadingStudy", "StationName",
               "DeviceSerialNumber", "StudyID", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate",
               "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "StudyInstanceUID", "SeriesInstanceUID",
               "SOPInstanceUID", "FrameOfReferenceUID", "StudyDescription", "SeriesDescription", "ImageComments",
               "RequestingPhysician", "RequestedProcedureDescription", "AdditionalPatientHistory")


class ScanRefused(ImageRefused):
    """A DICOM or NIfTI input that cannot be used, with the reason in words."""


@dataclass(frozen=True)
class Volume:
    """Slices of one scan as 8-bit grey levels, and what a reader needs to know about them."""

    slices: np.ndarray                    # (n, rows, columns) uint8, for the chosen axis
    spacing_mm: tuple[float, float] | None  # (row, column) pixel spacing in millimetres, when the file states it
    kind: str                             # "DICOM" or "NIfTI"
    window: str                           # how grey levels were set, in words
    axis: str | None = None               # NIfTI: "axial", "coronal" or "sagittal"; DICOM: None (as acquired)
    withheld: tuple[str, ...] = ()        # identifying attributes present in the file and not kept (names only)
    private_tags: int = 0                 # private tags present and not kept
    burned_in: bool = False               # the header says the pixels carry burned-in annotation
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def count(self) -> int:
        return int(self.slices.shape[0])

    def image(self, index: int) -> Image.Image:
        """One slice as a greyscale PIL image, with its spacing in ``info["spacing_mm"]``."""
        if not 0 <= index < self.count:
            raise ScanRefused(f"slice {index + 1} does not exist; the scan has {self.count}")
        picture = Image.fromarray(self.slices[index], "L")
        picture.info["spacing_mm"] = self.spacing_mm
        return picture


# --------------------------------------------------------------------------------------------------
# Grey levels


def to_8_bit(values: np.ndarray, window: tuple[float, float] | None,
             rescale: tuple[float, float] = (1.0, 0.0)) -> tuple[np.ndarray, str]:
    """Values (any numeric type, any shape; times ``rescale``'s slope plus its intercept) to 0-255 through a window
    (centre, width); without one, the volume's 0.5th to 99.5th percentiles (of every voxel of a scan up to
    :data:`WINDOW_SAMPLE` voxels, of an even sample of a larger one). Returns the pixels and the window in words. Made
    block by block, so that a large scan never exists as float32 whole a second time."""
    values = np.asarray(values)
    low, high, said = _window_ends(values, window, rescale)
    pixels, any_finite = np.empty(values.shape, dtype=np.uint8), False
    step = max(1, BLOCK_VOXELS // max(1, values[:1].size))
    for start in range(0, len(values), step):
        block = _rescaled(values[start:start + step], rescale)
        finite = np.isfinite(block)
        any_finite = any_finite or bool(finite.any())
        scaled = np.clip((np.where(finite, block, low) - low) / (high - low), 0.0, 1.0)
        pixels[start:start + step] = np.round(scaled * 255)
    if not any_finite:
        raise ScanRefused("the scan holds no pixel value that is a number")
    return pixels, said


def _window_ends(values: np.ndarray, window: tuple[float, float] | None,
                 rescale: tuple[float, float]) -> tuple[float, float, str]:
    """The values that become black and white, and how they were chosen, in words."""
    if window is not None and window[1] > 0:
        low, high = window[0] - window[1] / 2, window[0] + window[1] / 2
        said = f"the window stored in the file (centre {window[0]:g}, width {window[1]:g})"
    else:
        low, high = _percentiles(values, rescale)
        said = (f"an automatic window: the scan's {AUTO_WINDOW[0]:g}th to {AUTO_WINDOW[1]:g}th percentiles "
                f"({low:g} to {high:g})")
    return low, (high if high > low else low + 1.0), said  # a flat scan: one grey, not a division by 0


def _rescaled(values: np.ndarray, rescale: tuple[float, float]) -> np.ndarray:
    """Values as float32, times the slope plus the intercept (never changing the caller's array)."""
    identity = rescale == (1.0, 0.0)
    block = values.astype(np.float32, copy=not identity)
    if not identity:
        block *= np.float32(rescale[0])
        block += np.float32(rescale[1])
    return block


def _percentiles(values: np.ndarray, rescale: tuple[float, float]) -> tuple[float, float]:
    """The automatic window's ends, from every k-th voxel along the scan's longest axis (k = 1 up to
    :data:`WINDOW_SAMPLE` voxels): a copy of a few MB, never of the whole scan."""
    if values.ndim == 0 or values.size == 0:
        raise ScanRefused("the scan holds no pixel value that is a number")
    longest = int(np.argmax(values.shape))
    every = -(-values.size // WINDOW_SAMPLE)
    sample = _rescaled(values[(slice(None),) * longest + (slice(None, None, every),)], rescale)
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        raise ScanRefused("the scan holds no pixel value that is a number")
    low, high = np.percentile(sample, AUTO_WINDOW)
    return float(low), float(high)


def valid_spacing(values) -> tuple[float, float] | None:
    """A (row, column) pixel spacing in millimetres if both values are numbers within :data:`SPACING_MM`, else None:
    a spacing of 0, -1, NaN or infinity is no spacing (every page, report and margin divides or scales by it)."""
    try:
        spacing = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        return None
    if len(spacing) != 2 or not all(SPACING_MM[0] <= v <= SPACING_MM[1] for v in spacing):
        return None  # NaN fails every comparison, so it is refused here too
    return spacing


def _check_voxels(shape: tuple[int, ...], what: str) -> None:
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels > MAX_VOXELS:
        raise ScanRefused(f"the {what} holds {voxels:,} voxels, over the {MAX_VOXELS:,} limit")
    if len(shape) >= 2 and max(shape[-2:]) > MAX_SIDE:
        raise ScanRefused(f"the {what}'s slices are {shape[-2]} x {shape[-1]} pixels, over the {MAX_SIDE} limit")


# --------------------------------------------------------------------------------------------------
# DICOM


DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: pydicom inflates it whole, unbounded
# The values of Photometric Interpretation a refusal may name (DICOM PS3.3, C.7.6.3.1.2): any other value is the
# file's own text, which is never repeated.
PHOTOMETRIC = ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK", "YBR_FULL",
               "YBR_FULL_422", "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "XYB")
SAME_DIRECTION = 0.01   # largest difference between two files' direction cosines that is still one orientation
SAME_PLACE_MM = 0.01    # two slices closer than this along the slice normal are at one position


@functools.cache
def _pydicom_without_value_checks() -> None:
    """pydicom checks values as it reads them and logs or warns with the value itself ("Invalid value for VR AS:
    '45 yrs'"): with an identifying attribute, that would put it in the server's log. This process never wants
    that: the checks are turned off and pydicom's logger silenced, once, for good (a setting restored after each
    read would race between the dashboard's sessions)."""
    import logging

    import pydicom

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)


@contextlib.contextmanager
def quiet_pydicom():
    """Around every pydicom read: value checks off and pydicom's warnings (which can quote values) dropped."""
    import warnings

    _pydicom_without_value_checks()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _file_meta(blob: bytes):
    """A DICOM file's meta group (0002,xxxx), read by the very parser dcmread uses before it decides how to read
    the rest, which stops where the dataset begins: a deflated dataset is not inflated here."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    stream = io.BytesIO(blob)
    with quiet_pydicom():
        read_preamble(stream, False)  # InvalidDicomError without the 'DICM' marker
        return _read_file_meta_info(stream)


def transfer_syntax(blob: bytes) -> str | None:
    """The transfer syntax UID a DICOM file's meta group states (as dcmread will read it), or None."""
    try:
        syntax = _file_meta(blob).get("TransferSyntaxUID")
    except Exception:  # not DICOM, or a damaged meta group
        return None
    return None if syntax is None else str(syntax)


def _dataset(name: str, blob: bytes, pixels: bool = True):
    """A DICOM file's dataset (its header alone, without ``pixels``), refused in a sentence when it is not DICOM, is
    damaged, or is deflated: dcmread would inflate that whole, without a bound, even to read its header."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        if _file_meta(blob).get("TransferSyntaxUID") == DEFLATED:  # a meta group that cannot be read: refused
            raise ScanRefused(f"{name} is deflate-compressed DICOM, which is refused: it would be unpacked whole, "
                              "without a bound, before anything could be checked")
        # Closed once read: the dataset keeps its stream, and with it the whole file, for reads it defers (none)
        with quiet_pydicom(), io.BytesIO(blob) as stream:
            return pydicom.dcmread(stream, force=False, stop_before_pixels=not pixels)
    except ScanRefused:
        raise
    except InvalidDicomError:
        raise ScanRefused(f"{name} is not a DICOM file: it lacks the marker every DICOM file begins with") from None
    except Exception:  # damaged files raise many types
        raise ScanRefused(f"{name} is a damaged DICOM file: its header cannot be read") from None


def _withheld(dataset) -> tuple[tuple[str, ...], int]:
    """The identifying attributes present (by keyword; their values are never looked at) and the private tags."""
    from pydicom.datadict import tag_for_keyword

    present = tuple(k for k in IDENTIFYING if tag_for_keyword(k) in dataset)
    private = sum(1 for tag in dataset.keys() if tag.is_private and not tag.is_private_creator)
    return present, private


def _burned_in(dataset) -> bool:
    """Whether the header says the pixels carry burned-in annotation, at its top or anywhere within it (an enhanced
    file states it in its shared or per-frame functional groups)."""
    def says_yes(value) -> bool:
        values = value if isinstance(value, (list, tuple)) else [value]
        return any(str(v).strip().upper() == "YES" for v in values)

    with quiet_pydicom():
        return any(element.keyword == "BurnedInAnnotation" and says_yes(element.value)
                   for element in dataset.iterall())


def _stored_window(dataset) -> tuple[float, float] | None:
    """The first window (centre, width) the file states, if any."""
    from pydicom.multival import MultiValue

    def first(value):
        return value[0] if isinstance(value, MultiValue) else value

    centre, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if centre is None or width is None:
        return None
    try:
        window = float(first(centre)), float(first(width))
    except (TypeError, ValueError, IndexError):
        return None
    return window if all(np.isfinite(window)) else None


def _photometric(dataset) -> str | None:
    """The file's Photometric Interpretation if it is one of :data:`PHOTOMETRIC`, else None (never its own text)."""
    said = str(dataset.get("PhotometricInterpretation", "")).strip().upper()
    return said if said in PHOTOMETRIC else None


def _stated_shape(header, name: str) -> tuple[int, int, int]:
    """(frames, rows, columns) a file's header states, checked against the bounds before any pixel is decoded."""
    try:
        rows, columns = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
        frames = int(header.get("NumberOfFrames", 1) or 1)
        samples = int(header.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError):
        raise ScanRefused(f"{name} states its size in a form that is not a number") from None
    if min(rows, columns, frames) < 1:
        raise ScanRefused(f"{name} states {frames} frames of {rows} x {columns} pixels: not an image")
    _check_voxels((frames, rows, columns), f"file {name}")
    if samples != 1:
        kind = _photometric(header)
        raise ScanRefused(f"{name} is a colour image{f' ({kind})' if kind else ''}, not an MR slice")
    return frames, rows, columns


def _rescale(dataset, name: str) -> tuple[float, float]:
    """The rescale slope and intercept the file states (1 and 0 where it states none), refused unless both are
    finite numbers and the slope is not zero (which would erase the picture)."""
    def number(keyword: str, default: float) -> float:
        value = dataset.get(keyword)
        return default if value is None or value == "" else float(value)

    try:
        slope, intercept = number("RescaleSlope", 1.0), number("RescaleIntercept", 0.0)
    except (TypeError, ValueError):
        slope = intercept = float("nan")
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise ScanRefused(f"{name} states a rescale slope or intercept that is not a finite number (or a slope of "
                          "zero), so its pixel values cannot be trusted")
    return slope, intercept


def _check_stored_pixels(dataset, name: str, shape: tuple[int, int, int]) -> None:
    """Before decoding: uncompressed pixel data is not far larger than the header's size, and every compressed frame
    declares exactly the header's rows and columns in one component (a decoder allocates what the frame declares)."""
    from pydicom.uid import (
        JPEG2000TransferSyntaxes,
        JPEGLSTransferSyntaxes,
        JPEGTransferSyntaxes,
        RLETransferSyntaxes,
        UncompressedTransferSyntaxes,
    )

    frames, rows, columns = shape
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    if syntax in UncompressedTransferSyntaxes:
        if len(dataset.PixelData) > 8 * frames * rows * columns:
            raise ScanRefused(f"{name} holds {len(dataset.PixelData):,} bytes of pixels, far more than the {frames} "
                              f"frames of {rows} x {columns} its header states")
    elif syntax in (*JPEGTransferSyntaxes, *JPEGLSTransferSyntaxes, *JPEG2000TransferSyntaxes):
        for declared in _declared_frames(dataset, name, frames):
            if declared != (rows, columns, 1):
                raise ScanRefused(f"{name}: a compressed frame declares another size than the {rows} x {columns} "
                                  "pixels of one sample its header states (or none), so it is not decoded")
    elif syntax not in RLETransferSyntaxes:  # RLE decodes into the rows and columns the header states
        raise ScanRefused(f"{name}: its pixels are stored in a form this reader does not decode")


def _declared_frames(dataset, name: str, frames: int):
    """The size each compressed frame declares, frame by frame as pydicom's decoder will find them (with the
    extended offset table where the file has a usable one)."""
    from pydicom.encaps import generate_fragmented_frames

    from core.sources.codestreams import fragments_declare

    offsets = None
    if "ExtendedOffsetTable" in dataset and "ExtendedOffsetTableLengths" in dataset:
        offsets = (dataset.ExtendedOffsetTable, dataset.ExtendedOffsetTableLengths)
        offsets = offsets if len(offsets[0]) == len(offsets[1]) else None
    try:
        with quiet_pydicom():
            for fragments in generate_fragmented_frames(dataset.PixelData, number_of_frames=frames,
                                                        extended_offsets=offsets):
                yield fragments_declare(fragments)
    except ScanRefused:
        raise
    except Exception:  # a damaged encapsulation raises many types
        raise ScanRefused(f"{name} is a damaged DICOM file: its compressed frames cannot be told apart") from None


def _decode_into(out: np.ndarray, dataset, name: str, shape: tuple[int, int, int]) -> None:
    """A file's pixels after the modality LUT (its rescale slope and intercept), as float32 (frames, rows, columns),
    written into ``out``; MONOCHROME1 turned so that low values are dark, as in MONOCHROME2."""
    from pydicom.pixels import apply_modality_lut

    if "PixelData" not in dataset:
        raise ScanRefused(f"{name} holds no image (no pixel data): a report or a structured document?")
    _check_stored_pixels(dataset, name, shape)
    slope, intercept = _rescale(dataset, name)
    try:
        with quiet_pydicom():
            pixels = dataset.pixel_array
    except Exception:  # a transfer syntax no installed decoder handles, or damaged pixel data
        raise ScanRefused(f"{name}: its pixels cannot be decoded ({_syntax_name(dataset)}: no decoder here reads "
                          "it, or the pixel data is damaged)") from None
    if pixels.size != out.size:  # what was decoded, not what the header said
        raise ScanRefused(f"{name} decodes to {pixels.size:,} pixels, not the {shape[0]} frames of {shape[1]} x "
                          f"{shape[2]} its header states")
    pixels = pixels.reshape(shape)
    if "ModalityLUTSequence" in dataset:  # a lookup table rather than a line: pydicom applies it
        try:
            with quiet_pydicom():
                out[...] = apply_modality_lut(pixels, dataset)
        except Exception:  # a table shorter than it says, or of 99 bits, raises many types
            raise ScanRefused(f"{name} states a modality lookup table that does not match its own description (its "
                              "length or bits), so its pixel values cannot be trusted; export the scan again "
                              "without it") from None
    else:
        np.multiply(pixels, np.float32(slope), out=out, dtype=np.float32)
        out += np.float32(intercept)
    if _photometric(dataset) == "MONOCHROME1":
        np.negative(out, out=out)  # MONOCHROME1: low values are white; flipped here so that the window reads alike


def _syntax_name(dataset) -> str:
    """The transfer syntax in words if it is one pydicom knows, never the file's own text."""
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    known = syntax is not None and syntax.is_transfer_syntax and syntax.name != str(syntax)
    return f"stored as {syntax.name}" if known else "stored in an unknown form"


def _orientation(dataset) -> np.ndarray | None:
    """The file's six direction cosines, if it states six numbers."""
    try:
        cosines = np.array(dataset.ImageOrientationPatient, dtype=float)
    except (AttributeError, ValueError, TypeError):
        return None
    return cosines if cosines.shape == (6,) and np.isfinite(cosines).all() else None


def _position(dataset) -> tuple[float, float]:
    """Where a file sits in its series: files with geometry first, along the slice normal; then the others, by
    instance number."""
    orientation = _orientation(dataset)
    try:
        normal = np.cross(orientation[:3], orientation[3:])
        return 0.0, float(np.dot(normal, np.array(dataset.ImagePositionPatient, dtype=float)))
    except (AttributeError, ValueError, TypeError):
        try:
            return 1.0, float(dataset.get("InstanceNumber", 0) or 0)
        except (TypeError, ValueError):
            return 1.0, 0.0


@dataclass(frozen=True)
class _Part:
    """One file of a series: its header (no pixels), its stated (frames, rows, columns) and where it sits, and how
    to get its bytes (a file of a zip is inflated each time it is read, so that a series never is whole)."""
    name: str
    load: Callable[[], bytes]
    header: object
    shape: tuple[int, int, int]
    place: tuple[float, float]


def _one_geometry(parts: list[_Part]) -> None:
    """Refuse a series whose files are cut in different directions, or which holds one image twice (the same
    instance UID, or two images at one position along the slice normal): stacked, they would make a wrong volume."""
    cosines = [c for c in (_orientation(p.header) for p in parts) if c is not None]
    if any(np.abs(c - cosines[0]).max() > SAME_DIRECTION for c in cosines[1:]):
        raise ScanRefused("the files of this series are cut in different directions (axial and sagittal slices, "
                          "say); upload the files of one direction at a time")
    uids = [str(p.header.get("SOPInstanceUID", "") or "") for p in parts]
    if len({u for u in uids if u}) < len([u for u in uids if u]):
        raise ScanRefused("two of the files are the same image (they share an instance UID); remove the copy and "
                          "upload the series again")
    placed = sorted(p.place[1] for p in parts if p.place[0] == 0.0)
    if any(b - a < SAME_PLACE_MM for a, b in zip(placed, placed[1:])):
        raise ScanRefused("two of the files lie at the same position along the slice normal, which a series of "
                          "slices cannot; remove the extra file and upload the series again")


def _given(files: list[tuple[str, bytes]]) -> list[tuple[str, Callable[[], bytes]]]:
    """Files given as bytes, counted and sized as one series, each with a way to get its bytes back."""
    if len(files) > MAX_FILES:
        raise ScanRefused(f"{len(files)} files is over the {MAX_FILES}-file limit for one series")
    total = sum(len(blob) for _, blob in files)
    if total > MAX_SCAN_BYTES:
        raise ScanRefused(f"the series is {size_text(total)}, over the {size_text(MAX_SCAN_BYTES)} limit")
    return [(name, functools.partial(bytes, blob)) for name, blob in files]  # bytes(a bytes object) is no copy


def _series(files: list[tuple[str, Callable[[], bytes]]]) -> list[_Part]:
    """The files of one series (:func:`_given`, or a zip's :func:`_zip_files`), from their headers alone (no pixel
    decoded, no file's bytes kept): one series and one geometry, sorted along the slice normal (else by instance
    number), their voxels bounded."""
    if not files:
        raise ScanRefused("no DICOM file was given")
    parts = []
    for name, load in files:
        header = _dataset(name, load(), pixels=False)
        parts.append(_Part(name, load, header, _stated_shape(header, name), _position(header)))
    series = {str(p.header.get("SeriesInstanceUID", "")) for p in parts}
    if len(series) > 1:
        raise ScanRefused(f"the files belong to {len(series)} different series; upload one series at a time")
    _one_geometry(parts)
    parts.sort(key=lambda p: p.place)
    _check_voxels((sum(int(np.prod(p.shape)) for p in parts),), "series")
    for part in parts[1:]:
        if part.shape[1:] != parts[0].shape[1:]:
            raise ScanRefused(f"{part.name} is {part.shape[2]} x {part.shape[1]} pixels, unlike the series' other "
                              f"files ({parts[0].shape[2]} x {parts[0].shape[1]})")
    return parts


def read_dicom(files: list[tuple[str, bytes]]) -> Volume:
    """One DICOM file, a multi-frame file, or the files of one series (in any order: sorted by position along the
    slice normal, else by instance number). Every bound is checked from the headers before any pixel is decoded;
    then the files are decoded one at a time into one float32 volume."""
    return _read_series(_series(_given(files)))


def _read_series(parts: list[_Part]) -> Volume:
    values = np.empty((sum(p.shape[0] for p in parts), *parts[0].shape[1:]), dtype=np.float32)
    at = 0
    for part in parts:
        _decode_into(values[at:at + part.shape[0]], _dataset(part.name, part.load()), part.name, part.shape)
        at += part.shape[0]
    withheld, private = set(), 0
    for part in parts:
        present, count = _withheld(part.header)
        withheld.update(present)
        private += count
    first = parts[0].header
    inverted = _photometric(first) == "MONOCHROME1"
    window = _stored_window(first)
    if window is not None and inverted:
        window = (-window[0], window[1])
    pixels, said = to_8_bit(values, window)
    spacing = valid_spacing(first.get("PixelSpacing") or ())
    notes = ("MONOCHROME1: shown inverted, so that dense tissue is bright",) if inverted else ()
    return Volume(pixels, spacing, "DICOM", said, None, tuple(k for k in IDENTIFYING if k in withheld), private,
                  any(_burned_in(p.header) for p in parts), notes)


def dicom_voxels(files: list[tuple[str, bytes]]) -> int:
    """The voxels (bytes, at 8 bits) a DICOM series will hold once read, from its headers alone; ScanRefused with the
    reason read_dicom would give, for what the headers already show."""
    return sum(int(np.prod(p.shape)) for p in _series(_given(files)))


def unzip_series(blob: bytes) -> list[tuple[str, bytes]]:
    """The files of a zip (a DICOM series), folders and hidden files skipped, inflated (:func:`_zip_files`)."""
    return [(name, load()) for name, load in _zip_files(blob)]


def _zip_files(blob: bytes) -> list[tuple[str, Callable[[], bytes]]]:
    """The files of a zip (a DICOM series), folders and hidden files skipped, each with a way to inflate it when it
    is read, never all at once (a series of 32-bit pixels at the voxel limit would be 200 MB of files beside its
    decoded volume). Their sizes, as the zip states them, must add up to at most :data:`MAX_SCAN_BYTES` before
    anything is inflated; each is inflated to its stated size and no further (zipfile stops there, and a file whose
    data goes on fails its checksum)."""
    if len(blob) > MAX_SCAN_BYTES:
        raise ScanRefused(f"the zip is {size_text(len(blob))}, over the {size_text(MAX_SCAN_BYTES)} limit")
    try:
        archive = zipfile.ZipFile(io.BytesIO(blob))
    except zipfile.BadZipFile:
        raise ScanRefused("not a readable zip file") from None
    members = [m for m in archive.infolist() if not m.is_dir() and not m.filename.rsplit("/", 1)[-1].startswith(".")
               and "__MACOSX" not in m.filename]
    if len(members) > MAX_FILES:
        raise ScanRefused(f"the zip holds {len(members)} files, over the {MAX_FILES}-file limit")
    if any(m.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) for m in members):
        # bzip2 and LZMA inflate a whole read at once, without a bound: a few KB could become gigabytes
        raise ScanRefused("a file in the zip is compressed in a way this reader does not take (only stored or "
                          "deflated files, as every DICOM export writes)")
    if sum(m.file_size for m in members) > MAX_SCAN_BYTES:
        raise ScanRefused(f"the zip would unpack to over {size_text(MAX_SCAN_BYTES)}, the limit for one series")
    if not members:
        raise ScanRefused("the zip holds no file")
    return [(member.filename, functools.partial(_inflated, archive, member)) for member in members]


def _inflated(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    try:
        with archive.open(member) as handle:
            # Asking for the stated size, not more: a larger request would let one step inflate that much.
            return handle.read(member.file_size)
    except (RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error, EOFError, OSError):
        raise ScanRefused("a file in the zip cannot be unpacked (encrypted, damaged, or compressed in a way this "
                          "reader does not know)") from None


# --------------------------------------------------------------------------------------------------
# NIfTI


NIFTI_HEADER_BYTES = 540  # a NIfTI-2 header; a NIfTI-1 header is the first 348 of them


class _GzipStream(gzip.GzipFile):
    """A gzipped file that fills a buffer a megabyte at a time: GzipFile's own readinto (which nibabel reads a volume
    with) inflates the whole request into a new bytes object first, a second copy of the volume."""

    def readinto(self, buffer) -> int:
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view):
            chunk = self.read(min(len(view) - done, 1 << 20))
            if not chunk:
                break
            view[done:done + len(chunk)] = chunk
            done += len(chunk)
        return done


def _nifti_stream(blob: bytes) -> io.BufferedIOBase:
    """The file's bytes as a stream, inflated as it is read when the file is gzipped."""
    return _GzipStream(fileobj=io.BytesIO(blob)) if blob[:2] == b"\x1f\x8b" else io.BytesIO(blob)


def _nifti_header(blob: bytes, what: str = "volume"):
    """A NIfTI-1 or NIfTI-2 file's header, from its first bytes alone (a .nii.gz inflated no further), with everything
    it states checked: a 3-D shape, the voxel and side limits, voxels that are plain numbers, and the bytes the file
    will unpack to, within :data:`MAX_SCAN_BYTES`. So a .nii.gz is later inflated exactly as far as its header says,
    and only when nothing read later would refuse it. Also whether it states a size for each voxel axis: nibabel
    reads a size of 0 (or NaN) as 1 mm, which is no size the file gave."""
    import nibabel

    if len(blob) > MAX_SCAN_BYTES:
        raise ScanRefused(f"the file is {size_text(len(blob))}, over the {size_text(MAX_SCAN_BYTES)} limit; save it "
                          "gzipped (.nii.gz), or as float32 or 16-bit integers (nibabel: "
                          "img.set_data_dtype(np.float32))")
    try:
        with _nifti_stream(blob) as stream:
            head = stream.read(NIFTI_HEADER_BYTES)
    except (OSError, EOFError, zlib.error):
        raise ScanRefused("a damaged .gz file") from None
    # The header's first field is its own size, in either byte order: 348 for NIfTI-1, 540 for NIfTI-2.
    sizes = {int.from_bytes(head[:4], order) for order in ("little", "big")}
    kind = nibabel.Nifti1Header if 348 in sizes else nibabel.Nifti2Header if 540 in sizes else None
    try:
        stated = kind(head[:kind.template_dtype.itemsize], check=False)["pixdim"][1:4]
        header = kind(head[:kind.template_dtype.itemsize], check=True)
    except Exception:  # no NIfTI header size, or a damaged header
        raise ScanRefused("not a readable NIfTI file (.nii or .nii.gz)") from None
    _check_nifti_shape(header, what)
    return header, bool(np.all(np.isfinite(stated) & (stated > 0)))


def _check_nifti_shape(header, what: str) -> None:
    shape = tuple(int(s) for s in header.get_data_shape())
    if len(shape) < 3 or any(s > 1 for s in shape[3:]):
        raise ScanRefused(f"the file holds an image of shape {shape}; a 3-D {what} is needed (one time point)")
    _check_voxels(shape[:3], what)
    if max(shape[:3]) > MAX_SIDE:
        raise ScanRefused(f"the {what} is {shape[0]} x {shape[1]} x {shape[2]}; no side may be over {MAX_SIDE}")
    dtype = header.get_data_dtype()
    if dtype.kind not in "uif" or dtype.fields:
        raise ScanRefused(f"the {what}'s voxels are not plain numbers (colour or complex values)")
    # What is held once read: the header and its extensions (nibabel keeps them), and the voxels at no more than 32
    # bits each (wider ones are read a slab at a time into float32, :func:`_stored_voxels`).
    offset = int(header.get_data_offset())
    held = offset + int(np.prod(shape[:3])) * min(dtype.itemsize, 4)
    if offset < 0 or held > MAX_SCAN_BYTES:
        raise ScanRefused(f"the {what} would unpack to {size_text(max(held, 0))} (its voxels at 32 bits, and its "
                          f"header extensions), over the {size_text(MAX_SCAN_BYTES)} limit; save it with fewer voxels "
                          "or without extensions")


def nifti_voxels(blob: bytes) -> int:
    """The voxels (bytes, at 8 bits) a NIfTI file will hold once read, from its header alone; ScanRefused with the
    reason read_nifti would give, for what the header already shows."""
    return int(np.prod(_nifti_header(blob)[0].get_data_shape()[:3]))


def _nifti_ras(blob: bytes, what: str = "volume") -> tuple[np.ndarray, list[float], tuple[float, float]]:
    """A NIfTI-1 or NIfTI-2 file's voxels turned to RAS (nibabel's closest canonical orientation), as stored (no
    float copy of the whole volume), their sizes in mm along each axis (NaN where the file states none), and the
    (slope, intercept) that turns them into values; every size is bounded before the voxels are read, which read
    exactly the bytes the header states."""
    import nibabel

    header, sized = _nifti_header(blob, what)
    kind = nibabel.Nifti2Image if isinstance(header, nibabel.Nifti2Header) else nibabel.Nifti1Image
    try:
        with _nifti_stream(blob) as stream:
            image = kind.from_stream(stream)
            stored, rescale = _stored_voxels(image.dataobj)
    except Exception:  # truncated or damaged voxel data
        raise ScanRefused(f"the {what}'s voxels cannot be read: the file is truncated or damaged") from None
    try:
        if not np.isfinite(image.affine).all():
            raise ValueError("an affine that is not numbers")
        canonical = nibabel.as_closest_canonical(kind(stored, image.affine, image.header))
        data = np.asanyarray(canonical.dataobj)  # flips and transposes of ``stored``: views, no copy
    except Exception:  # nibabel's orientation code raises several types
        raise ScanRefused(f"the {what}'s orientation cannot be worked out from the file (its affine is not a set of "
                          "numbers that place the voxels)") from None
    zooms = [float(z) if sized else float("nan") for z in canonical.header.get_zooms()[:3]]
    return data, zooms, rescale


def _stored_voxels(proxy) -> tuple[np.ndarray, tuple[float, float]]:
    """A NIfTI file's voxels (nibabel's proxy of them) as stored, three axes, and the (slope, intercept) that turns
    them into values. Voxels wider than 32 bits (float64, nibabel's default for a float array; 64-bit integers) are
    read a slab at a time, scaled, into one float32 array: read whole at their own width, then turned to 8 bits,
    they would cost twice a float32 volume's memory."""
    if proxy.dtype.itemsize <= 4:
        stored = proxy.get_unscaled()
        return stored.reshape(stored.shape[:3]), (float(proxy.slope), float(proxy.inter))  # a time axis of 1 dropped
    shape = proxy.shape[:3]
    values = np.empty(shape, np.float32, order="F")  # the file's own order: each slab is one run of its bytes
    step = max(1, BLOCK_VOXELS // (shape[0] * shape[1]))
    for start in range(0, shape[2], step):
        slab = values[:, :, start:start + step]
        slab[...] = proxy[:, :, start:start + step].reshape(slab.shape)  # read, and scaled, as float64
    return values, (1.0, 0.0)


def _cut(data: np.ndarray, axis: int) -> np.ndarray:
    """RAS voxels -> slices along ``axis`` as pictures: (slices, rows, columns), rows pointing up the second
    remaining axis."""
    moved = np.moveaxis(data, axis, 0)                 # (slices, first remaining axis, second)
    return np.flip(np.swapaxes(moved, 1, 2), axis=1)


def read_nifti(blob: bytes, axis: int = 2) -> Volume:
    """A NIfTI-1 or NIfTI-2 file (``.nii``, or gzipped ``.nii.gz``), turned to RAS (nibabel's closest canonical
    orientation) and cut along ``axis`` (2 axial, 1 coronal, 0 sagittal). An axial slice is shown with the patient's
    left on the left of the picture and anterior at the top; a coronal one with the left on the left and superior at
    the top; a sagittal one with anterior on the right and superior at the top."""
    if axis not in AXES:
        raise ScanRefused(f"axis {axis} is not one of 0 (sagittal), 1 (coronal), 2 (axial)")
    data, zooms, rescale = _nifti_ras(blob)
    kept = [a for a in range(3) if a != axis]
    spacing = valid_spacing((zooms[kept[1]], zooms[kept[0]]))
    pixels, said = to_8_bit(_cut(data, axis), None, rescale)
    return Volume(pixels, spacing, "NIfTI", said, AXES[axis],
                  notes=("shown in RAS orientation: the patient's left on the left of the picture",))


def nifti_mask_slice(blob: bytes, index: int, shape: tuple[int, int, int]) -> np.ndarray:
    """The tumour in a NIfTI label volume (any value above zero: every label of a segmentation) on slice ``index``
    (from 0) of its scan, cut and oriented exactly as the scan's slice is (:func:`dataset_slice`: axial). ``shape``:
    the scan's slices, (count, rows, columns); a label volume of another shape belongs to another scan."""
    data, _, rescale = _nifti_ras(blob, "mask volume")
    slices = _cut(data, 2)
    if tuple(slices.shape) != tuple(shape):
        raise ScanRefused(f"the mask volume cuts into {slices.shape[0]} slices of {slices.shape[2]} x "
                          f"{slices.shape[1]}, its scan into {shape[0]} of {shape[2]} x {shape[1]}: it belongs to "
                          "another volume")
    return np.ascontiguousarray(_rescaled(slices[index], rescale) > 0)


SLICE_ENV = "BRAIN_MRI_VOLUME_SLICE"  # which slice of a volume a dataset file stands for: "middle" or a number from 1


def is_volume_bytes(blob: bytes) -> bool:
    """Whether bytes are a DICOM file (the 'DICM' marker) or a NIfTI file, plain or gzipped (its magic string)."""
    if blob[128:132] == b"DICM" or blob[344:348] in (b"n+1\0", b"ni1\0") or blob[4:8] == b"n+2\0":
        return True
    if blob[:2] == b"\x1f\x8b":
        try:
            head = gzip.GzipFile(fileobj=io.BytesIO(blob)).read(540)
        except (OSError, EOFError):
            return False
        return head[344:348] in (b"n+1\0", b"ni1\0") or head[4:8] == b"n+2\0"
    return False


def stated_slice(count: int) -> int:
    """The slice a volume in a dataset folder stands for: $BRAIN_MRI_VOLUME_SLICE ("middle", the default, or a
    number from 1), refused with a sentence when the volume has fewer slices."""
    import os

    said = os.environ.get(SLICE_ENV, "middle").strip().lower() or "middle"
    if said == "middle":
        return count // 2
    if not said.isdigit() or int(said) < 1:
        raise ScanRefused(f"{SLICE_ENV}={said!r} is neither 'middle' nor a slice number from 1")
    if int(said) > count:
        raise ScanRefused(f"the volume has {count} slices, so slice {said} ({SLICE_ENV}) does not exist")
    return int(said) - 1


def use_slice(setting: str) -> None:
    """Make ``setting`` ("middle" or a slice number from 1) the slice every DICOM or NIfTI file in a dataset folder
    stands for, in this process and the decoding processes it starts (through the environment); refused with a
    sentence when it is neither."""
    import os

    said = str(setting).strip().lower()
    if said != "middle" and not (said.isdigit() and int(said) >= 1):
        raise ScanRefused(f"volume slice {setting!r} is neither 'middle' nor a slice number from 1")
    os.environ[SLICE_ENV] = said


def dataset_slice(blob: bytes, name: str = "scan") -> Image.Image:
    """The stated slice (:func:`stated_slice`) of a DICOM or NIfTI file in a dataset folder, as a picture with its
    pixel spacing and slice number in ``info``; NIfTI volumes are cut axially."""
    volume = read_dicom([(name, blob)]) if blob[128:132] == b"DICM" else read_nifti(blob)
    index = stated_slice(volume.count)
    picture = volume.image(index)
    picture.info.update(slice=index + 1, volume_kind=volume.kind, volume_shape=tuple(volume.slices.shape))
    return picture


def is_volume_file(name: str, blob: bytes) -> bool:
    """Whether an uploaded file is a scan volume (DICOM, by its 'DICM' marker; NIfTI, by its name; a zip) rather than
    a picture."""
    return (blob[128:132] == b"DICM" or name.lower().endswith((".nii", ".nii.gz", ".dcm", ".zip"))
            or blob[:4] == b"PK\x03\x04")


def scan_groups(files: list[tuple[str, bytes]]) -> tuple[list[list[tuple[str, bytes]]], list[tuple[str, bytes]]]:
    """Uploaded files sorted into scans: DICOM files of one series together (by the series' UID, read from the header
    only and not kept), each NIfTI file or zip on its own; and the other files, pictures, as they came."""
    series: dict[str, list[tuple[str, bytes]]] = {}
    alone, pictures = [], []
    for name, blob in files:
        if not is_volume_file(name, blob):
            pictures.append((name, blob))
        elif blob[128:132] == b"DICM":
            try:
                uid = str(_dataset(name, blob, pixels=False).get("SeriesInstanceUID", ""))
            except ScanRefused:  # damaged, deflated (never inflated here): read_dicom says what is wrong with it
                uid = f"unreadable:{name}"
            series.setdefault(uid, []).append((name, blob))
        else:
            alone.append([(name, blob)])
    return [*series.values(), *alone], pictures


def scan_name(files: list[tuple[str, bytes]]) -> str:
    """What a scan made of these uploaded files is called on a page: its file's name, or its first file's and how
    many more files of its series there are."""
    return files[0][0] if len(files) == 1 else f"{files[0][0]} and {len(files) - 1} more files of its series"


def scan_kind(files: list[tuple[str, bytes]]) -> str:
    """What a scan's uploaded files are: "NIfTI" (one .nii or .nii.gz file), "zip" (one zip) or "DICOM"."""
    if len(files) == 1:
        name, blob = files[0]
        if name.lower().endswith((".nii", ".nii.gz")):
            return "NIfTI"
        if name.lower().endswith(".zip") or blob[:4] == b"PK\x03\x04":
            return "zip"
    return "DICOM"


def read_scan(files: list[tuple[str, bytes]], axis: int = 2) -> Volume:
    """Whatever scan was given: a NIfTI file, a zip of a DICOM series, or DICOM files."""
    if scan_kind(files) == "NIfTI":
        return read_nifti(files[0][1], axis)
    return _read_series(_scan_parts(files))


def stated_voxels(files: list[tuple[str, bytes]]) -> int:
    """The voxels (bytes, at 8 bits) of the scan :func:`read_scan` would make of these files (:func:`stated_shape`)."""
    return int(np.prod(stated_shape(files)))


def stated_shape(files: list[tuple[str, bytes]]) -> tuple[int, int, int]:
    """The shape of the scan :func:`read_scan` would make of these files, from their headers alone (each file of a
    zip inflated in turn, within its bound, to reach them), so that a page can hold a budget before anything is
    decoded: a DICOM series' (frames, rows, columns), a NIfTI volume's three axes as stored (read_scan turns them to
    RAS before it cuts them). ScanRefused with the reason read_scan would give, for what the headers already show."""
    if scan_kind(files) == "NIfTI":
        return tuple(int(side) for side in _nifti_header(files[0][1])[0].get_data_shape()[:3])
    parts = _scan_parts(files)
    return sum(p.shape[0] for p in parts), *parts[0].shape[1:]


def _scan_parts(files: list[tuple[str, bytes]]) -> list[_Part]:
    """The DICOM files of a scan, or of the zip it is, from their headers (:func:`_series`)."""
    return _series(_zip_files(files[0][1]) if scan_kind(files) == "zip" else _given(files))
