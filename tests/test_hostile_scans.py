"""Hostile DICOM, NIfTI and zip scans against the scan reader (core.sources.volumes), the review session's uploads
(core.review.cases) and the Predict page: inputs that used to cost gigabytes, crash a page or silently make a wrong
volume. Each is made here, counted with tried(), and must end in one sentence (or be read correctly) at a bounded
cost in memory: at most :data:`MEMORY_BOUND_MB` over what the process held before it, measured in a separate process
with the peak reset before each input (as tests/test_hostile_inputs.py does for images)."""

from __future__ import annotations

import gzip
import html
import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, upload_scans
from core.sources import volumes
from core.sources.volumes import ScanRefused, read_scan
from hostile import tried
from test_volumes import dicom_bytes, nifti_bytes, page_text

MEMORY_BOUND_MB = 500  # what any one upload, accepted or refused, may add to a process that has loaded the model
MB = 1 << 20
HOSTILE = "ZORRO^HOSTILIA"


# --------------------------------------------------------------------------------------------------
# Building hostile files


def zeros_deflate(size: int, before: bytes = b"") -> bytes:
    """A raw deflate stream of ``before`` and then ``size`` zero bytes, made at once however large: one compressed
    megabyte of zeros repeated. Each piece comes from a fresh compressor and ends in a full flush, so none refers to
    anything before it, and the pieces can be laid end to end."""
    def piece(data: bytes, last: bool = False) -> bytes:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(data) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_FULL_FLUSH)

    return piece(before) + piece(bytes(MB)) * (size // MB) + piece(bytes(size % MB), last=True)


def zeros_crc(size: int, before: bytes = b"") -> int:
    crc = zlib.crc32(before)
    for _ in range(size // MB):
        crc = zlib.crc32(bytes(MB), crc)
    return zlib.crc32(bytes(size % MB), crc)


def gzipped_zeros(size: int, before: bytes = b"", crc: int | None = None) -> bytes:
    """A gzip file of ``before`` and ``size`` zeros (its checksum computed unless given: a bomb's needs none)."""
    crc = zeros_crc(size, before) if crc is None else crc
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + zeros_deflate(size, before)
            + struct.pack("<II", crc, (len(before) + size) & 0xFFFFFFFF))


def zip_of_zeros(name: str, size: int, stated: int | None = None) -> bytes:
    """A zip of one deflated file of ``size`` zeros, its size stated as ``stated`` (the truth by default)."""
    stream, stated, raw = zeros_deflate(size), size if stated is None else stated, name.encode()
    sizes = struct.pack("<III", 0, len(stream), stated)  # no checksum: a bomb is refused before, or fails it
    local = struct.pack("<4sHHHHH", b"PK\x03\x04", 20, 0, 8, 0, 0) + sizes + struct.pack("<HH", len(raw), 0) + raw
    central = (struct.pack("<4sHHHHHH", b"PK\x01\x02", 20, 20, 0, 8, 0, 0) + sizes
               + struct.pack("<HHHHHII", len(raw), 0, 0, 0, 0, 0, 0) + raw)
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(stream), 0)
    return local + stream + central + end


def _element(group: int, number: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian data element."""
    if vr in (b"OB", b"OW"):
        return struct.pack("<HH2sHI", group, number, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, number, vr, len(value)) + value


def hidden_deflate(hide: str, inflated: int) -> bytes:
    """A deflated DICOM file whose dataset inflates to a 64 x 64 image with ``inflated`` bytes of pixel data, its
    transfer syntax hidden from a byte search of the first 4 KB: "decoy" puts a fake (0002,0010) element saying
    explicit VR little endian inside the (0002,0001) OB value; "pushed" makes that value 5 KB long, so that the real
    (0002,0010) lies beyond."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01" + (_element(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1\x00")
                                                     if hide == "decoy" else bytes(5000))
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid()
    written = DicomBytesIO()
    write_file_meta_info(written, meta, enforce_standard=True)
    short = {0x0002: 1, 0x0010: 64, 0x0011: 64, 0x0100: 16, 0x0101: 16, 0x0102: 15, 0x0103: 0}
    header = (_element(0x0008, 0x0060, b"CS", b"MR") + _element(0x0028, 0x0004, b"CS", b"MONOCHROME2")
              + b"".join(_element(0x0028, k, b"US", struct.pack("<H", v)) for k, v in sorted(short.items()))
              + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, inflated))
    return b"\0" * 128 + b"DICM" + written.getvalue() + zeros_deflate(inflated, header)


def _saved(dataset) -> bytes:
    out = io.BytesIO()
    dataset.save_as(out)
    return out.getvalue()


def edited(blob: bytes, **attributes) -> bytes:
    """A DICOM file with some attributes set anew (pydicom's warning about a value it finds odd: the point)."""
    import warnings

    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(blob))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for keyword, value in attributes.items():
            setattr(dataset, keyword, value)
    return _saved(dataset)


def patched(blob: bytes, old: bytes, new: bytes) -> bytes:
    """A value replaced byte for byte in a file, for values pydicom itself would not write (not numbers)."""
    assert blob.count(old) == 1 and len(old) == len(new), (old, new)
    return blob.replace(old, new)


def compressed_claiming(testdata: str, marker: bytes, at: int, rows: int, columns: int, components: int = 1) -> bytes:
    """One of pydicom's compressed test files (64 x 64 or 1024 x 256) with its frame's own size declaration changed:
    the JPEG 2000 SIZ marker's Xsiz and Ysiz (4 bytes each, big-endian), or a JPEG start-of-frame's Y and X (2
    each)."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.encaps import encapsulate, generate_frames

    dataset = pydicom.dcmread(get_testdata_file(testdata))
    frame = bytearray(next(generate_frames(dataset.PixelData, number_of_frames=1)))
    start = frame.index(marker)
    if marker == b"\xff\x51":  # SIZ: Xsiz at +6, Ysiz at +10; Csiz at +38
        frame[start + 6:start + 14] = struct.pack(">II", columns, rows)
        frame[start + 38:start + 40] = struct.pack(">H", components)
    else:  # SOF: Y at +5, X at +7, Nf at +9
        frame[start + 5:start + 9] = struct.pack(">HH", rows, columns)
        frame[start + 9] = components
    dataset.PixelData = encapsulate([bytes(frame[at:])])
    return _saved(dataset)


def j2k_claiming(rows: int, columns: int, components: int = 1) -> bytes:
    return compressed_claiming("MR_small_jp2klossless.dcm", b"\xff\x51", 0, rows, columns, components)


def big_nifti_gz(shape=(512, 512, 190), dtype=np.float32) -> bytes:
    """A gzipped NIfTI volume of zeros of ``shape`` (512 x 512 x 190 float32: 200 MB inflated, 190 KB gzipped)."""
    import nibabel

    header = nibabel.Nifti1Image(np.zeros((1, 1, 1), np.float32), np.eye(4)).header
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    head = header.binaryblock + b"\0" * 4
    return gzipped_zeros(int(np.prod(shape)) * np.dtype(dtype).itemsize, head)


def slab_nifti_gz(slices: int, dtype=np.uint8, seed: int | None = 0) -> bytes:
    """A gzipped 512 x 512 x ``slices`` NIfTI volume, zeros but for random 8-bit values in the 31 middle slices a
    review session keeps (none without a seed): a kept slab that no compression shrinks. Made as three gzip members
    (zeros, the slab stored, zeros), so that it takes a fraction of a second."""
    import nibabel

    face, middle = 512 * 512, slices // 2
    low, high = max(0, middle - 15), min(slices, middle + 16)
    header = nibabel.Nifti1Header()
    header.set_data_shape((512, 512, slices))
    header.set_data_dtype(dtype)
    header.set_sform(np.eye(4), code=1)
    slab = (np.random.default_rng(seed).integers(0, 256, (high - low) * face) if seed is not None
            else np.zeros((high - low) * face))
    size = np.dtype(dtype).itemsize
    return (gzip.compress(header.binaryblock + bytes(4) + bytes(low * face * size), 1)
            + gzip.compress(slab.astype(dtype).tobytes(), 0) + gzip.compress(bytes((slices - high) * face * size), 1))


def series_zip(seed: int | None = None, slices: int = 192) -> bytes:
    """A deflated zip of a DICOM series of 512 x 512 32-bit pixels (192 files: the voxel limit, 200 MB of files),
    zeros but for random 8-bit values in the 31 middle files a review session keeps (with a seed)."""
    import zipfile

    import pydicom
    from pydicom.uid import generate_uid

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(np.zeros((512, 512)))))
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 32, 32, 31, 1
    rng, packed = np.random.default_rng(seed), io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for k in range(slices):
            kept = seed is not None and abs(k - slices // 2) <= 15
            pixels = rng.integers(0, 256, (512, 512)) if kept else np.zeros((512, 512))
            dataset.PixelData = pixels.astype("<i4").tobytes()
            dataset.SOPInstanceUID, dataset.ImagePositionPatient = generate_uid(), [0.0, 0.0, float(k)]
            archive.writestr(f"IM{k:03d}.dcm", _saved(dataset))
    return packed.getvalue()


# --------------------------------------------------------------------------------------------------
# Memory


CHILD = textwrap.dedent("""
    import json
    from pathlib import Path

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

    def measured(run):
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets the peak (VmHWM) to the current resident size
        before = status("VmRSS")
        said = None
        try:
            run()
        except ValueError as error:
            said = str(error)
        return status("VmHWM") - before, said

    def files(folder):
        return [(p.name, p.read_bytes()) for p in sorted(Path(folder).iterdir())]
""")


def run_child(body: str, **values) -> dict:
    """Run ``body`` after :data:`CHILD` in a fresh Python, and return the JSON it prints last. The project comes
    from its installation; the tests' own modules (conftest) from tests/, through PYTHONPATH."""
    script = CHILD + textwrap.dedent(body).format(**values)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900, env=env)
    if "clear_refs" in done.stderr:
        pytest.skip("this kernel does not let a process reset its peak memory (/proc/self/clear_refs)")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


MEMORY_INPUTS = {  # folder -> (what it is, the refusal it must end in; None: accepted)
    "deflate-decoy": ("deflated DICOM inflating to 512 MB, a decoy transfer syntax in its meta group's version",
                      "deflate"),
    "deflate-pushed": ("deflated DICOM inflating to 512 MB, its transfer syntax pushed 5 KB in", "deflate"),
    "j2k-bomb": ("5 KB DICOM of 64 x 64 whose JPEG 2000 codestream declares 30,000 x 30,000", "declares another"),
    "zip-bomb": ("1 MB zip of 1 GiB of zeros", "would unpack"),
    "zip-liar": ("zip stating a 1 KB file that inflates to 1 GiB", "cannot be unpacked"),
    "gzip-bomb": ("gzip of 1 GiB of zeros named .nii.gz", "not a readable NIfTI"),
    "nifti-max": ("gzipped NIfTI of 512 x 512 x 190 float32 voxels (the voxel limit), accepted", None),
    "nifti-float64": ("gzipped NIfTI of 512 x 512 x 180 float64 voxels (360 MB unpacked), accepted", None),
    "zip-32-bit": ("zip of a DICOM series of 192 files of 512 x 512 32-bit pixels (200 MB unpacked), accepted", None),
}


def write_memory_inputs(root: Path) -> None:
    made = {"deflate-decoy": [("hidden.dcm", hidden_deflate("decoy", 512 * MB))],
            "deflate-pushed": [("pushed.dcm", hidden_deflate("pushed", 512 * MB))],
            "j2k-bomb": [("j2k.dcm", j2k_claiming(30000, 30000))],
            "zip-bomb": [("bomb.zip", zip_of_zeros("zeros.dcm", 1 << 30))],
            "zip-liar": [("liar.zip", zip_of_zeros("zeros.dcm", 1 << 30, stated=1024))],
            "gzip-bomb": [("bomb.nii.gz", gzipped_zeros(1 << 30, crc=0))],
            "nifti-max": [("brain.nii.gz", big_nifti_gz())],
            "nifti-float64": [("doubles.nii.gz", big_nifti_gz((512, 512, 180), np.float64))],
            "zip-32-bit": [("series.zip", series_zip())]}
    for folder, made_files in made.items():
        for name, blob in made_files:
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / name).write_bytes(blob)


def test_no_hostile_scan_costs_more_than_the_bound_whether_read_or_refused(tmp_path):
    """Each input read in one process with its peak memory reset before it: the deflate bypasses and the JPEG 2000
    bomb refused before anything is inflated or decoded, the zip bombs from the sizes the zip states (or, when they
    lie, after inflating no more than stated), a gzip bomb from its first 540 bytes, and the largest volume
    accepted, decoded at a bounded cost."""
    write_memory_inputs(tmp_path / "scans")
    grown = run_child("""
        from core.sources.volumes import read_scan
        results = {{}}
        for folder in sorted(Path({scans!r}).iterdir()):
            given = files(folder)
            results[folder.name] = measured(lambda: read_scan(given))
        print(json.dumps(results))
    """, scans=str(tmp_path / "scans"))
    for folder, (what, refusal) in MEMORY_INPUTS.items():
        tried("memory: read_scan in one process", what)
        growth, said = grown[folder]
        assert growth < MEMORY_BOUND_MB, (folder, growth)
        assert (said is None) if refusal is None else (refusal in said), (folder, said)
        assert "1.2.840" not in (said or "")  # nothing from a header is quoted
    print(f"\npeak RSS a hostile scan adds: {max(g for g, _ in grown.values()):.0f} MB at most; bound "
          f"{MEMORY_BOUND_MB} MB; " + ", ".join(f"{folder} {growth:.0f}" for folder, (growth, _) in grown.items()))


def test_many_volumes_in_one_review_upload_are_counted_from_their_headers_before_any_is_decoded(tmp_path):
    """36 gzipped 512 x 512 x 190 volumes (190 KB each) in one upload for a review session: the upload's voxel budget
    (set here to two of them, to keep the test short) holds before decoding, so two are decoded one after the other
    and the other 34 are refused in one sentence, never inflated."""
    folder = tmp_path / "upload"
    folder.mkdir()
    blob = big_nifti_gz()
    for k in range(36):
        (folder / f"v{k:02d}.nii.gz").write_bytes(blob)
    result = run_child("""
        from core import load_classifier
        from core.review import cases
        classifier = load_classifier({model!r})
        cases.MAX_UPLOAD_VOXELS = 2 * 512 * 512 * 190
        given = files({folder!r})
        outcome = {{}}
        grown, _ = measured(lambda: outcome.update(zip(("cases", "blobs", "problems"),
                                                       cases.cases_from_uploads(classifier, given))))
        print(json.dumps({{"grown": grown, "cases": len(outcome["cases"]), "problems": outcome["problems"]}}))
    """, model=str(ROOT / "assets/models/default"), folder=str(folder))
    tried("memory: cases_from_uploads", "36 gzipped 512 x 512 x 190 NIfTI volumes in one upload")
    print(f"\nreview upload of 36 volumes: {result['grown']:.0f} MB")
    assert result["grown"] < MEMORY_BOUND_MB, result
    assert result["cases"] == 1  # two read; the same pixels twice are one case
    (sentence,) = result["problems"]
    assert sentence.startswith("v02.nii.gz, v03.nii.gz, v04.nii.gz and 31 more were not read: the volumes of one "
                               "upload may hold"), sentence


def test_a_review_upload_at_its_real_budgets_costs_less_than_the_bound(tmp_path):
    """Slow (about a minute on two busy cores): the review upload's real budgets, unshrunk. Each volume read leaves
    its slab kept (a slab of random values, which no compression shrinks): 15 volumes of 31 slices, all kept, then a
    zip of a 32-bit DICOM series at the voxel limit, the dearest to decode, with the other 15 slabs already kept,
    fill the slices an upload may keep (cases.MAX_KEPT_VOXELS); 24 more thin volumes and 21 at the voxel limit (more
    than the voxels an upload may hold, cases.MAX_UPLOAD_VOXELS) are refused in one sentence. Then the model answers
    the 16. Before the kept budget the voxel budget let all 40 thin volumes through (642 MB; 123 would have fitted),
    and before a zip was inflated a file at a time the zip alone cost 479 MB."""
    from core.review import cases

    folder = tmp_path / "upload"
    folder.mkdir()
    for k in range(15):
        (folder / f"a{k:02d}.nii.gz").write_bytes(slab_nifti_gz(31, seed=k))
    (folder / "b.zip").write_bytes(series_zip(seed=15))
    for k in range(24):
        (folder / f"c{k:02d}.nii.gz").write_bytes(slab_nifti_gz(31, seed=16 + k))
    for k in range(21):
        (folder / f"d{k:02d}.nii.gz").write_bytes(slab_nifti_gz(192, np.float32, seed=None))
    assert 21 * 512 * 512 * 192 > cases.MAX_UPLOAD_VOXELS
    result = run_child("""
        from core import load_classifier
        from core.review import cases
        classifier = load_classifier({model!r})
        given = files({folder!r})
        outcome = {{}}
        grown, _ = measured(lambda: outcome.update(zip(("cases", "blobs", "problems"),
                                                       cases.cases_from_uploads(classifier, given))))
        kept = sum(len(blob) for blob in outcome["blobs"].values()) / 2 ** 20
        print(json.dumps({{"grown": grown, "kept": kept, "cases": len(outcome["cases"]),
                          "problems": outcome["problems"]}}))
    """, model=str(ROOT / "assets/models/default"), folder=str(folder))
    tried("memory: cases_from_uploads", "16 volumes each leaving a random slab kept, one of them float32 at the "
                                         "voxel limit, and 45 more past the upload's budgets")
    print(f"\nreview upload at its real budgets: {result['grown']:.0f} MB, {result['kept']:.0f} MB of it kept")
    assert result["grown"] < MEMORY_BOUND_MB, result
    assert result["cases"] == 16 and result["kept"] > 120, result  # the slabs really were kept, uncompressed
    (sentence,) = result["problems"]
    assert sentence.startswith("c00.nii.gz, c01.nii.gz, c02.nii.gz and 42 more were not read: the volumes of one "
                               "upload may hold 1,006,632,960 voxels in all (20 at the size limit of one scan) and "
                               "keep 128 MB of their slices"), sentence


def test_many_volumes_and_a_hidden_deflate_on_the_predict_page_cost_a_bounded_amount(tmp_path):
    """The Predict page, with the model loaded and a picture already explained: 36 gzipped 512 x 512 x 190 volumes
    in one upload fill the session's 96 MB of decoded scans as their headers say (two of 47.5 MB are decoded, 34 are
    refused in one sentence), and an 820 KB deflated file with a hidden transfer syntax is refused before it is
    inflated."""
    folder = tmp_path / "upload"
    folder.mkdir()
    blob = big_nifti_gz()
    for k in range(36):
        (folder / f"v{k:02d}.nii.gz").write_bytes(blob)
    (tmp_path / "hidden.dcm").write_bytes(hidden_deflate("decoy", 800 * MB))
    picture = io.BytesIO()
    Image.fromarray(np.kron(np.arange(64, dtype=np.uint8).reshape(8, 8), np.ones((8, 8), np.uint8)), "L").save(
        picture, "PNG")
    (tmp_path / "warm.png").write_bytes(picture.getvalue())
    result = run_child("""
        from streamlit.testing.v1 import AppTest
        from conftest import upload_scans
        at = AppTest.from_file({app!r}, default_timeout=600).run()
        warm = Path({warm!r})
        at = upload_scans(at, [(warm.name, warm.read_bytes(), "image/png")])  # both models loaded and used once
        hidden = Path({hidden!r})
        upload = [(hidden.name, hidden.read_bytes(), "application/dicom")]
        grown_hidden, _ = measured(lambda: upload_scans(at, upload))
        volumes = [(name, blob, "application/gzip") for name, blob in files({folder!r})]
        grown_volumes, _ = measured(lambda: upload_scans(at, volumes))
        print(json.dumps({{"hidden": grown_hidden, "volumes": grown_volumes, "exception": bool(at.exception),
                          "warnings": [w.value for w in at.warning]}}))
    """, app=str(ROOT / "dashboard" / "app.py"), warm=str(tmp_path / "warm.png"), hidden=str(tmp_path / "hidden.dcm"),
        folder=str(folder))
    tried("memory: Predict page upload", "36 gzipped 512 x 512 x 190 NIfTI volumes in one upload")
    tried("memory: Predict page upload", "820 KB deflated DICOM with a decoy transfer syntax")
    assert result["hidden"] < MEMORY_BOUND_MB and result["volumes"] < MEMORY_BOUND_MB, result
    assert not result["exception"], result
    over = [html.unescape(w) for w in result["warnings"] if "decoded scans" in html.unescape(w)]
    assert len(over) == 1 and "**v02.nii.gz**, **v03.nii.gz**, **v04.nii.gz** and 31 more were not added" in over[0]
    print(f"\nPredict page: a hidden deflate adds {result['hidden']:.0f} MB, 36 volumes {result['volumes']:.0f} MB")


# --------------------------------------------------------------------------------------------------
# What is inflated, unpacked or decoded


@pytest.mark.parametrize("hide", ["decoy", "pushed"])
def test_a_deflated_file_is_known_by_pydicoms_own_reading_of_its_meta_group(hide):
    blob = hidden_deflate(hide, 64 * 64 * 2)  # a real, small image: dcmread would inflate and read it
    tried("library: read_scan", f"deflated DICOM, its transfer syntax hidden from a byte search ({hide})")
    assert volumes.transfer_syntax(blob) == volumes.DEFLATED
    with pytest.raises(ScanRefused, match="deflate-compressed DICOM, which is refused"):
        read_scan([("hidden.dcm", blob)])
    with pytest.raises(ScanRefused, match="deflate-compressed"):
        volumes.stated_voxels([("hidden.dcm", blob)])
    groups, _ = volumes.scan_groups([("hidden.dcm", blob)])  # sorted into a group without being inflated
    assert groups == [[("hidden.dcm", blob)]]


@pytest.mark.parametrize("what, blob", [
    ("JPEG 2000 frame declaring 2,048 x 2,048 in a 64 x 64 file", lambda: j2k_claiming(2048, 2048)),
    ("JPEG 2000 frame declaring 64 x 64 in 3 components", lambda: j2k_claiming(64, 64, components=3)),
    ("JPEG-LS frame declaring 4,096 x 4,096 in a 64 x 64 file",
     lambda: compressed_claiming("MR_small_jpeg_ls_lossless.dcm", b"\xff\xf7", 0, 4096, 4096)),
    ("JPEG frame declaring 2,048 x 256 in a 1,024 x 256 file",
     lambda: compressed_claiming("JPEG-lossy.dcm", b"\xff\xc1", 0, 2048, 256)),
    ("JPEG 2000 frame without its SOC marker", lambda: compressed_claiming("MR_small_jp2klossless.dcm", b"\xff\x51",
                                                                           2, 64, 64)),
])
def test_a_compressed_frame_that_declares_another_size_is_not_decoded(what, blob):
    tried("library: read_scan", what)
    with pytest.raises(ScanRefused, match="a compressed frame declares another size than the"):
        read_scan([("frame.dcm", blob())])


def jpeg_dicom(pixels: np.ndarray, fragments: int, app_bytes: int = 0) -> bytes:
    """A JPEG baseline DICOM file of 8-bit ``pixels``, encoded by PIL with ``app_bytes`` of EXIF before its start of
    frame, its one frame encapsulated in ``fragments`` fragments of equal size."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    jpeg = io.BytesIO()
    exif = b"Exif\0\0" + np.random.default_rng(8).bytes(app_bytes) if app_bytes else b""
    Image.fromarray(pixels, "L").save(jpeg, "JPEG", quality=95, exif=exif)
    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(pixels)))
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset.PixelData = encapsulate([jpeg.getvalue()], fragments_per_frame=fragments)
    dataset["PixelData"].is_undefined_length = True
    return _saved(dataset)


def test_a_jpeg_frame_whose_start_of_frame_lies_in_a_later_fragment_is_read():
    """An encoder's EXIF or ICC segments may fill the first fragment of a frame: the frame's size is read from its
    fragments joined, not from the first alone (which holds no start of frame, and was refused)."""
    import pydicom
    from pydicom.encaps import generate_fragmented_frames

    pixels = brain().astype(np.uint8)
    blob = jpeg_dicom(pixels, fragments=2, app_bytes=30_000)
    (first, second), = generate_fragmented_frames(pydicom.dcmread(io.BytesIO(blob)).PixelData, number_of_frames=1)
    assert b"\xff\xc0" not in first and b"\xff\xc0" in second  # the start of frame is in the second fragment
    tried("library: read_scan", "JPEG baseline DICOM whose first fragment holds only EXIF, the start of frame after")
    volume = read_scan([("app.dcm", blob)])
    assert np.array_equal(volume.slices, read_scan([("one.dcm", jpeg_dicom(pixels, fragments=1))]).slices)
    assert np.abs(volume.slices[0].astype(int) - volumes.to_8_bit(pixels, None)[0].astype(int)).mean() < 4
    from core.sources.codestreams import HEAD_BYTES, fragments_declare

    app = b"\xff\xe1\xff\xff" + bytes(0xFFFD)  # one APP1 segment of 64 KB
    start_of_frame = b"\xff\xc0\x00\x0b\x08\x00\x40\x00\x40\x01"
    within = b"\xff\xd8" + app * (HEAD_BYTES // len(app)) + start_of_frame
    assert fragments_declare([within[:100], within[100:5000], within[5000:]]) == (64, 64, 1)
    beyond = b"\xff\xd8" + app * (HEAD_BYTES // len(app) + 1) + start_of_frame
    tried("library: fragments_declare", "JPEG frame whose start of frame lies past its first megabyte")
    assert fragments_declare([beyond[:100], beyond[100:]]) is None  # looked for in the first megabyte only


def test_the_size_a_codestream_declares_is_read_from_its_own_header():
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.encaps import generate_frames

    from core.sources.codestreams import declared_size

    for name, size in (("MR_small_jp2klossless.dcm", (64, 64, 1)), ("MR_small_jpeg_ls_lossless.dcm", (64, 64, 1)),
                       ("JPEG-lossy.dcm", (1024, 256, 1)), ("JPEG2000.dcm", (1024, 256, 1))):
        dataset = pydicom.dcmread(get_testdata_file(name))
        assert declared_size(next(generate_frames(dataset.PixelData, number_of_frames=1))) == size, name
    codestream = next(generate_frames(pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm")).PixelData,
                                      number_of_frames=1))
    boxed = (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + struct.pack(">I", 20) + b"ftypjp2 " + bytes(8)
             + struct.pack(">I", 8 + len(codestream)) + b"jp2c" + codestream)
    assert declared_size(boxed) == (64, 64, 1)  # a JP2 file's codestream, in its jp2c box
    for hostile in (b"", b"\xff\x4f", b"\xff\xd8\xff\xda\x00\x02", b"\xff\xd8\xff\xc0\x00\x0b\x08\x00\x00\x00\x40\x01",
                    b"\xff\xd8\xff\xe0\x00\x01", b"\x00\x00\x00\x01jp2c"):
        tried("library: declared_size", f"codestream {hostile!r}")
        assert declared_size(hostile) is None  # no declaration (a height of 0 included): nothing is decoded


def test_zips_hold_one_limit_before_and_while_inflating():
    tried("library: read_scan", "zip stating 1 GiB of zeros")
    with pytest.raises(ScanRefused, match="the zip would unpack to over 256 MB, the limit for one series"):
        read_scan([("bomb.zip", zip_of_zeros("zeros.dcm", 1 << 30))])
    tried("library: read_scan", "zip stating a 1 KB file that inflates to 64 MB")
    with pytest.raises(ScanRefused, match="cannot be unpacked"):
        read_scan([("liar.zip", zip_of_zeros("zeros.dcm", 64 * MB, stated=1024))])
    import zipfile

    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_BZIP2) as archive:
        archive.writestr("f0.dcm", dicom_bytes(np.zeros((64, 64))))
    tried("library: read_scan", "zip of a bzip2-compressed DICOM file")
    with pytest.raises(ScanRefused, match="only stored or deflated files"):
        read_scan([("bzip2.zip", packed.getvalue())])


def test_a_nifti_file_is_inflated_only_as_far_as_its_header_says_and_only_when_nothing_later_refuses_it():
    import nibabel

    header = nibabel.Nifti1Image(np.zeros((1, 1, 1), np.float32), np.eye(4)).header
    header.set_data_shape((512, 512, 256))  # 64 M voxels of 4 bytes: 256 MB, over the voxel and the byte limits
    tried("library: read_scan", ".nii.gz whose header states 512 x 512 x 256 float32 voxels")
    with pytest.raises(ScanRefused, match="voxels, over the"):
        read_scan([("big.nii.gz", gzipped_zeros(4 * MB, header.binaryblock + bytes(4)))])
    header.set_data_shape((256, 256, 256))
    header.set_data_dtype(np.float64)  # 16 M voxels, within the voxel limit, but 128 MB of doubles...
    tried("library: read_scan", ".nii.gz whose header states 256^3 float64 voxels and holds 4 MB")
    with pytest.raises(ScanRefused, match="truncated or damaged"):  # ... of which it holds 4 MB: read, then short
        read_scan([("short.nii.gz", gzipped_zeros(4 * MB, header.binaryblock + bytes(4)))])
    header.set_data_shape((8, 8, 8))
    header.set_data_dtype(np.complex64)
    tried("library: read_scan", ".nii.gz of complex voxels")
    with pytest.raises(ScanRefused, match="not plain numbers"):
        read_scan([("complex.nii", header.binaryblock + bytes(4) + bytes(8 * 8 * 8 * 8))])
    tried("library: read_scan", "gzip of 64 MB of zeros named .nii.gz")
    with pytest.raises(ScanRefused, match="not a readable NIfTI"):
        read_scan([("zeros.nii.gz", gzipped_zeros(64 * MB))])
    volume = read_scan([("brain.nii.gz", big_nifti_gz((40, 30, 20)))])  # what the header states, read in full
    assert volume.slices.shape == (20, 30, 40) and volumes.nifti_voxels(big_nifti_gz((40, 30, 20))) == 40 * 30 * 20


def scaled_nifti(values: np.ndarray, dtype, slope: float = 1.0, intercept: float = 0.0) -> bytes:
    """A NIfTI-1 file of ``values`` stored as ``dtype`` (any byte order), its scl_slope and scl_inter set by hand
    (nibabel would reset them for float voxels)."""
    import nibabel

    dtype = np.dtype(dtype)
    order = ">" if dtype.byteorder == ">" else "<"
    header = nibabel.Nifti1Header(endianness=order)  # the voxels are stored in the header's byte order
    header.set_data_dtype(dtype)
    blob = bytearray(nibabel.Nifti1Image(values.astype(dtype), np.diag([-0.9, 1.1, 2.0, 1.0]), header).to_bytes())
    assert blob[:4] == struct.pack(f"{order}i", 348)
    blob[112:120] = struct.pack(f"{order}ff", slope, intercept)  # scl_slope, scl_inter (NIfTI-1, bytes 112-119)
    return bytes(blob)


@pytest.mark.parametrize("what, dtype, shape", [
    ("float64", np.dtype("<f8"), (40, 30, 20)), ("big-endian float64", np.dtype(">f8"), (40, 30, 20)),
    ("64-bit integer", np.dtype("<i8"), (40, 30, 20)), ("float64 with a time axis of one", np.dtype("<f8"),
                                                         (40, 30, 20, 1))])
def test_voxels_wider_than_32_bits_read_a_slab_at_a_time_as_their_float32_values(what, dtype, shape, monkeypatch):
    """nibabel saves a float array as float64 by default: such a volume reads as float32 a slab at a time, and gives
    the slices its values as float32 give (scaled by the file's slope and intercept)."""
    values = np.random.default_rng(3).integers(0, 1000, shape).astype(np.float64)
    expected = read_scan([("same.nii", scaled_nifti(2.0 * values - 5.0, np.float32))])
    monkeypatch.setattr(volumes, "BLOCK_VOXELS", 1500)  # a slice at a time, so that the slabs are many
    tried("library: read_scan", f"NIfTI of {what} voxels with a slope and intercept")
    volume = read_scan([("wide.nii.gz", gzip.compress(scaled_nifti(values, dtype, 2.0, -5.0)))])
    assert volume.window == expected.window and np.array_equal(volume.slices, expected.slices), what
    assert volume.spacing_mm == pytest.approx((1.1, 0.9))


def test_a_float64_volume_at_the_voxel_limit_is_taken_and_an_oversized_file_says_what_to_do(monkeypatch):
    tried("library: stated_voxels", ".nii.gz of 512 x 512 x 180 float64 voxels (360 MB unpacked)")
    assert volumes.stated_voxels([("doubles.nii.gz", big_nifti_gz((512, 512, 180), np.float64))]) == 512 * 512 * 180
    monkeypatch.setattr(volumes, "MAX_SCAN_BYTES", 1 << 20)
    tried("library: read_scan", "uncompressed NIfTI over the byte limit")
    with pytest.raises(ScanRefused, match=r"the file is 2 MB, over the 1 MB limit; save it gzipped \(.nii.gz\), or as "
                                          r"float32 or 16-bit integers \(nibabel: img.set_data_dtype\(np.float32\)\)"):
        read_scan([("big.nii", scaled_nifti(np.zeros((64, 64, 64)), np.float64))])


def test_a_large_scans_window_comes_from_an_even_sample_and_matches_the_exact_one(monkeypatch):
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1000, (40, 64, 64)).astype(np.float32)
    exact, said = volumes.to_8_bit(values, None)
    monkeypatch.setattr(volumes, "WINDOW_SAMPLE", values.size // 7)
    monkeypatch.setattr(volumes, "BLOCK_VOXELS", 1000)
    sampled, _ = volumes.to_8_bit(values, None)
    assert "percentiles" in said and np.abs(sampled.astype(int) - exact.astype(int)).max() <= 2


# --------------------------------------------------------------------------------------------------
# Crashes: spacing, rescale, one scan's accident


SPACINGS = {b"0\\0     ": "0\\0", b"nan\\nan ": "nan\\nan", b"inf\\1   ": "inf\\1", b"-1\\-1   ": "-1\\-1",
            b"1e9\\1e9 ": "1e9\\1e9", b"0.5     ": "one value"}


@pytest.mark.parametrize("raw", list(SPACINGS))
def test_a_pixel_spacing_that_is_not_a_length_is_no_spacing(raw):
    tried("library: read_scan", f"DICOM with PixelSpacing {SPACINGS[raw]}")
    volume = read_scan([("odd.dcm", patched(dicom_bytes(np.zeros((64, 64))), b"0.5\\0.8 ", raw))])
    assert volume.spacing_mm is None and volume.image(0).info["spacing_mm"] is None


def test_nifti_voxel_sizes_that_are_not_lengths_are_no_spacing():
    assert read_scan([("fine.nii", nifti_bytes(np.zeros((8, 8, 8)), np.diag([0.5, 0.8, 3, 1])))]).spacing_mm == \
        pytest.approx((0.8, 0.5))
    import nibabel

    for zooms, affine in (((0, 0, 0), None), ((np.nan, 1, 1), np.eye(4)), ((1e6, 1, 1), None)):
        image = nibabel.Nifti1Image(np.zeros((8, 8, 8), np.float32), affine)
        image.header.set_zooms(zooms)  # nibabel itself reads a size of 0 as 1 mm
        tried("library: read_scan", f"NIfTI with voxel sizes {zooms}")
        assert read_scan([("odd.nii", image.to_bytes())]).spacing_mm is None, zooms
    image = nibabel.Nifti1Image(np.zeros((8, 8, 8), np.float32), None)
    image.header.set_zooms((np.nan, 1, 1))  # and no affine: nothing places the voxels
    tried("library: read_scan", "NIfTI with voxel sizes (nan, 1, 1) and no affine")
    with pytest.raises(ScanRefused, match="orientation cannot be worked out"):
        read_scan([("odd.nii", image.to_bytes())])


@pytest.fixture(scope="module")
def classifier():
    from core import load_classifier

    return load_classifier(ROOT / "assets/models/default")


def brain(seed: int = 4) -> np.ndarray:
    from conftest import synthetic_slice

    return np.kron(synthetic_slice(0, seed=seed, size=64), np.ones((2, 2), np.uint8)).astype(np.int16)


def test_a_series_with_a_zero_spacing_makes_a_review_case_that_every_reader_can_open(classifier, tmp_path):
    from core.review.cases import cases_from_uploads, keep_uploads, load_case_stack

    series = [(f"IM{k}", patched(dicom_bytes(brain() + k, position=float(k)), b"0.5\\0.8 ", b"0\\0     "))
              for k in range(3)]
    tried("library: cases_from_uploads", "3-file DICOM series with PixelSpacing 0\\0")
    (case,), blobs, problems = cases_from_uploads(classifier, series)
    assert not problems
    keep_uploads(tmp_path, blobs)
    assert load_case_stack(tmp_path / case.stack, case.stack_sha256).spacing_mm is None
    stale = io.BytesIO()  # a slab kept before the reader refused such spacings
    np.savez_compressed(stale, slices=np.zeros((3, 8, 8), np.uint8), spacing=np.zeros(2),
                        position=np.array([0, 3], np.int64))
    (tmp_path / "stale.npz").write_bytes(stale.getvalue())
    import hashlib

    tried("library: load_case_stack", "slab kept with a spacing of 0 x 0 mm")
    assert load_case_stack(tmp_path / "stale.npz", hashlib.sha256(stale.getvalue()).hexdigest()).spacing_mm is None


RESCALES = {(b"1.23456789012 ", b"not-a-number!!"): "RescaleSlope not-a-number!!",
            (b"1.23456789012 ", b"nan           "): "RescaleSlope nan",
            (b"1.23456789012 ", b"0             "): "RescaleSlope 0",
            (b"-98.7654321012", b"1e999         "): "RescaleIntercept 1e999"}


@pytest.mark.parametrize("old, new", list(RESCALES))
def test_a_rescale_that_is_not_a_finite_number_is_refused_in_a_sentence(old, new):
    tried("library: read_scan", f"DICOM with {RESCALES[(old, new)]}")
    blob = patched(dicom_bytes(np.zeros((64, 64)), slope=1.23456789012, intercept=-98.7654321012), old, new)
    with pytest.raises(ScanRefused, match="odd.dcm states a rescale slope or intercept that is not a finite number"):
        read_scan([("odd.dcm", blob)])


def with_modality_lut(descriptor: list[int], table, vr: str = "US") -> bytes:
    """A DICOM file whose grey levels go through a modality lookup table (descriptor: entries, first value, bits)
    instead of a rescale slope and intercept."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(np.arange(64 * 64).reshape(64, 64) % 100)))
    del dataset.RescaleSlope, dataset.RescaleIntercept
    item = Dataset()
    item.LUTDescriptor, item.ModalityLUTType = descriptor, "OD"
    item.add_new(0x00283006, vr, table)  # LUTData
    dataset.ModalityLUTSequence = Sequence([item])
    return _saved(dataset)


MODALITY_LUTS = {"a table of 3 entries said to hold 4,096": ([4096, 0, 16], [1, 2, 3], "US"),
                 "a table of 99-bit entries": ([100, 0, 99], list(range(100)), "US"),
                 "a table of 3 bytes said to hold 100 entries": ([100, 0, 16], b"\x01\x02\x03", "OW"),
                 "an empty table": ([100, 0, 16], [], "US")}


@pytest.mark.parametrize("what", list(MODALITY_LUTS))
def test_a_modality_lookup_table_that_contradicts_itself_is_refused_in_a_sentence(what):
    from core.sources import read_image

    blob = with_modality_lut(*MODALITY_LUTS[what])
    tried("library: read_scan", f"DICOM with {what} as its modality LUT")
    with pytest.raises(ScanRefused, match="lut.dcm states a modality lookup table that does not match its own "
                                          "description"):
        read_scan([("lut.dcm", blob)])
    tried("library: read_image", f"DICOM with {what} as its modality LUT")
    with pytest.raises(ScanRefused, match="states a modality lookup table"):  # a dataset file: no raw error either
        read_image(blob)
    assert read_scan([("lut.dcm", with_modality_lut([100, 0, 16], [3 * k for k in range(100)]))]).window == (
        "an automatic window: the scan's 0.5th to 99.5th percentiles (0 to 297)")  # a table that fits: applied


def test_one_bad_or_broken_scan_never_drops_the_others_of_a_review_upload(classifier, monkeypatch):
    from core.review import cases

    slope = patched(dicom_bytes(brain(), slope=1.23456789012, series="1.2.3.1"), b"1.23456789012 ",
                    b"not-a-number!!")
    good = [(f"IM{k}", dicom_bytes(brain() + k, position=float(k), series="1.2.3.2")) for k in range(2)]
    picture = io.BytesIO()
    Image.fromarray(brain().astype(np.uint8), "L").save(picture, "PNG")
    uploads = [("slope.dcm", slope), *good, ("scan.png", picture.getvalue()),
               ("boom.dcm", dicom_bytes(brain(), series="1.2.3.3"))]
    checked = cases.checked_volume

    def accident(group):
        if group[0][0] == "boom.dcm":
            raise TypeError("an accident deep in a decoder")
        return checked(group)

    monkeypatch.setattr(cases, "checked_volume", accident)
    tried("library: cases_from_uploads", "DICOM with RescaleSlope not-a-number!! beside good scans")
    tried("library: cases_from_uploads", "a scan whose reading fails unexpectedly beside good scans")
    found, _, problems = cases.cases_from_uploads(classifier, uploads)
    assert len(found) == 2 and len(problems) == 2  # the series and the picture; a sentence for each of the others
    assert problems[0].startswith("slope.dcm states a rescale slope or intercept that is not a finite number")
    assert problems[1] == "boom.dcm could not be read (an unexpected error, written to the server's log)"


# --------------------------------------------------------------------------------------------------
# Silent wrong: geometry, burned-in annotation, echoed header values


def test_a_series_of_two_directions_or_with_one_image_twice_is_refused():
    axial = [(f"a{k}", dicom_bytes(brain() + k, position=float(k))) for k in range(2)]
    sagittal = [(f"s{k}", edited(dicom_bytes(brain() + k, position=float(k + 2)),
                                 ImageOrientationPatient=[0, 1, 0, 0, 0, -1])) for k in range(2)]
    tried("library: read_scan", "series mixing axial and sagittal slices")
    with pytest.raises(ScanRefused, match="cut in different directions"):
        read_scan([*axial, *sagittal])
    tried("library: read_scan", "series holding one file twice (one instance UID)")
    with pytest.raises(ScanRefused, match="the same image"):
        read_scan([*axial, ("copy", axial[1][1])])
    tried("library: read_scan", "series with two images at one position")
    with pytest.raises(ScanRefused, match="same position along the slice normal"):
        read_scan([*axial, ("twin", dicom_bytes(brain() + 7, position=1.0))])
    assert read_scan(axial).count == 2


@pytest.mark.parametrize("where", ["SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"])
def test_burned_in_annotation_is_found_inside_the_functional_groups(where, classifier):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from core.review.cases import cases_from_uploads

    inner = Dataset()
    inner.BurnedInAnnotation = "YES"
    group = Dataset()
    group.FrameContentSequence = Sequence([inner]) if where.startswith("PerFrame") else Sequence([])
    if where.startswith("Shared"):
        group.BurnedInAnnotation = "YES"
    blob = edited(dicom_bytes(brain()), **{where: Sequence([group])})
    tried("library: read_scan", f"BurnedInAnnotation YES only inside {where}")
    assert read_scan([("enhanced.dcm", blob)]).burned_in
    tried("library: cases_from_uploads", f"BurnedInAnnotation YES only inside {where}")
    found, _, problems = cases_from_uploads(classifier, [("enhanced.dcm", blob)])
    assert not found and "burned-in annotation" in problems[0]


def test_no_refusal_quotes_a_header_value_outside_a_fixed_list():
    colour = edited(dicom_bytes(np.zeros((64, 64))), SamplesPerPixel=3, PhotometricInterpretation=HOSTILE)
    tried("library: read_scan", f"colour DICOM with PhotometricInterpretation {HOSTILE}")
    with pytest.raises(ScanRefused) as refused:
        read_scan([("colour.dcm", colour)])
    assert str(refused.value) == "colour.dcm is a colour image, not an MR slice"
    rgb = edited(dicom_bytes(np.zeros((64, 64))), SamplesPerPixel=3, PhotometricInterpretation="RGB")
    with pytest.raises(ScanRefused, match=r"a colour image \(RGB\)"):  # a value from the standard's list is named
        read_scan([("rgb.dcm", rgb)])
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(dicom_bytes(np.zeros((64, 64)))))
    dataset.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.8.498.424242"  # a syntax nobody registered
    tried("library: read_scan", "DICOM stored in an unregistered transfer syntax")
    with pytest.raises(ScanRefused) as refused:
        read_scan([("private.dcm", _saved(dataset))])
    assert "424242" not in str(refused.value) and "does not decode" in str(refused.value)
    frames = patched(dicom_bytes(np.zeros((2, 64, 64))), b"\x28\x00\x08\x00IS\x02\x002 ",
                     b"\x28\x00\x08\x00IS\x02\x00Z^")  # NumberOfFrames as text
    tried("library: read_scan", "DICOM whose NumberOfFrames is text")
    with pytest.raises(ScanRefused) as refused:
        read_scan([("frames.dcm", frames)])
    assert "Z^" not in str(refused.value) and "not a number" in str(refused.value)


def test_the_predict_page_says_each_hostile_scan_in_a_sentence_and_shows_the_others():
    from streamlit.testing.v1 import AppTest

    def one(name: str, blob: bytes, series: int) -> tuple[str, bytes, str]:
        return name, edited(blob, SeriesInstanceUID=f"1.2.3.{series}"), "application/dicom"

    plain = dicom_bytes(brain())
    spaced = {"spacing-" + label.replace("\\", "-") + ".dcm": raw for raw, label in SPACINGS.items() if "\\" in label}
    uploads = [one(name, patched(plain, b"0.5\\0.8 ", raw), k) for k, (name, raw) in enumerate(spaced.items())]
    slope = patched(dicom_bytes(brain(), slope=1.23456789012), b"1.23456789012 ", b"not-a-number!!")
    uploads += [one("slope.dcm", slope, 10),
                one("colour.dcm", edited(plain, SamplesPerPixel=3, PhotometricInterpretation=HOSTILE), 11)]
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300).run()
    at = upload_scans(at, uploads)
    for name, _, _ in uploads:
        tried("page: Predict", f"{name} (DICOM)")
    assert not at.exception and not at.error
    text = page_text(at)
    assert "slope.dcm**: slope.dcm states a rescale slope" in html.unescape(" ".join(w.value for w in at.warning))
    assert "colour.dcm is a colour image, not an MR slice" in text and "ZORRO" not in text.upper()
    assert text.count("the file states no valid pixel spacing") == len(spaced) and "-1 x -1 mm" not in text
    assert len([h for h in at.main.subheader if "%" in h.value]) == len(spaced)  # each of the others explained
