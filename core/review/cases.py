"""Which cases a session reads, in which order, and where their images are.

A session reads the images of an evaluation run (all, the model's errors, one class, the most uncertain, or a
stratified random sample, in the run's order or shuffled with a seed) or scans uploaded for it. Uploaded scans are
kept under the data directory once, named by their content hash; a run's images stay in their dataset. Either way
a case keeps the image's sha256, and an image whose content no longer matches is refused when it is shown.

An uploaded DICOM series (its files together, or a zip) or NIfTI volume is one case: its image is the middle slice,
the one the model answers, and beside it a slab of the volume's slices around it is kept as 8-bit pixels only
(``.npz``: the slices, their pixel spacing and their place in the scan, nothing from the file's header), so that
readers can scroll through the scan as they would at a workstation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.atomic import finish_atomic_write
from core.review.errors import ReviewError
from core.review.store import NewCase, Upload
from core.sources import FileRefused, contained_path, read_bytes, read_image
from core.sources.images import MAX_FILE_BYTES, png_bytes
from core.sources.volumes import MAX_VOXELS

log = logging.getLogger(__name__)

SELECTIONS = {"all": "Every case", "errors": "The model's errors", "uncertain": "The most uncertain cases (lowest "
              "confidence)", "sample": "A stratified random sample"}
ORDERS = {"listed": "As listed", "shuffled": "Shuffled (with the seed)"}
UPLOADS = "uploads"
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp", "TIFF": "tif"}
SLICE_IN_TITLE = re.compile(r", (?:\w+ )?slice \d+ of \d+(?=\)?$)")  # ", axial slice 90 of 180" ending a title


def stratified_sample(labels: pd.Series, count: int, seed: int) -> np.ndarray:
    """Positions of ``count`` items drawn without replacement so that each class keeps its share (largest
    remainders decide the rounding), reproducibly for a seed."""
    counts = labels.value_counts().sort_index()
    count = min(int(count), len(labels))
    quota = counts / counts.sum() * count
    taken = np.floor(quota).astype(int)
    for name in (quota - taken).sort_values(ascending=False, kind="stable").index[:count - int(taken.sum())]:
        taken[name] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels.to_numpy() == name), size=int(n), replace=False)
              for name, n in taken.items() if n]
    return np.sort(np.concatenate(chosen)) if chosen else np.array([], dtype=int)


def select_rows(predictions: pd.DataFrame, selection: str = "all", true_class: str | None = None,
                count: int | None = None, seed: int = 0, order: str = "listed") -> pd.DataFrame:
    """The rows of a run's predictions a session reads, in reading order."""
    if selection not in SELECTIONS:
        raise ReviewError(f"unknown selection {selection!r}; choose one of {', '.join(SELECTIONS)}")
    if order not in ORDERS:
        raise ReviewError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    if selection in ("uncertain", "sample") and (count is None or int(count) < 1):
        raise ReviewError("say how many cases to take (at least 1)")
    rows = predictions if true_class is None else predictions[predictions["label"] == true_class]
    if selection == "errors":
        rows = rows[rows["label"] != rows["pred"]]
    elif selection == "uncertain":
        rows = rows.sort_values("confidence", kind="stable").head(int(count))
    elif selection == "sample":
        rows = rows.iloc[stratified_sample(rows["label"], int(count), seed)]
    if order == "shuffled":
        rows = rows.iloc[np.random.default_rng(seed).permutation(len(rows))]
    return rows


def cases_from_run(run, images_root: Path | None = None, **choice) -> list[NewCase]:
    """The cases of a run's images chosen by ``choice`` (see :func:`select_rows`), with the run's answer and
    reference. The content hash comes from the run, or from the image in ``images_root`` for a run without one."""
    from core.calibration import REFER_BELOW

    rows = select_rows(run.predictions, **choice)
    refer_below = float((run.info.get("model", {}).get("calibration") or {}).get("refer_below", REFER_BELOW))
    cases = []
    for row in rows.itertuples(index=False):
        digest = getattr(row, "sha256", None)
        if not isinstance(digest, str) or len(digest) != 64:
            if images_root is None:
                raise ReviewError("the run does not record its images' hashes and the dataset folder is not there "
                                  "to compute them")
            digest = hashlib.sha256(read_bytes(run.image_path(images_root, row.path), MAX_FILE_BYTES)).hexdigest()
        probabilities = {c: float(getattr(row, f"prob_{c}")) for c in run.classes}
        flags = {"unfamiliar": str(getattr(row, "unfamiliar", False)) == "True",  # bool, or NA in older runs
                 "uncertain": max(probabilities.values()) < refer_below}
        cases.append(NewCase(image=str(row.path), image_sha256=digest, title=str(row.path), reference=str(row.label),
                             model_label=str(row.pred), model_probabilities=probabilities, model_flags=flags))
    return cases


def run_source(run, project_root: Path, images_root: Path | None = None, **choice) -> dict:
    """What a session made from a run records about where its cases came from, with the folder its images were
    found in when it was made (checked again whenever a scan is shown), so that every reader sees the same scans."""
    try:
        path = str(run.path.resolve().relative_to(project_root.resolve()))
    except ValueError:
        path = str(run.path)
    return {"type": "run", "run": path, "run_name": run.name, "dataset": str(run.info["dataset"]["name"]),
            "images_root": str(images_root) if images_root else None, **choice}


def run_model(run) -> dict:
    model = run.info.get("model", {})
    return {"path": model.get("path"), "file_sha256": model.get("file_sha256"), "run": run.name}


# --------------------------------------------------------------------------------------------------
# Uploaded scans


MAX_STACK_BYTES = 256 << 20  # the slices of the largest volume accepted (core.sources.volumes.MAX_VOXELS), packed
CONTEXT_SLICES = 15          # slices kept on either side of an uploaded volume's answered slice, for scrolling
# The voxels one upload's volumes may hold in all, read from their headers before any is decoded: twenty scans at the
# voxel limit, or a hundred of 256 x 256 x 150 (about half a minute of decoding on two cores).
MAX_UPLOAD_VOXELS = 20 * MAX_VOXELS
# What one upload's volumes may leave kept (in the page's state until the session is made): each one's slab and the
# picture of its middle slice, 8 bits a voxel (kept_voxels). The budget above alone let 123 volumes of 31 slices
# through, all of each kept: 1 GB. 16 slabs of 512 x 512 are 128 MB; the largest upload then costs about 420 MB
# (tests/test_hostile_scans.py measures it).
KEPT_SLAB = (2 * CONTEXT_SLICES + 2) * 512 * 512  # what a scan of 512 x 512 pixels keeps: its slab and a picture
MAX_KEPT_VOXELS = 16 * KEPT_SLAB


@dataclass(frozen=True)
class CheckedScan:
    """An uploaded scan as it is to be kept: the case's image and, for a volume, its slices."""
    stored: str                  # uploads/<sha256>.<ext>: the case's image
    digest: str
    image: Image.Image           # decoded, for the model
    blob: bytes                  # the image's bytes to keep
    name: str                    # the uploaded file's name: shown to the organiser before the session is made, no more
    stack: str | None = None     # uploads/<sha256>.npz: a volume's slices
    stack_digest: str | None = None
    stack_blob: bytes | None = None
    stack_slice: int | None = None
    kind: str = "picture"        # what the scan is, in words that name nothing: "DICOM series, slice 11 of 20"


@dataclass(frozen=True)
class Stack:
    """The slices kept of an uploaded volume: a slab around the case's slice."""
    slices: np.ndarray                       # (n, rows, columns) uint8
    spacing_mm: tuple[float, float] | None   # (row, column)
    first: int                               # the slab's first slice in the scan, from 0
    total: int                               # the scan's slices

    def number(self, index: int) -> int:
        """The scan's own slice number (from 1) of slab slice ``index`` (from 0)."""
        return self.first + index + 1


def kept_voxels(shape: tuple[int, int, int]) -> int:
    """At most how many 8-bit voxels :func:`checked_volume` keeps of a scan of this stated shape: its slab of up to
    2 * CONTEXT_SLICES + 1 slices and the picture of its middle one, none larger than the scan's largest face (a
    NIfTI volume is cut only once turned to RAS)."""
    face = int(np.prod(sorted(shape)[-2:]))
    return min(int(np.prod(shape)), (2 * CONTEXT_SLICES + 1) * face) + face


def checked_volume(files: list[tuple[str, bytes]]) -> CheckedScan:
    """Check an uploaded DICOM series, zip of one, or NIfTI volume (ScanRefused with the reason). The case's image is
    the middle slice (a NIfTI volume cut axially); a volume of more than one slice keeps beside it the slab of at
    most :data:`CONTEXT_SLICES` slices on either side, as pixels only. A file whose header says its pixels carry
    burned-in annotation (which may name the patient) is refused: a session keeps what it is given and shows it to
    others."""
    from core.sources.images import check_geometry, prepare_image
    from core.sources.volumes import ScanRefused, read_scan, scan_name

    volume = read_scan(files)
    if volume.burned_in:
        raise ScanRefused("a DICOM header of this scan says its pixels carry burned-in annotation, which may name "
                          "the patient, so it is not kept for a session (the Predict page shows such a scan, flagged)")
    index = volume.count // 2
    picture = volume.image(index)
    check_geometry(*picture.size)
    image = prepare_image(picture)
    blob = png_bytes(picture, compress_level=6)  # kept for good
    digest = hashlib.sha256(blob).hexdigest()
    where = f"{volume.axis} " if volume.axis else ""
    what = f"{volume.kind} {'volume' if volume.kind == 'NIfTI' else 'series' if volume.count > 1 else 'image'}"
    kind = what if volume.count == 1 else f"{what}, {where}slice {index + 1} of {volume.count}"
    scan = CheckedScan(f"{UPLOADS}/{digest}.png", digest, image, blob, scan_name(files), kind=kind)
    if volume.count == 1:
        return scan
    first, last = max(0, index - CONTEXT_SLICES), min(volume.count, index + CONTEXT_SLICES + 1)
    packed = io.BytesIO()
    np.savez_compressed(packed, slices=volume.slices[first:last],
                        spacing=np.asarray(volume.spacing_mm or (np.nan, np.nan), dtype=np.float64),
                        position=np.array([first, volume.count], dtype=np.int64))
    stack_blob = packed.getvalue()
    stack_digest = hashlib.sha256(stack_blob).hexdigest()
    return dataclasses.replace(scan, stack=f"{UPLOADS}/{stack_digest}.npz", stack_digest=stack_digest,
                               stack_blob=stack_blob, stack_slice=index - first)


def load_case_stack(path: Path, sha256: str) -> Stack:
    """A case's slab of slices, refused unless the file is exactly the one the session was made with and holds just
    the arrays written here: each array's header is read before its data, so nothing is unpickled and no size it
    claims is allocated unchecked."""
    from core.sources.volumes import valid_spacing

    blob = read_bytes(path, MAX_STACK_BYTES, "slices file")
    if hashlib.sha256(blob).hexdigest() != sha256:
        raise ReviewError("the scan's slices on disk are not the ones this session was made with (their content "
                          "changed)")
    expected = {"slices": (np.dtype(np.uint8), 3), "spacing": (np.dtype(np.float64), 1),
                "position": (np.dtype(np.int64), 1)}
    not_ours = ReviewError("the scan's slices file is not one this application writes")
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as packed:
            if sorted(packed.namelist()) != sorted(f"{name}.npy" for name in expected):
                raise not_ours
            arrays = {}
            for name, (dtype, dimensions) in expected.items():
                with packed.open(f"{name}.npy") as member:
                    version = np.lib.format.read_magic(member)
                    shape, _, found = (np.lib.format.read_array_header_1_0(member) if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0(member))
                    if found != dtype or len(shape) != dimensions or int(np.prod(shape)) > MAX_VOXELS:
                        raise not_ours
                    arrays[name] = np.lib.format.read_array(packed.open(f"{name}.npy"), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError):
        raise not_ours from None
    slices, spacing, position = arrays["slices"], arrays["spacing"], arrays["position"]
    if spacing.shape != (2,) or position.shape != (2,):
        raise not_ours
    first, total = (int(v) for v in position)
    if not 0 <= first < first + len(slices) <= total:
        raise not_ours
    # A spacing of 0, NaN or -1 (kept before the reader refused such spacings) is no spacing: shown without one.
    return Stack(slices, valid_spacing(spacing), int(first), int(total))


def checked_upload(blob: bytes) -> tuple[str, str, Image.Image, bytes]:
    """Check an uploaded scan (:func:`core.sources.read_image`: ImageRefused with the reason). Returns the name it is
    kept under (relative to the data folder: ``uploads/<sha256>.<ext>``), its hash, the decoded image and the bytes
    to keep. A DICOM, NIfTI or .mat file is kept as a PNG of the slice it stands for, never as itself: its header may
    name the patient, and nothing identifying is stored. Nothing is written: a scan reaches the disk only when a
    session is made with it (:func:`keep_uploads`)."""
    from core.sources.figshare import is_mat
    from core.sources.volumes import is_volume_bytes

    image = read_image(blob)  # a DICOM or NIfTI file: the slice it stands for (core.sources.volumes.stated_slice)
    if is_volume_bytes(blob) or is_mat(blob):
        blob, extension = png_bytes(image, compress_level=6), "png"
    else:
        with Image.open(io.BytesIO(blob)) as probe:
            extension = EXTENSIONS.get(probe.format or "", "img")
    digest = hashlib.sha256(blob).hexdigest()
    return f"{UPLOADS}/{digest}.{extension}", digest, image, blob


def keep_uploads(data_dir: str | os.PathLike, blobs: dict[str, bytes]) -> None:
    """Write each checked scan (stored name -> bytes) under the data folder once; a scan already kept is left as
    it is (its name is its content's hash). A write that fails (a full disk) raises OSError and leaves no part of
    its file behind; the scans written before it are whole, and kept for the next attempt."""
    for stored, blob in blobs.items():
        target = Path(data_dir) / stored  # a name checked_upload made: uploads/<sha256>.<ext>
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{os.getpid()}.part"
        try:
            tmp.write_bytes(blob)
            finish_atomic_write(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def cases_from_uploads(classifier, uploads: list[tuple[str, bytes]]) -> tuple[list[NewCase], dict[str, bytes],
                                                                                 list[str]]:
    """Cases for uploaded scans ``(file name, bytes)``, answered by the classifier now. Returns the cases, the
    scans' bytes by the name they are to be kept under (for :func:`keep_uploads`), and one sentence per file
    refused (the others are kept). DICOM files of one series are one scan, as are a zip of one and a NIfTI file
    (:func:`checked_volume`); every other file is a picture. A scan uploaded twice is one case. The volumes' voxels
    are counted from their headers before any is decoded: those past :data:`MAX_UPLOAD_VOXELS`, or whose kept slices
    would pass :data:`MAX_KEPT_VOXELS`, are refused in one sentence. An unexpected error in one scan is a sentence
    too, never the loss of the others."""
    from core.sources.volumes import scan_groups, scan_name, stated_shape

    groups, pictures = scan_groups(uploads)
    kept, problems, blobs, over, budget = [], [], {}, [], MAX_UPLOAD_VOXELS
    room = MAX_KEPT_VOXELS
    for name, blob in pictures:
        try:
            stored, digest, image, kept_bytes = checked_upload(blob)
            kept.append(CheckedScan(stored, digest, image, kept_bytes, name))
        except ValueError as error:
            problems.append(f"{name}: {error}")
        except Exception:  # one file's accident must not drop the other files of the upload
            log.exception("unexpected error checking an uploaded picture")
            problems.append(f"{name} could not be read (an unexpected error, written to the server's log)")
    for group in groups:
        try:
            shape = stated_shape(group)
            needed, keeps = int(np.prod(shape)), kept_voxels(shape)
            if needed > budget or keeps > room:
                over.append(group[0][0])
                continue
            budget, room = budget - needed, room - keeps
            kept.append(checked_volume(group))
        except ValueError as error:  # a reason that begins with the file's name is not given it twice
            name = scan_name(group)
            problems.append(str(error) if str(error).startswith(group[0][0]) else f"{name}: {error}")
        except Exception:  # one scan's accident must not drop the other scans of the upload
            log.exception("unexpected error checking an uploaded scan")
            problems.append(f"{scan_name(group)} could not be read (an unexpected error, written to the server's log)")
    if over:
        problems.append(over_budget(over))
    unique = []
    for scan in kept:
        if scan.stored not in blobs:
            blobs[scan.stored] = scan.blob
            if scan.stack is not None:
                blobs[scan.stack] = scan.stack_blob
            unique.append(scan)
    if not unique:
        return [], {}, problems
    probabilities, unfamiliar = model_answers(classifier, [scan.image for scan in unique])
    classes = list(classifier.classes)
    cases = [NewCase(image=scan.stored, image_sha256=scan.digest, title=f"Case {number} ({scan.kind})",
                     upload=Upload(scan.name, scan.kind), reference=None,
                     model_label=classes[int(np.argmax(p))],
                     model_probabilities={c: float(v) for c, v in zip(classes, p)},
                     model_flags={"unfamiliar": bool(strange), "uncertain": bool(p.max() < classifier.refer_below)},
                     stack=scan.stack, stack_sha256=scan.stack_digest, stack_slice=scan.stack_slice)
             for number, (scan, p, strange) in enumerate(zip(unique, probabilities, unfamiliar), start=1)]
    return cases, blobs, problems


def over_budget(names: list[str]) -> str:
    """One sentence for the volumes of an upload that were not read because the upload's voxels ran out."""
    listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (f"{listed} {'was' if len(names) == 1 else 'were'} not read: the volumes of one upload may hold "
            f"{MAX_UPLOAD_VOXELS:,} voxels in all ({MAX_UPLOAD_VOXELS // MAX_VOXELS} at the size limit of one scan) "
            f"and keep {MAX_KEPT_VOXELS >> 20} MB of their slices (the slabs of {MAX_KEPT_VOXELS // KEPT_SLAB} "
            "scans of 512 x 512 pixels); make the session from fewer or smaller volumes")


def in_order(cases: list[NewCase], order: str, seed: int) -> list[NewCase]:
    """Cases as listed, or shuffled reproducibly with the seed."""
    if order not in ORDERS:
        raise ReviewError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    if order == "listed":
        return list(cases)
    return [cases[k] for k in np.random.default_rng(seed).permutation(len(cases))]


def titled_uploads(cases: list[NewCase], order: str, seed: int, titles: Sequence[object] = (),
                   keep_names: bool = False) -> list[NewCase]:
    """Uploaded scans' cases in reading order (:func:`in_order`), each with the title it is stored under: the
    organiser's own where one was typed (``titles``, in upload order), the file's name and kind where the organiser
    chose to keep names, else a neutral one numbered in reading order, "Case 3 (DICOM series, slice 11 of 20)". An
    uploaded file's name goes no further unless kept so: it can identify the patient (a PACS export is named by the
    scan's SOP Instance UID)."""
    typed = [t.strip() if isinstance(t, str) else "" for t in titles] + [""] * (len(cases) - len(titles))
    titled = []
    for position, k in enumerate(in_order(list(range(len(cases))), order, seed), start=1):
        case, upload = cases[k], cases[k].upload
        if upload is None:  # not an upload: its title is already what it is called
            title = case.title
        elif typed[k]:
            title = typed[k]
        elif keep_names:
            title = f"{upload.name} ({upload.kind})"
        else:
            title = f"Case {position} ({upload.kind})"
        titled.append(dataclasses.replace(case, title=title, upload=None))
    return titled


def without_slice(title: str) -> str:
    """A volume's title without the slice it names ("Case 1 (DICOM series)"), for a caption that says which slice
    is on screen; any other title as it is."""
    return SLICE_IN_TITLE.sub("", title)


def model_answers(classifier, images: list[Image.Image], batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's probabilities for each image, and whether it finds the image unlike its training scans
    (False throughout for a model without a familiarity check), from one pass per batch."""
    probabilities, unfamiliar = [], []
    for start in range(0, len(images), batch_size):
        features, logits = classifier.features_and_logits(classifier.preprocess(images[start:start + batch_size]))
        probabilities.append(classifier.probabilities(logits).numpy())
        scores = classifier.familiarity_scores(features, logits)
        unfamiliar.append(classifier.familiarity.unfamiliar(scores) if scores is not None
                          else np.zeros(len(logits), dtype=bool))
    return np.concatenate(probabilities), np.concatenate(unfamiliar)


# --------------------------------------------------------------------------------------------------
# Showing a case


def case_image_file(source: dict, image: str, data_dir: str | os.PathLike, images_root: str | os.PathLike | None
                    ) -> Path:
    """Where a case's image is: under the data folder for an upload, in the run's images folder (``images_root``,
    the dataset's folder) otherwise; never outside those folders (the names come from the database)."""
    if source.get("type") == "uploads":
        return contained_path(data_dir, image, "uploaded scan")
    if not images_root:
        raise FileRefused(f"the dataset {source.get('dataset', '')!r} is not on this machine, so the run's images "
                          "cannot be shown")
    return contained_path(images_root, image, "image")


def load_case_image(path: Path, sha256: str) -> Image.Image:
    """The case's image, refused unless its content is exactly the one the session was made with."""
    blob = read_bytes(path, MAX_FILE_BYTES, "image file")
    if hashlib.sha256(blob).hexdigest() != sha256:
        raise ReviewError("the image on disk is not the one this session was made with (its content changed)")
    return read_image(blob)
