"""Scans as hospitals and research groups keep them: DICOM (one file, a multi-frame file, or a series of files, also
in a zip) and NIfTI (``.nii``, ``.nii.gz``), turned into 8-bit slices the model can read, with their pixel spacing.

What comes out is a :class:`Volume`: the slices' pixels, the spacing in millimetres, how the grey levels were set,
and what was withheld. Nothing identifying leaves this module. The DICOM dataset is read here and dropped here; a
Volume carries only geometry and display settings, plus the *names* of the identifying attributes that were present
and not kept (the DICOM PS3.15 basic de-identification profile's kind: names, IDs, dates, UIDs, institutions,
free text, private tags), so that a page can say what was removed without ever holding a value. Burned-in
annotation is flagged when the header says the pixels carry it.

Every input is bounded before it is decoded: file and archive sizes, the number of files in a zip and their
uncompressed total, frames, and voxels.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import io
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from core.sources.files import size_text
from core.sources.images import ImageRefused

MAX_SCAN_BYTES = 512 << 20        # one DICOM series, zip or NIfTI file, compressed
MAX_UNPACKED_BYTES = 1 << 30      # what a zip or a .nii.gz may unpack to
MAX_FILES = 2000                  # files in one series or zip
MAX_VOXELS = 96 * 512 * 512 * 2   # 50 M voxels: a 512 x 512 slab of 192 slices, ~200 MB as float32
MAX_SIDE = 4096
AUTO_WINDOW = (0.5, 99.5)         # percentiles of the volume's values, when the file states no window
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


def to_8_bit(values: np.ndarray, window: tuple[float, float] | None) -> tuple[np.ndarray, str]:
    """Values (any numeric type, any shape) to 0-255 through a window (centre, width); without one, the volume's
    0.5th to 99.5th percentiles. Returns the pixels and the window in words."""
    values = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(values)
    if not finite.any():
        raise ScanRefused("the scan holds no pixel value that is a number")
    if window is not None and window[1] > 0:
        low, high = window[0] - window[1] / 2, window[0] + window[1] / 2
        said = f"the window stored in the file (centre {window[0]:g}, width {window[1]:g})"
    else:
        low, high = (float(v) for v in np.percentile(values[finite], AUTO_WINDOW))
        said = (f"an automatic window: the scan's {AUTO_WINDOW[0]:g}th to {AUTO_WINDOW[1]:g}th percentiles "
                f"({low:g} to {high:g})")
    if high <= low:
        high = low + 1.0
    scaled = np.clip((np.where(finite, values, low) - low) / (high - low), 0.0, 1.0)
    return np.round(scaled * 255).astype(np.uint8), said


def _check_voxels(shape: tuple[int, ...], what: str) -> None:
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels > MAX_VOXELS:
        raise ScanRefused(f"the {what} holds {voxels:,} voxels, over the {MAX_VOXELS:,} limit")
    if len(shape) >= 2 and max(shape[-2:]) > MAX_SIDE:
        raise ScanRefused(f"the {what}'s slices are {shape[-2]} x {shape[-1]} pixels, over the {MAX_SIDE} limit")


# --------------------------------------------------------------------------------------------------
# DICOM


DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: pydicom inflates it whole, unbounded


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


def transfer_syntax(blob: bytes) -> str | None:
    """The transfer syntax UID from a DICOM file's meta group (0002,0010), read from the bytes without pydicom: the
    meta group is always explicit VR little endian, right after the 'DICM' marker."""
    head = blob[132:132 + 4096]
    at = head.find(b"\x02\x00\x10\x00UI")
    if at < 0 or at + 8 > len(head):
        return None
    length = int.from_bytes(head[at + 6:at + 8], "little")
    return head[at + 8:at + 8 + length].rstrip(b"\x00 ").decode("ascii", errors="replace")


def _dataset(name: str, blob: bytes):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        if transfer_syntax(blob) == DEFLATED:
            raise ScanRefused(f"{name} is deflate-compressed DICOM, which is refused: it would be unpacked whole, "
                              "without a bound, before anything could be checked")
        with quiet_pydicom():
            return pydicom.dcmread(io.BytesIO(blob), force=False)
    except ScanRefused:
        raise
    except InvalidDicomError:
        raise ScanRefused(f"{name} is not a DICOM file: it lacks the marker every DICOM file begins with") from None
    except Exception:  # noqa: BLE001 - damaged files raise many types
        raise ScanRefused(f"{name} is a damaged DICOM file: its header cannot be read") from None


def _withheld(dataset) -> tuple[tuple[str, ...], int]:
    """The identifying attributes present (by keyword; their values are never looked at) and the private tags."""
    from pydicom.datadict import tag_for_keyword

    present = tuple(k for k in IDENTIFYING if tag_for_keyword(k) in dataset)
    private = sum(1 for tag in dataset.keys() if tag.is_private and not tag.is_private_creator)
    return present, private


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


def _frames(dataset, name: str) -> np.ndarray:
    """The dataset's pixels after the modality LUT (rescale slope and intercept), as (frames, rows, columns)."""
    from pydicom.pixels import apply_modality_lut

    if "PixelData" not in dataset:
        raise ScanRefused(f"{name} holds no image (no pixel data): a report or a structured document?")
    try:
        rows, columns = int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise ScanRefused(f"{name} states its size in a form that is not a number") from None
    if min(rows, columns, frames) < 1:
        raise ScanRefused(f"{name} states {frames} frames of {rows} x {columns} pixels: not an image")
    _check_voxels((frames, rows, columns), f"file {name}")
    stored = len(dataset.PixelData) if not dataset.file_meta.TransferSyntaxUID.is_compressed else 0
    if stored > 8 * frames * rows * columns:
        raise ScanRefused(f"{name} holds {stored:,} bytes of pixels, far more than the {frames} frames of {rows} x "
                          f"{columns} its header states")
    if int(dataset.get("SamplesPerPixel", 1)) != 1:
        raise ScanRefused(f"{name} is a colour image ({dataset.get('PhotometricInterpretation')}), not an MR slice")
    try:
        with quiet_pydicom():
            pixels = dataset.pixel_array
    except Exception:  # noqa: BLE001 - a transfer syntax no installed decoder handles, or damaged pixel data
        syntax = getattr(dataset.file_meta, "TransferSyntaxUID", None)
        raise ScanRefused(f"{name}: its pixels cannot be decoded (stored as {getattr(syntax, 'name', syntax)}: no "
                          "decoder here reads it, or the pixel data is damaged)") from None
    if pixels.size != frames * rows * columns:  # what was decoded, not what the header said
        raise ScanRefused(f"{name} decodes to {pixels.size:,} pixels, not the {frames} frames of {rows} x {columns} "
                          "its header states")
    with quiet_pydicom():
        values = apply_modality_lut(pixels, dataset).astype(np.float32)
    return values.reshape(frames, rows, columns)


def _position(dataset) -> tuple[float, float]:
    """Where a file sits in its series: files with geometry first, along the slice normal; then the others, by
    instance number."""
    try:
        orientation = np.array(dataset.ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        return 0.0, float(np.dot(normal, np.array(dataset.ImagePositionPatient, dtype=float)))
    except (AttributeError, ValueError, TypeError):
        try:
            return 1.0, float(dataset.get("InstanceNumber", 0) or 0)
        except (TypeError, ValueError):
            return 1.0, 0.0


def read_dicom(files: list[tuple[str, bytes]]) -> Volume:
    """One DICOM file, a multi-frame file, or the files of one series (in any order: sorted by position along the
    slice normal, else by instance number)."""
    if not files:
        raise ScanRefused("no DICOM file was given")
    if len(files) > MAX_FILES:
        raise ScanRefused(f"{len(files)} files is over the {MAX_FILES}-file limit for one series")
    total = sum(len(blob) for _, blob in files)
    if total > MAX_SCAN_BYTES:
        raise ScanRefused(f"the series is {size_text(total)}, over the {size_text(MAX_SCAN_BYTES)} limit")
    datasets = [(name, _dataset(name, blob)) for name, blob in files]
    series = {str(d.get("SeriesInstanceUID", "")) for _, d in datasets}
    if len(series) > 1:
        raise ScanRefused(f"the files belong to {len(series)} different series; upload one series at a time")
    datasets.sort(key=lambda item: _position(item[1]))
    stacks, withheld, private, burned = [], set(), 0, False
    voxels = 0
    for name, dataset in datasets:
        frames = _frames(dataset, name)
        voxels += frames.size
        _check_voxels((voxels,), "series")
        if stacks and frames.shape[1:] != stacks[0].shape[1:]:
            raise ScanRefused(f"{name} is {frames.shape[2]} x {frames.shape[1]} pixels, unlike the series' other "
                              f"files ({stacks[0].shape[2]} x {stacks[0].shape[1]})")
        if str(dataset.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            frames = -frames  # MONOCHROME1: low values are white; flipped here so that the window reads alike
        stacks.append(frames)
        present, count = _withheld(dataset)
        withheld.update(present)
        private += count
        burned = burned or str(dataset.get("BurnedInAnnotation", "")).upper() == "YES"
    first = datasets[0][1]
    window = _stored_window(first)
    if window is not None and str(first.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        window = (-window[0], window[1])
    pixels, said = to_8_bit(np.concatenate(stacks), window)
    spacing = None
    if "PixelSpacing" in first:
        try:
            spacing = (float(first.PixelSpacing[0]), float(first.PixelSpacing[1]))
        except (TypeError, ValueError, IndexError):
            spacing = None
    notes = ("MONOCHROME1: shown inverted, so that dense tissue is bright",) \
        if str(first.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1" else ()
    return Volume(pixels, spacing, "DICOM", said, None, tuple(k for k in IDENTIFYING if k in withheld), private,
                  burned, notes)


def unzip_series(blob: bytes) -> list[tuple[str, bytes]]:
    """The files of a zip (a DICOM series), each bounded, their total bounded, folders and hidden files skipped."""
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
    if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
        raise ScanRefused(f"the zip would unpack to over {size_text(MAX_UNPACKED_BYTES)}")
    files, unpacked = [], 0
    for member in members:
        try:
            with archive.open(member) as handle:
                data = handle.read(MAX_UNPACKED_BYTES - unpacked + 1)  # the sizes a zip states can lie
        except (RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error, EOFError, OSError):
            raise ScanRefused("a file in the zip cannot be unpacked (encrypted, damaged, or compressed in a way "
                              "this reader does not know)") from None
        unpacked += len(data)
        if unpacked > MAX_UNPACKED_BYTES:
            raise ScanRefused(f"the zip unpacks to over {size_text(MAX_UNPACKED_BYTES)}")
        files.append((member.filename, data))
    if not files:
        raise ScanRefused("the zip holds no file")
    return files


# --------------------------------------------------------------------------------------------------
# NIfTI


def _gunzip(blob: bytes) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob)) as handle:
            data = handle.read(MAX_UNPACKED_BYTES + 1)
    except (OSError, EOFError):
        raise ScanRefused("a damaged .gz file") from None
    if len(data) > MAX_UNPACKED_BYTES:
        raise ScanRefused(f"the file unpacks to over {size_text(MAX_UNPACKED_BYTES)}")
    return data


def _nifti_ras(blob: bytes, what: str = "volume") -> tuple[np.ndarray, list[float]]:
    """A NIfTI-1 or NIfTI-2 file's voxels turned to RAS (nibabel's closest canonical orientation), as float32, and
    their sizes in mm along each axis; every size bounded before the voxels are read."""
    import nibabel

    if len(blob) > MAX_SCAN_BYTES:
        raise ScanRefused(f"the file is {size_text(len(blob))}, over the {size_text(MAX_SCAN_BYTES)} limit")
    raw = _gunzip(blob) if blob[:2] == b"\x1f\x8b" else blob
    image = None
    for kind in (nibabel.Nifti1Image, nibabel.Nifti2Image):
        try:
            image = kind.from_bytes(raw)
            break
        except Exception:  # noqa: BLE001 - not this kind (or damaged): the next, then a sentence
            continue
    if image is None:
        raise ScanRefused("not a readable NIfTI file (.nii or .nii.gz)")
    shape = tuple(int(s) for s in image.header.get_data_shape())
    if len(shape) < 3 or any(s > 1 for s in shape[3:]):
        raise ScanRefused(f"the file holds an image of shape {shape}; a 3-D {what} is needed (one time point)")
    _check_voxels(shape[:3], what)
    if max(shape[:3]) > MAX_SIDE:
        raise ScanRefused(f"the {what} is {shape[0]} x {shape[1]} x {shape[2]}; no side may be over {MAX_SIDE}")
    try:
        canonical = nibabel.as_closest_canonical(image)
        data = np.asarray(canonical.dataobj, dtype=np.float32).reshape(canonical.shape[:3])
    except Exception:  # noqa: BLE001 - truncated or damaged voxel data
        raise ScanRefused(f"the {what}'s voxels cannot be read: the file is truncated or damaged") from None
    return data, [float(z) for z in canonical.header.get_zooms()[:3]]


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
    data, zooms = _nifti_ras(blob)
    kept = [a for a in range(3) if a != axis]
    spacing = (zooms[kept[1]], zooms[kept[0]]) if all(z > 0 for z in zooms) else None
    pixels, said = to_8_bit(_cut(data, axis), None)
    return Volume(pixels, spacing, "NIfTI", said, AXES[axis],
                  notes=("shown in RAS orientation: the patient's left on the left of the picture",))


def nifti_mask_slice(blob: bytes, index: int, shape: tuple[int, int, int]) -> np.ndarray:
    """The tumour in a NIfTI label volume (any value above zero: every label of a segmentation) on slice ``index``
    (from 0) of its scan, cut and oriented exactly as the scan's slice is (:func:`dataset_slice`: axial). ``shape``:
    the scan's slices, (count, rows, columns); a label volume of another shape belongs to another scan."""
    data, _ = _nifti_ras(blob, "mask volume")
    slices = _cut(data, 2)
    if tuple(slices.shape) != tuple(shape):
        raise ScanRefused(f"the mask volume cuts into {slices.shape[0]} slices of {slices.shape[2]} x "
                          f"{slices.shape[1]}, its scan into {shape[0]} of {shape[2]} x {shape[1]}: it belongs to "
                          "another volume")
    return np.ascontiguousarray(slices[index] > 0)


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
    import pydicom

    series: dict[str, list[tuple[str, bytes]]] = {}
    alone, pictures = [], []
    for name, blob in files:
        if not is_volume_file(name, blob):
            pictures.append((name, blob))
        elif blob[128:132] == b"DICM":
            try:
                if transfer_syntax(blob) == DEFLATED:
                    raise ValueError("deflated")  # never inflated here: read_dicom refuses it in words
                with quiet_pydicom():
                    uid = str(pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True,
                                              specific_tags=["SeriesInstanceUID"]).get("SeriesInstanceUID", ""))
            except Exception:  # noqa: BLE001 - damaged or refused: read_dicom says what is wrong with it
                uid = f"unreadable:{name}"
            series.setdefault(uid, []).append((name, blob))
        else:
            alone.append([(name, blob)])
    return [*series.values(), *alone], pictures


def scan_name(files: list[tuple[str, bytes]]) -> str:
    """What a scan made of these uploaded files is called on a page: its file's name, or its first file's and how
    many more files of its series there are."""
    return files[0][0] if len(files) == 1 else f"{files[0][0]} and {len(files) - 1} more files of its series"


def read_scan(files: list[tuple[str, bytes]], axis: int = 2) -> Volume:
    """Whatever scan was given: a NIfTI file, a zip of a DICOM series, or DICOM files."""
    if len(files) == 1:
        name, blob = files[0]
        lowered = name.lower()
        if lowered.endswith((".nii", ".nii.gz")):
            return read_nifti(blob, axis)
        if lowered.endswith(".zip") or blob[:4] == b"PK\x03\x04":
            return read_dicom(unzip_series(blob))
    return read_dicom(files)
