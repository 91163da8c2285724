"""DICOM and NIfTI scans (core.sources.volumes): pydicom's and nibabel's own test files, and files written here with
known identifying values, none of which may leave the reader; grey levels, geometry, orientation and bounds."""

from __future__ import annotations

import gzip
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.sources import volumes
from core.sources.volumes import ScanRefused, read_dicom, read_nifti, read_scan, to_8_bit, unzip_series

SECRETS = {"PatientName": "Doe^Jane", "PatientID": "ID-SECRET-4711", "PatientBirthDate": "19700101",
           "AccessionNumber": "ACC-SECRET-99", "InstitutionName": "St Secret Hospital",
           "StudyDate": "20240229", "ImageComments": "secret comment about Jane",
           "ReferringPhysicianName": "Dr^Whoknows"}


def dicom_bytes(pixels: np.ndarray, *, position: float = 0.0, instance: int = 1, photometric: str = "MONOCHROME2",
                slope: float = 1.0, intercept: float = 0.0, window: tuple[float, float] | None = None,
                series: str = "1.2.826.0.1.3680043.8.498.1", burned_in: bool = False) -> bytes:
    """A DICOM MR file of these pixels (frames x rows x columns, or rows x columns), with every value in SECRETS
    and a private tag."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    pixels = np.asarray(pixels, dtype=np.int16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID, series
    ds.Modality = "MR"
    for keyword, value in SECRETS.items():
        setattr(ds, keyword, value)
    ds.private_block(0x0099, "SECRET CREATOR", create=True).add_new(0x01, "LO", "PRIVATE-SECRET-VALUE")
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelSpacing, ds.SliceThickness = [0.5, 0.8], 3.0
    ds.ImageOrientationPatient, ds.ImagePositionPatient = [1, 0, 0, 0, 1, 0], [0.0, 0.0, position]
    ds.InstanceNumber, ds.RescaleSlope, ds.RescaleIntercept = instance, slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if burned_in:
        ds.BurnedInAnnotation = "YES"
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def leaks(volume) -> list[str]:
    """Identifying values found anywhere in what the reader returns (its fields, its repr, its pickled bytes)."""
    everything = repr(volume).encode() + pickle.dumps(volume)
    values = [*SECRETS.values(), "PRIVATE-SECRET-VALUE", "Jane"]
    return [v for v in values if v.encode() in everything or v.replace("^", " ").encode() in everything]


def test_pydicoms_own_files_read_with_their_spacing_and_window():
    from pydicom.data import get_testdata_file

    ct = read_scan([("ct.dcm", Path(get_testdata_file("CT_small.dcm")).read_bytes())])
    assert ct.count == 1 and ct.slices.shape == (1, 128, 128) and ct.spacing_mm == pytest.approx((0.661468, 0.661468))
    assert "automatic window" in ct.window and "PatientName" in ct.withheld
    mr = read_scan([("mr.dcm", Path(get_testdata_file("MR_small.dcm")).read_bytes())])
    assert "centre 600, width 1600" in mr.window and mr.spacing_mm == pytest.approx((0.3125, 0.3125))
    assert mr.image(0).info["spacing_mm"] == mr.spacing_mm


def test_no_identifying_value_leaves_the_reader_and_what_was_withheld_is_named():
    pixels = np.arange(64 * 64).reshape(64, 64) % 1000
    volume = read_scan([("scan.dcm", dicom_bytes(pixels, burned_in=True))])
    assert leaks(volume) == []
    assert set(SECRETS) <= set(volume.withheld) and volume.private_tags == 1 and volume.burned_in


def test_rescale_window_and_monochrome1_set_the_grey_levels():
    stored = np.array([[0, 50], [100, 150]] * 32, dtype=np.int16).repeat(32, axis=1)  # 64 x 64
    # Stored 0..150 with slope 2 and intercept -100 are -100..200; the window centre 50, width 300 maps them to 0..255.
    plain = read_dicom([("a.dcm", dicom_bytes(stored, slope=2, intercept=-100, window=(50, 300)))])
    # Row 0 holds stored 0 and 50 (-100 and 0), row 1 stored 100 and 150 (100 and 200).
    assert [plain.slices[0, 0, 0], plain.slices[0, 0, -1], plain.slices[0, 1, 0], plain.slices[0, 1, -1]] == \
        [0, round(100 / 300 * 255), round(200 / 300 * 255), 255]
    inverted = read_dicom([("b.dcm", dicom_bytes(stored, slope=2, intercept=-100, window=(50, 300),
                                                 photometric="MONOCHROME1"))])
    assert np.array_equal(inverted.slices, 255 - plain.slices) and "MONOCHROME1" in inverted.notes[0]
    values, said = to_8_bit(np.array([0.0, 1.0, np.nan, 2.0]), None)
    assert values[2] == values[0] and "automatic" in said  # a value that is not a number shows as the lowest


def test_a_series_is_ordered_along_the_slice_normal_and_a_multiframe_file_gives_its_frames():
    files = [(f"f{k}.dcm", dicom_bytes(np.full((64, 64), 10 * k), position=float(k), instance=9 - k))
             for k in range(4)]
    volume = read_dicom([files[2], files[0], files[3], files[1]])
    assert [int(s[0, 0]) for s in volume.slices] == sorted(int(s[0, 0]) for s in volume.slices)
    multi = read_dicom([("multi.dcm", dicom_bytes(np.stack([np.full((64, 64), v) for v in (5, 50, 500)])))])
    assert multi.count == 3 and multi.slices[0, 0, 0] < multi.slices[1, 0, 0] < multi.slices[2, 0, 0]
    with pytest.raises(ScanRefused, match="different series"):
        read_dicom([files[0], ("other.dcm", dicom_bytes(np.zeros((64, 64)), series="1.2.3.4"))])


def test_a_zip_of_a_series_reads_like_its_files_and_a_zip_bomb_is_refused(monkeypatch):
    files = [(f"series/f{k}.dcm", dicom_bytes(np.full((64, 64), 10 * k), position=float(k))) for k in range(3)]
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, blob in files:
            archive.writestr(name, blob)
        archive.writestr("__MACOSX/._f0.dcm", b"junk")
    volume = read_scan([("series.zip", packed.getvalue())])
    assert volume.count == 3 and leaks(volume) == []
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.dcm", b"\0" * (4 << 20))
    monkeypatch.setattr(volumes, "MAX_SCAN_BYTES", 1 << 20)  # one limit: what the zip says it unpacks to, checked first
    with pytest.raises(ScanRefused, match="unpack"):
        unzip_series(bomb.getvalue())


def nifti_bytes(data: np.ndarray, affine: np.ndarray, gz: bool = False) -> bytes:
    import nibabel

    image = nibabel.Nifti1Image(data.astype(np.float32), affine)
    blob = image.to_bytes()
    return gzip.compress(blob) if gz else blob


def test_a_nifti_volume_is_turned_to_ras_so_that_left_is_left_and_front_is_up():
    # Stored in LPS order (x grows to the patient's left, y to the back), with one bright voxel at the patient's
    # left, front, top: after RAS reorientation it must be drawn on the left of the picture, at the top.
    data = np.zeros((20, 30, 10))
    data[18, 2, 8] = 100.0   # x index 18 of 20 in LPS: far left; y index 2 of 30 in LPS: near the front
    lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    lps[:2, 3] = [19, 29]
    for gz in (False, True):
        volume = read_nifti(nifti_bytes(data, lps, gz), axis=2)
        assert volume.count == 10 and volume.axis == "axial"
        row, column = np.unravel_index(np.argmax(volume.slices[8]), volume.slices[8].shape)
        assert volume.slices[8].shape == (30, 20)
        assert column < 10 and row < 15, (row, column)  # the patient's left on the picture's left; the front up
        assert volume.spacing_mm == pytest.approx((1.0, 1.0))
    coronal = read_nifti(nifti_bytes(data, lps), axis=1)
    assert coronal.count == 30 and coronal.slices.shape[1:] == (10, 20)


def test_nibabels_own_file_and_bad_nifti_inputs():
    import nibabel.testing

    standard = Path(nibabel.testing.data_path) / "standard.nii.gz"
    assert read_scan([("standard.nii.gz", standard.read_bytes())]).count >= 1
    with pytest.raises(ScanRefused, match="3-D volume"):
        read_nifti(nifti_bytes(np.zeros((4, 4, 4, 3)), np.eye(4)))
    with pytest.raises(ScanRefused, match="not a readable NIfTI"):
        read_nifti(b"not a nifti file at all" * 20)
    with pytest.raises(ScanRefused, match="axis"):
        read_nifti(nifti_bytes(np.zeros((4, 4, 4)), np.eye(4)), axis=3)


def test_bounds_hold_before_anything_is_decoded(monkeypatch):
    monkeypatch.setattr(volumes, "MAX_VOXELS", 1000)
    with pytest.raises(ScanRefused, match="voxels"):
        read_nifti(nifti_bytes(np.zeros((20, 20, 20)), np.eye(4)))
    with pytest.raises(ScanRefused, match="voxels"):
        read_dicom([("big.dcm", dicom_bytes(np.zeros((64, 64))))])
    with pytest.raises(ScanRefused, match="not a DICOM file"):
        read_dicom([("x.dcm", b"hello")])
    with pytest.raises(ScanRefused, match="no DICOM file"):
        read_dicom([])


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_compressed_transfer_syntaxes_decode_to_the_same_slice(name):
    from pydicom.data import get_testdata_file

    plain = read_scan([("mr.dcm", Path(get_testdata_file("MR_small.dcm")).read_bytes())])
    compressed = read_scan([(name, Path(get_testdata_file(name)).read_bytes())])
    assert np.array_equal(compressed.slices, plain.slices)  # lossless: the very same pixels after the same window


def test_uploads_are_sorted_into_series_volumes_and_pictures():
    from core.sources.volumes import scan_groups

    one = [(f"a{k}", dicom_bytes(np.zeros((64, 64)), position=k)) for k in range(2)]  # no extension: found by content
    other = [("b.dcm", dicom_bytes(np.zeros((64, 64)), series="1.2.3.4"))]
    nifti = [("brain.nii.gz", nifti_bytes(np.zeros((8, 8, 8)), np.eye(4), gz=True))]
    picture = [("slice.png", b"\x89PNG\r\n\x1a\n" + b"0" * 200)]
    groups, pictures = scan_groups([one[0], picture[0], other[0], one[1], nifti[0]])
    assert [[name for name, _ in group] for group in groups] == [["a0", "a1"], ["b.dcm"], ["brain.nii.gz"]]
    assert pictures == picture


def page_text(at) -> str:
    """Every text the page holds: markdown, captions, headings, warnings, and image captions."""
    import html

    parts = [e.value for kind in ("markdown", "caption", "subheader", "warning", "error", "title") for e in
             getattr(at, kind)]
    parts += [c for image in at.image for c in image.captions]
    return html.unescape(" ".join(str(p) for p in parts))


def test_a_dicom_series_and_a_nifti_volume_on_the_predict_page_scroll_explain_and_keep_no_identifier():
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT, synthetic_slice, upload_scans

    brain = np.kron(synthetic_slice(0, seed=4, size=112), np.ones((2, 2), np.uint8)).astype(np.int16)
    series = [(f"IM{k:04d}", dicom_bytes(brain + 5 * k, position=float(k), instance=k + 1), "application/dicom")
              for k in range(3)]
    cube = np.repeat(brain.T[:, ::-1, None], 5, axis=2).astype(np.float32)
    nifti = ("brain.nii.gz", nifti_bytes(cube, np.eye(4), gz=True), "application/gzip")
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300).run()
    at = upload_scans(at, [*series, nifti])
    assert not at.exception and not at.error
    text = page_text(at)
    assert "IM0000 and 2 more files of its series" in text and "brain.nii.gz" in text
    assert "slice 2 of 3" in text and "slice 3 of 5" in text  # each opens at its middle slice
    # one in each file
    assert "pixels of 0.8 x 0.5 mm" in text and "patient's name" in text and "3 private tags" in text
    assert len([h for h in at.main.subheader if "%" in h.value]) == 2  # both explained
    for secret in [*SECRETS.values(), "PRIVATE-SECRET-VALUE"]:
        assert secret not in text and secret.replace("^", " ") not in text
    slider = next(s for s in at.slider if s.label == "Slice" and s.max == 3)
    slider.set_value(3).run()
    assert "slice 3 of 3" in page_text(at) and not at.exception


def test_hostile_scans_are_refused_in_a_sentence(monkeypatch):
    good = dicom_bytes(np.zeros((64, 64)))
    with pytest.raises(ScanRefused, match="damaged|cannot be decoded"):
        read_dicom([("cut.dcm", good[: len(good) - 3000])])
    import pydicom

    dataset = pydicom.dcmread(io.BytesIO(good))
    del dataset.PixelData
    empty = io.BytesIO()
    dataset.save_as(empty)
    with pytest.raises(ScanRefused, match="no pixel data"):
        read_dicom([("report.dcm", empty.getvalue())])
    dataset = pydicom.dcmread(io.BytesIO(good))
    dataset.Rows = dataset.Columns = 60000  # claims 3.6 G pixels; holds 4 K
    claimed = io.BytesIO()
    dataset.save_as(claimed)
    with pytest.raises(ScanRefused, match="voxels|limit"):
        read_dicom([("liar.dcm", claimed.getvalue())])
    header_only = nifti_bytes(np.zeros((2, 2, 2)), np.eye(4))
    import nibabel

    liar = nibabel.Nifti1Image.from_bytes(header_only)
    liar.header.set_data_shape((5000, 5000, 5000))
    with pytest.raises(ScanRefused, match="voxels"):
        read_nifti(liar.header.binaryblock + header_only[348:])
    monkeypatch.setattr(volumes, "MAX_SCAN_BYTES", 1 << 20)
    with pytest.raises(ScanRefused, match="would unpack to 4 MB"):  # from its header, before the voxels are inflated
        read_nifti(gzip.compress(nifti_bytes(np.zeros((128, 128, 64)), np.eye(4))))


def test_evaluate_and_train_read_dicom_and_nifti_files_as_their_stated_slice(tmp_path, monkeypatch):
    from conftest import synthetic_slice
    from core.config import TrainConfig
    from core.evaluation import EvaluationSettings, evaluate
    from core.runs import read_run
    from core.trainer import train

    monkeypatch.delenv(volumes.SLICE_ENV, raising=False)
    tree = tmp_path / "tree"
    for label, folder in enumerate(["glioma", "meningioma", "notumor", "pituitary"]):
        (tree / folder).mkdir(parents=True)
        for k in range(3):
            pixels = synthetic_slice(label, seed=10 * label + k, size=64).astype(np.int16)
            stack = np.stack([pixels // 4, pixels, pixels // 2])  # three frames: only the middle one is the slice
            (tree / folder / f"IM{k:04d}").write_bytes(dicom_bytes(stack))  # no extension, as scanners write
        volume = np.stack([pixels.T[:, ::-1]] * 3, axis=2).astype(np.float32)
        (tree / folder / "brain.nii.gz").write_bytes(nifti_bytes(volume, np.eye(4), gz=True))
    checkpoint = train(TrainConfig(data=str(tree), out=str(tmp_path / "model"), image_size=48, epochs=1,
                                   head_epochs=1, batch_size=8, weights="none", num_workers=0, progress=False,
                                   precision="fp32", val_fraction=0.25, test_fraction=0.0, seed=1))
    run = read_run(evaluate(EvaluationSettings(checkpoint=str(checkpoint), data=str(tree), out=str(tmp_path / "run"),
                                               precision="fp32", progress=False, bootstrap_resamples=20,
                                               num_workers=0, localisation="off", volume_slice="2")))
    assert sorted(run.predictions["path"])[:4] == ["glioma/IM0000", "glioma/IM0001", "glioma/IM0002",
                                                   "glioma/brain.nii.gz"]
    assert len(run.predictions) == 16 and not run.info["dataset"]["skipped"]
    assert run.info["settings"]["volume_slice"] == "2"
    with pytest.raises(ScanRefused, match="neither 'middle' nor"):
        volumes.use_slice("last")
    monkeypatch.setenv(volumes.SLICE_ENV, "9")
    with pytest.raises(ScanRefused, match="does not exist"):
        volumes.dataset_slice((tree / "glioma" / "IM0000").read_bytes())


# --------------------------------------------------------------------------------------------------
# The figshare release as published (.mat files)


def test_a_release_slice_reads_with_its_label_patient_and_mask_the_right_way_round():
    from core.sources.figshare import MatRefused, read_mat
    from figshare_files import mat_bytes

    image = np.zeros((64, 48), dtype=np.int16)
    image[5:10, 30:40] = 800                       # a bright patch in the top right, not symmetric
    mask = np.zeros((64, 48), bool)
    mask[5:10, 30:40] = True
    found = read_mat(mat_bytes(image, "pituitary", "MRN-100360", mask))
    assert (found.label, found.patient) == ("pituitary", "MRN-100360")
    assert found.pixels.shape == (64, 48) and found.pixels[7, 35] == 255 and found.pixels[40, 10] == 0
    assert np.array_equal(found.mask, mask)  # column-major storage turned back
    with pytest.raises(MatRefused, match="MATLAB v7.3"):
        read_mat(b"MATLAB 5.0 MAT-file" + b"\0" * 600)
    with pytest.raises(MatRefused, match="label 7"):
        blob = bytearray(mat_bytes(image, "glioma", "x"))
        import h5py

        buffer = io.BytesIO(bytes(blob))
        with h5py.File(buffer, "r+") as handle:
            handle["cjdata/label"][...] = 7.0
        read_mat(buffer.getvalue())


def test_a_release_folder_is_a_dataset_split_by_patient_with_its_own_folds(tmp_path):
    from core.config import TrainConfig
    from core.data import scan_class_folders
    from core.sources.figshare import cv_folds, release_files
    from core.sources.images import read_image
    from core.split import join_groups
    from figshare_files import write_release

    root = write_release(tmp_path / "release", patients=10, per_patient=3)
    tree = scan_class_folders(root)
    assert len(tree.samples) == 30 and set(tree.patients.values()) == {f"PID{p:03d}" for p in range(10)}
    assert tree.counts()["glioma"] == 9 and tree.counts()["notumor"] == 0
    assert [f.name for f in release_files(root)][:3] == ["1.mat", "2.mat", "3.mat"]
    folds = cv_folds(root)
    by_patient = {}
    for number, fold in folds.items():
        by_patient.setdefault(f"PID{(number - 1) // 3:03d}", set()).add(fold)
    assert all(len(f) == 1 for f in by_patient.values())  # the release's folds keep a patient together
    picture = read_image(tree.samples[0].path)
    assert picture.info["patient"] == "PID000" and picture.mode == "RGB"
    # Duplicate groups 0..3 with patients a, b, a, None: the two groups of patient a become one.
    assert join_groups(np.array([0, 1, 2, 3]), ["a", "b", "a", None]).tolist() == [0, 1, 0, 2]
    assert TrainConfig(data=str(root)).volume_slice == "middle"


def test_no_identifying_value_reaches_a_run_the_review_database_or_a_report(tmp_path):
    """A DICOM file with known identifying values, through every place that keeps something: an evaluation run, a
    review session (its database and its data folder) and both PDF reports."""
    from conftest import ROOT, synthetic_slice
    from core import load_classifier
    from core.evaluation import EvaluationSettings, evaluate
    from core.review import open_database, store
    from core.review.agreement import answers_table, session_summary
    from core.review.cases import cases_from_uploads, keep_uploads, load_case_image
    from core.review.reports import case_report, session_report
    from core.review.schema import close_databases

    pixels = np.kron(synthetic_slice(0, seed=8, size=112), np.ones((2, 2), np.uint8)).astype(np.int16)
    scan = dicom_bytes(pixels)
    tree = tmp_path / "tree"
    for folder in ("glioma", "meningioma", "notumor", "pituitary"):
        (tree / folder).mkdir(parents=True)
        (tree / folder / "IM0001.dcm").write_bytes(scan)
    run = evaluate(EvaluationSettings(checkpoint=str(ROOT / "assets/models/default"), data=str(tree),
                                      out=str(tmp_path / "run"), progress=False, bootstrap_resamples=10,
                                      num_workers=0, localisation="off"))
    classifier = load_classifier(ROOT / "assets/models/default")
    series = [(f"IM{k:04d}", dicom_bytes(pixels // (k + 1), position=3.0 * k, instance=k + 1,
                                         series="1.2.826.0.1.3680043.8.498.2")) for k in range(3)]
    cases, blobs, problems = cases_from_uploads(classifier, [("IM0001.dcm", scan), *series])
    assert not problems and len(cases) == 2 and sorted(name.rsplit(".", 1)[1] for name in blobs) == ["npz", "png",
                                                                                                     "png"]
    (stack,) = [blob for name, blob in blobs.items() if name.endswith(".npz")]
    with np.load(io.BytesIO(stack), allow_pickle=False) as packed:  # pixels and spacing, nothing else
        assert sorted(packed.files) == ["position", "slices", "spacing"] and packed["slices"].shape == (3, 224, 224)
        assert packed["slices"].dtype == np.uint8 and packed["spacing"].tolist() == [0.5, 0.8]
    data = tmp_path / "data"
    keep_uploads(data, blobs)
    engine = open_database(f"sqlite:///{data / 'review.sqlite'}")
    session, _, keys = store.create_session(engine, "privacy check", cases, list(classifier.classes),
                                            readers=["Ann"], source={"type": "uploads"}, model={"path": "x"})
    ann = store.reader_by_key(engine, keys["Ann"])
    case = store.session_cases(engine, session.id)[0]
    answer = store.commit_answer(engine, ann, case.id, "glioma", 4, "fine")
    image = load_case_image(data / case.image, case.image_sha256)
    pdfs = [case_report(session=session, case=case, scan=image, heatmap=None, reader="Ann", answer=answer,
                        revealed=True)]
    table = answers_table([case], store.session_answers(engine, session))
    pdfs.append(session_report(session=session, cases=[case], table=table,
                               summary=session_summary(table, session.classes), gallery=[(case, image, None, ["x"])]))
    close_databases()
    kept = [p.read_bytes() for folder in (run, data) for p in folder.rglob("*") if p.is_file()]
    texts = [" ".join(page.extract_text() for page in __import__("pypdf").PdfReader(io.BytesIO(pdf)).pages)
             for pdf in pdfs]
    for secret in [*SECRETS.values(), "PRIVATE-SECRET-VALUE"]:
        for variant in {secret, secret.replace("^", " ")}:
            assert not any(variant.encode() in blob for blob in kept), (variant, "on disk")
            assert not any(variant.encode() in pdf or variant in text for pdf, text in zip(pdfs, texts)), variant


def test_an_evaluation_of_the_release_counts_patients_and_resamples_them(tmp_path):
    from conftest import ROOT
    from core.evaluation import EvaluationSettings, evaluate
    from core.runs import read_run
    from figshare_files import write_release

    root = write_release(tmp_path / "release", patients=10, per_patient=3, size=96)
    run = read_run(evaluate(EvaluationSettings(checkpoint=str(ROOT / "assets/models/default"), data=str(root),
                                               out=str(tmp_path / "run"), progress=False, bootstrap_resamples=30,
                                               num_workers=0, localisation="off")))
    assert len(run.predictions) == 30
    patients = run.metrics["patients"]
    assert patients["patients"] == 10 and sum(v["patients"] for v in patients["per_class"].values()) == 10
    low, high = run.metrics["all"]["intervals"]["accuracy"]
    assert low <= run.metrics["accuracy"] <= high


def test_the_bootstrap_resamples_patients_where_the_data_names_them():
    from core.metrics import BootstrapSettings, bootstrap_intervals
    from core.split import join_groups

    # 10 patients of 20 slices each, every slice of a patient answered alike: resampling slices would pretend to
    # 200 independent answers and give a narrow interval; resampling patients gives the honest, wider one.
    rng = np.random.default_rng(0)
    right_patient = rng.random(10) < 0.7
    labels = np.zeros(200, dtype=int)
    probs = np.tile([0.1, 0.3, 0.3, 0.3], (200, 1))
    probs[np.repeat(right_patient, 20)] = [0.7, 0.1, 0.1, 0.1]
    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    by_slice = bootstrap_intervals(labels, probs, classes, np.arange(200), BootstrapSettings(300))["accuracy"]
    patients = [f"P{k // 20}" for k in range(200)]
    by_patient = bootstrap_intervals(labels, probs, classes, join_groups(np.arange(200), patients),
                                     BootstrapSettings(300))["accuracy"]
    assert by_patient[1] - by_patient[0] > 2 * (by_slice[1] - by_slice[0])


def test_a_scale_bar_is_as_long_as_the_millimetres_it_says():
    from PIL import Image

    from dashboard.heatmaps import with_scale_bar

    # 400 px at 0.5 mm a pixel: a fifth of the width is 80 px (40 mm); the nearest round length is 50 mm, 100 px.
    picture = np.asarray(with_scale_bar(Image.new("RGB", (400, 400), (0, 0, 80)), mm_per_pixel=0.5))
    bar_row = picture[400 - 6 - 1]  # the margin is 6 px and the bar 2 px thick at this size
    assert len(np.flatnonzero((bar_row == 255).all(axis=1))) == 101  # 100 px from its first pixel to its last
    assert (picture[:300] == [0, 0, 80]).all()  # nothing drawn over the rest of the picture


def test_the_release_scores_heatmaps_against_the_masks_inside_its_files(tmp_path):
    from conftest import ROOT
    from core.evaluation import EvaluationSettings, evaluate
    from core.masks import read_mask
    from core.runs import read_run
    from figshare_files import write_release

    root = write_release(tmp_path / "release", patients=6, per_patient=2, size=96)
    first = sorted(root.glob("*/1.mat"))[0]
    mask = read_mask(first, 96, 96)
    assert mask[24:48, 24:48].all() and mask.sum() == 24 * 24  # the square write_release drew, the right way round
    assert read_mask(first, 192, 192).sum() == 48 * 48       # resized to a scan of twice the size
    run = read_run(evaluate(EvaluationSettings(checkpoint=str(ROOT / "assets/models/default"), data=str(root),
                                               out=str(tmp_path / "run"), progress=False, bootstrap_resamples=20,
                                               num_workers=0)))
    assert run.masks is not None and len(run.masks) == 12
    assert set(run.metrics["masks"]["per_class"]) <= {"glioma", "meningioma", "pituitary"}


def test_a_release_slice_shows_its_own_outline_over_the_heatmap(tmp_path):
    from PIL import Image

    from dashboard import review
    from figshare_files import write_release

    root = write_release(tmp_path / "datasets" / "figshare", patients=3, per_patient=1, size=96)
    relative = sorted(p.relative_to(root).as_posix() for p in root.glob("*/1.mat"))[0]
    mask = review.mask_path(tmp_path / "datasets", "figshare", relative)
    assert mask == root / relative
    drawn, notes = review.draw_truth(Image.new("RGB", (192, 192)), root / relative, mask)
    cyan = (np.asarray(drawn) == [0, 255, 255]).all(axis=2)
    assert notes and cyan[48:96, 48:96].any() and not cyan[100:, 100:].any()  # on the square's edge, nowhere else
    assert review.mask_path(tmp_path / "datasets", "figshare", "../../etc/passwd.mat") is None


def test_hostile_mat_files_cannot_reach_other_files_or_claim_memory(tmp_path):
    import h5py

    from core.sources.figshare import MatRefused, read_mat

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(64 * 64, dtype=np.int16).tobytes())

    def crafted(build) -> bytes:
        buffer = io.BytesIO()
        with h5py.File(buffer, "w", userblock_size=512) as handle:
            group = handle.create_group("cjdata")
            group["label"], group["PID"] = np.array([[2.0]]), np.array([[65]], dtype=np.uint16)
            build(group)
        blob = bytearray(buffer.getvalue())
        blob[:6] = b"MATLAB"
        return bytes(blob)

    outside = crafted(lambda g: g.create_dataset("image", shape=(64, 64), dtype="<i2",
                                                 external=[(str(secret), 0, 64 * 64 * 2)]))
    with pytest.raises(MatRefused, match="not an array stored in the file"):
        read_mat(outside)
    linked = crafted(lambda g: g.__setitem__("image", h5py.ExternalLink(str(secret), "/x")))
    with pytest.raises(MatRefused, match="points outside the file"):
        read_mat(linked)
    huge = crafted(lambda g: g.create_dataset("image", shape=(1,), dtype=np.dtype(("f8", (16000, 16000)))))
    with pytest.raises(MatRefused, match="not plain numbers"):
        read_mat(huge)
    claimed = crafted(lambda g: g.create_dataset("image", shape=(2 ** 20, 2 ** 20), dtype="<i2", chunks=(64, 64)))
    with pytest.raises(MatRefused, match="byte limit"):
        read_mat(claimed)


def test_dicom_files_that_lie_or_would_inflate_without_bound_are_refused_and_log_no_value(caplog):
    import pydicom

    good = dicom_bytes(np.zeros((64, 64)))
    dataset = pydicom.dcmread(io.BytesIO(good))
    dataset.PixelData = np.zeros((5, 64, 64), dtype=np.int16).tobytes()  # five frames of data, one in the header
    liar = io.BytesIO()
    dataset.save_as(liar)
    with pytest.raises(ScanRefused, match="far more|decodes to"):
        read_dicom([("liar.dcm", liar.getvalue())])
    deflated = io.BytesIO()
    dataset = pydicom.dcmread(io.BytesIO(good))
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    dataset.save_as(deflated)
    with pytest.raises(ScanRefused, match="deflate"):
        read_dicom([("deflated.dcm", deflated.getvalue())])
    dataset = pydicom.dcmread(io.BytesIO(good))
    dataset.PatientAge = "45 yrs SECRET-AGE"  # an invalid AS value: pydicom would log it, value and all
    odd = io.BytesIO()
    dataset.save_as(odd)
    with caplog.at_level("DEBUG"):
        read_dicom([("odd.dcm", odd.getvalue())])
    assert "SECRET-AGE" not in caplog.text


def test_an_encrypted_or_damaged_zip_member_is_a_sentence():
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("f0.dcm", dicom_bytes(np.zeros((64, 64))))
    blob = bytearray(packed.getvalue())
    encrypted = bytearray(blob)
    encrypted[encrypted.find(b"PK\x01\x02") + 8] |= 0x01  # the "encrypted" flag, as the central directory says it
    with pytest.raises(ScanRefused, match="cannot be unpacked"):
        unzip_series(bytes(encrypted))
    damaged = bytearray(blob)
    damaged[damaged.find(b"PK\x01\x02") + 16] ^= 0xFF  # a wrong CRC-32
    with pytest.raises(ScanRefused, match="cannot be unpacked"):
        unzip_series(bytes(damaged))


def test_nifti_scans_are_scored_against_nifti_label_masks_with_a_margin_in_millimetres(tmp_path, monkeypatch):
    """A research dataset of NIfTI volumes with label volumes beside them: each mask is cut on the scan's own slice
    and turned the same way, and the tumour is grown by millimetres from the volume's voxel sizes."""
    from conftest import random_classifier
    from core.evaluation import EvaluationSettings, evaluate
    from core.masks import margin_text, read_mask
    from core.runs import read_run

    monkeypatch.delenv(volumes.SLICE_ENV, raising=False)
    affine = np.diag([0.5, 0.8, 3.0, 1.0])  # RAS, columns 0.5 mm and rows 0.8 mm apart on an axial slice
    scans, masks = tmp_path / "study", tmp_path / "study-masks"
    for folder in ("glioma", "meningioma"):
        (scans / folder).mkdir(parents=True)
        (masks / folder).mkdir(parents=True)
        for k in range(2):
            rng = np.random.default_rng(k)
            volume = rng.uniform(0, 20, (96, 72, 5))
            labels = np.zeros((96, 72, 5))
            labels[60 + k:72, 6:14, 2] = 2.0  # a lopsided tumour on the middle slice, to the patient's right-front
            labels[64:68, 8:10, 2] = 4.0       # a second label inside it (as segmentations carry): still tumour
            volume[60 + k:72, 6:14, :] = 200.0  # bright through the volume, outlined on the middle slice
            (scans / folder / f"case{k}.nii.gz").write_bytes(nifti_bytes(volume, affine, gz=True))
            (masks / folder / f"case{k}.nii.gz").write_bytes(nifti_bytes(labels, affine, gz=True))
    picture = volumes.dataset_slice((scans / "glioma" / "case0.nii.gz").read_bytes())
    assert picture.size == (96, 72) and picture.info["spacing_mm"] == pytest.approx((0.8, 0.5))
    found = read_mask(masks / "glioma" / "case0.nii.gz", 96, 72, picture.info)
    assert np.array_equal(found, np.asarray(picture) > 150)  # cut and turned as the scan's slice is
    assert found.sum() == 12 * 8
    with pytest.raises(ValueError, match="not the same proportions"):
        read_mask(masks / "glioma" / "case0.nii.gz", 72, 72, picture.info)
    with pytest.raises(ValueError, match="only for a NIfTI scan"):  # a picture or DICOM slice is turned otherwise
        read_mask(masks / "glioma" / "case0.nii.gz", 96, 72)
    other = tmp_path / "other.nii.gz"  # a label volume of another scan: nine slices, not five
    other.write_bytes(nifti_bytes(np.ones((96, 72, 9)), affine, gz=True))
    with pytest.raises(ValueError, match="belongs to another volume"):
        read_mask(other, 96, 72, picture.info)
    model = random_classifier(tmp_path / "model", seed=3).path
    run = read_run(evaluate(EvaluationSettings(checkpoint=str(model), data=str(scans), out=str(tmp_path / "run"),
                                               precision="fp32", progress=False, bootstrap_resamples=20,
                                               num_workers=0, mask_dilation_mm=2.5)))
    assert run.info["dataset"]["masks"] == "study-masks" and len(run.masks) == 4
    assert (run.masks["margin_mm"] == 2.5).all() and margin_text(run.metrics["masks"]) == "2.5 mm"
    assert run.masks["dilated_share"].gt(12 * 8 / (96 * 72)).all()  # the outline grown beyond itself


def test_a_slice_of_pixels_that_are_not_square_is_shown_in_true_proportion():
    from PIL import Image

    from dashboard.heatmaps import in_proportion

    # 128 x 128 pixels of 0.5 mm down and 0.8 mm across: 64 mm high, 102.4 mm wide; shown 512 wide, 320 high.
    pictures, mm_per_pixel = in_proportion([Image.new("L", (128, 128)), Image.new("RGB", (128, 128))], (0.5, 0.8))
    assert [p.size for p in pictures] == [(512, 320)] * 2 and mm_per_pixel == pytest.approx(0.2)
    # Square pixels keep their shape, only enlarged to be legible; a large slice is left as it is.
    assert in_proportion([Image.new("L", (200, 100))], (1.0, 1.0))[0][0].size == (512, 256)
    big, mm = in_proportion([Image.new("L", (900, 600))], (0.3, 0.3))
    assert big[0].size == (900, 600) and mm == pytest.approx(0.3)
