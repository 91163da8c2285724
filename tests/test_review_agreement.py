"""What a session's answers say (core.review.agreement) and which cases a session reads (core.review.cases), on
hand-computed examples."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.review import ReviewError
from core.review.agreement import (
    answers_table,
    case_difficulty,
    cohen_interval,
    cohen_kappa,
    cohen_kappas_weighted,
    confusion,
    disagreements,
    fleiss_interval,
    fleiss_kappa,
    fleiss_kappas_weighted,
    fleiss_summary,
    heatmap_ratings,
    reader_summary,
)
from core.review.cases import (
    case_image_file,
    checked_upload,
    keep_uploads,
    load_case_image,
    select_rows,
    stratified_sample,
)
from core.review.store import CaseView
from core.sources import FileRefused, ImageRefused

TWO = ["glioma", "notumor"]


def test_cohen_kappa_by_hand():
    # 10 scans; the reader and the reference agree on 8; both say glioma 5 times: chance agreement 0.5,
    # kappa = (0.8 - 0.5) / (1 - 0.5) = 0.6.
    reference = ["glioma"] * 5 + ["notumor"] * 5
    reader = ["glioma"] * 4 + ["notumor"] * 5 + ["glioma"]
    assert cohen_kappa(reader, reference, TWO) == pytest.approx(0.6)
    assert cohen_kappa(reference, reference, TWO) == pytest.approx(1.0)
    assert np.isnan(cohen_kappa(["glioma"] * 3, ["glioma"] * 3, TWO))  # chance agreement 1: undefined, not 1
    assert np.isnan(cohen_kappa([], [], TWO))


def test_fleiss_kappa_by_hand():
    # 4 scans, 3 readers. Agreement per scan: 1, 1, 1/3, 1/3 -> mean 2/3; class shares 1/2, 1/2 -> chance 1/2;
    # kappa = (2/3 - 1/2) / (1 - 1/2) = 1/3.
    counts = np.array([[3, 0], [0, 3], [2, 1], [1, 2]])
    assert fleiss_kappa(counts) == pytest.approx(1 / 3)
    assert np.isnan(fleiss_kappa(np.array([[1, 0], [0, 1]])))  # one rater each: undefined


def test_the_vectorised_bootstrap_kappas_are_the_libraries_kappas():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 4, 60), rng.integers(0, 4, 60)
    b[:30] = a[:30]
    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    names = np.array(classes)
    weights = np.vstack([np.ones(60), rng.multinomial(60, np.full(60, 1 / 60))])
    vectorised = cohen_kappas_weighted(a, b, 4, weights)
    assert vectorised[0] == pytest.approx(cohen_kappa(names[a], names[b], classes))
    drawn = np.repeat(np.arange(60), weights[1].astype(int))
    assert vectorised[1] == pytest.approx(cohen_kappa(names[a[drawn]], names[b[drawn]], classes))
    counts = rng.multinomial(5, [0.4, 0.3, 0.2, 0.1], size=25)
    subject_weights = np.vstack([np.ones(25), rng.multinomial(25, np.full(25, 1 / 25))])
    fleiss = fleiss_kappas_weighted(counts, subject_weights)
    assert fleiss[0] == pytest.approx(fleiss_kappa(counts))
    assert fleiss[1] == pytest.approx(fleiss_kappa(np.repeat(counts, subject_weights[1].astype(int), axis=0)))


def test_kappa_intervals_hold_the_estimate_and_are_withheld_when_mostly_undefined():
    rng = np.random.default_rng(5)
    truth = rng.choice(TWO, 80)
    reader = np.where(rng.random(80) < 0.8, truth, rng.choice(TWO, 80))
    low, high = cohen_interval(list(reader), list(truth), TWO)
    assert low < cohen_kappa(reader, truth, TWO) < high and high - low < 0.5
    counts = rng.multinomial(4, [0.7, 0.3], size=40)
    low, high = fleiss_interval(counts)
    assert low < fleiss_kappa(counts) < high
    # Three items, two of one class: a third of the resamples hold one class only and have no kappa.
    assert all(np.isnan(cohen_interval(["glioma", "glioma", "notumor"], ["glioma", "glioma", "notumor"], TWO)))


def test_fleiss_uses_the_readers_who_finished_and_names_the_others():
    rows = []
    for case in range(1, 11):
        for reader in ("Ann", "Bob"):
            rows.append({"reader": reader, "case": case, "answer": TWO[case % 2]})
    rows.append({"reader": "Late", "case": 1, "answer": "glioma"})
    table = pd.DataFrame(rows)
    fleiss = fleiss_summary(table, TWO, cases=10)
    assert (fleiss["readers"], fleiss["cases"], fleiss["left_out"]) == (2, 10, ["Late"])
    assert fleiss["kappa"] == pytest.approx(1.0)
    assert fleiss_summary(table, TWO)["cases"] == 1  # without the session's size: the cases all three answered


def session_table() -> pd.DataFrame:
    """Two readers and four cases with references; the model is right on cases 1-3."""
    cases = [CaseView(k, k, f"img{k}", "0" * 64, f"img{k}", ref, model, None)
             for k, (ref, model) in enumerate([("glioma", "glioma"), ("glioma", "glioma"), ("notumor", "notumor"),
                                               ("notumor", "glioma")])]
    answers = []
    for reader, labels in [("Ann", ["glioma", "notumor", "notumor", "notumor"]),
                           ("Bob", ["glioma", "glioma", "notumor", "glioma"])]:
        for case, label in zip(cases, labels):
            answers.append({"reader": reader, "case_id": case.id, "label": label, "confidence": 3, "note": "",
                            "heatmap_rating": "right" if case.id == 0 else None, "revised_label": None,
                            "revised_note": None, "answered_at": None})
    answers[3]["revised_label"] = "glioma"
    return answers_table(cases, answers)


def test_reader_summaries_by_hand():
    summary = reader_summary(session_table(), TWO).set_index("reader")
    assert summary.loc["Ann", "accuracy"] == pytest.approx(3 / 4)
    assert summary.loc["Bob", "accuracy"] == pytest.approx(3 / 4)
    assert summary.loc["Ann", "model_accuracy"] == pytest.approx(3 / 4)
    # Ann against the reference: agree 3/4, shares glioma 1/4 (Ann) and 1/2 (reference): chance 1/2 -> kappa 0.5.
    assert summary.loc["Ann", "kappa_reference"] == pytest.approx(0.5)
    # Ann against the model (glioma, glioma, notumor, glioma): agree 2/4, chance 1/4*3/4 + 3/4*1/4 = 3/8 -> 0.2.
    assert summary.loc["Ann", "kappa_model"] == pytest.approx((0.5 - 0.375) / 0.625)
    assert summary.loc["Bob", "kappa_model"] == pytest.approx(1.0)
    assert summary.loc["Ann", "accuracy_low"] < 0.75 < summary.loc["Ann", "accuracy_high"]
    assert summary.loc["Ann", "changed_mind"] == 1 and summary.loc["Bob", "changed_mind"] == 0


def test_fleiss_difficulty_disagreements_confusion_and_ratings_by_hand():
    table = session_table()
    # Per case (glioma, notumor counts): [2,0], [1,1], [0,2], [1,1]: agreement 1, 0, 1, 0 -> 1/2; shares 1/2 each
    # -> chance 1/2; kappa 0.
    assert fleiss_summary(table, TWO)["kappa"] == pytest.approx(0.0)
    assert fleiss_summary(table[table["reader"] == "Ann"], TWO) is None
    hardest = case_difficulty(table)
    assert list(hardest["case"][:2]) == [2, 4] and list(hardest["share_wrong"]) == [0.5, 0.5, 0.0, 0.0]
    assert list(zip(disagreements(table)["reader"], disagreements(table)["case"])) == [("Ann", 2), ("Ann", 4)]
    assert confusion(table[table["reader"] == "Bob"], TWO).to_numpy().tolist() == [[2, 0], [1, 1]]
    ratings = heatmap_ratings(table)
    assert ratings.loc["right", "model right"] == 2 and ratings.loc["wrong"].sum() == 0


# --------------------------------------------------------------------------------------------------
# Case lists


def predictions(n_per_class=(6, 3, 1)) -> pd.DataFrame:
    rows = []
    for label, n in zip(["glioma", "meningioma", "notumor"], n_per_class):
        for k in range(n):
            rows.append({"path": f"{label}/{k}.png", "label": label, "pred": label if k % 3 else "pituitary",
                         "confidence": 0.5 + k / 20})
    return pd.DataFrame(rows)


def test_case_selections_and_orders():
    table = predictions()
    assert list(select_rows(table, "errors")["path"]) == ["glioma/0.png", "glioma/3.png", "meningioma/0.png",
                                                           "notumor/0.png"]
    assert list(select_rows(table, "all", true_class="meningioma")["path"]) == [f"meningioma/{k}.png"
                                                                                  for k in range(3)]
    assert list(select_rows(table, "uncertain", count=3)["confidence"]) == [0.5, 0.5, 0.5]
    sample = select_rows(table, "sample", count=5, seed=1)
    assert sample["label"].value_counts().to_dict() == {"glioma": 3, "meningioma": 2}  # 3, 1.5, 0.5 -> 3, 2, 0
    assert sample.equals(select_rows(table, "sample", count=5, seed=1))
    shuffled = select_rows(table, "all", order="shuffled", seed=4)
    assert sorted(shuffled["path"]) == sorted(table["path"]) and list(shuffled["path"]) != list(table["path"])
    assert shuffled.equals(select_rows(table, "all", order="shuffled", seed=4))
    with pytest.raises(ReviewError, match="how many"):
        select_rows(table, "sample")


def test_a_stratified_sample_keeps_each_class_share():
    labels = pd.Series(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    drawn = labels.iloc[stratified_sample(labels, 10, seed=0)]
    assert drawn.value_counts().to_dict() == {"a": 5, "b": 3, "c": 2}
    assert len(stratified_sample(labels, 500, seed=0)) == 100


def png_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def test_an_upload_is_checked_without_touching_the_disk_and_kept_once_by_its_hash(tmp_path):
    blob = png_bytes(0)
    name, digest, image, kept = checked_upload(blob)
    assert kept == blob and digest == hashlib.sha256(blob).hexdigest()
    assert name == f"uploads/{digest}.png" and image.size == (64, 64)
    assert not (tmp_path / "uploads").exists()
    keep_uploads(tmp_path, {name: blob})
    keep_uploads(tmp_path, {name: blob})
    assert [p.name for p in (tmp_path / "uploads").iterdir()] == [f"{digest}.png"]
    with pytest.raises(ImageRefused):
        checked_upload(b"<svg></svg>")


def test_uploads_become_cases_once_each_in_the_order_asked(tmp_path):
    from conftest import random_classifier
    from core.review.cases import cases_from_uploads, in_order

    classifier = random_classifier(tmp_path, seed=0)
    uploads = [("a.png", png_bytes(1)), ("b.png", png_bytes(2)), ("again.png", png_bytes(1)), ("bad.png", b"x")]
    cases, blobs, problems = cases_from_uploads(classifier, uploads)
    assert [c.title for c in cases] == ["Case 1 (picture)", "Case 2 (picture)"] and len(blobs) == 2
    assert [c.upload.name for c in cases] == ["a.png", "b.png"]  # for the start page, until titled
    assert len(problems) == 1 and problems[0].startswith("bad.png: ")
    assert all(set(c.model_flags) == {"unfamiliar", "uncertain"} for c in cases)
    assert in_order(cases, "listed", 0) == cases
    shuffled = [in_order(cases * 5, "shuffled", seed) for seed in (0, 0, 1)]
    assert shuffled[0] == shuffled[1] and sorted(c.title for c in shuffled[0]) == sorted(c.title for c in cases * 5)


def test_a_case_image_is_found_only_where_it_belongs_and_only_with_its_content(tmp_path):
    blob = png_bytes(1)
    name, digest, _, _ = checked_upload(blob)
    keep_uploads(tmp_path / "data", {name: blob})
    uploads = {"type": "uploads"}
    assert load_case_image(case_image_file(uploads, name, tmp_path / "data", None), digest).size == (64, 64)
    with pytest.raises(FileRefused):
        case_image_file(uploads, "../../etc/passwd", tmp_path / "data", None)
    with pytest.raises(FileRefused):
        case_image_file({"type": "run", "dataset": "ds"}, "../x.png", tmp_path / "data", tmp_path / "datasets" / "ds")
    with pytest.raises(FileRefused, match="not on this machine"):
        case_image_file({"type": "run", "dataset": "ds"}, "x.png", tmp_path / "data", None)
    (tmp_path / "data" / name).write_bytes(png_bytes(2))
    with pytest.raises(ReviewError, match="changed"):
        load_case_image(tmp_path / "data" / name, digest)


def test_a_case_keeps_whether_the_model_recognised_the_scan_and_was_sure():
    from types import SimpleNamespace

    from core.review.cases import cases_from_run

    rows = predictions((2, 1, 1)).assign(sha256=[f"{k:064x}" for k in range(4)], unfamiliar=[False, True, None, False])
    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    for c in classes:
        rows[f"prob_{c}"] = 0.97 if c == "glioma" else 0.01
    rows.loc[3, [f"prob_{c}" for c in classes]] = [0.6, 0.2, 0.1, 0.1]
    run = SimpleNamespace(predictions=rows, classes=classes, info={"model": {"calibration": {"refer_below": 0.95}}})
    cases = cases_from_run(run)
    assert [c.model_flags for c in cases] == [{"unfamiliar": False, "uncertain": False},
                                              {"unfamiliar": True, "uncertain": False},
                                              {"unfamiliar": False, "uncertain": False},
                                              {"unfamiliar": False, "uncertain": True}]
    assert [c.reference for c in cases] == ["glioma", "glioma", "meningioma", "notumor"]
    # Said wherever the model's class is shown: on the pages, in both PDFs and in the answers' CSV.
    import dataclasses

    viewed = [CaseView(k, k, f"{k}.png", "0" * 64, f"{k}.png", c.reference, c.model_label, c.model_probabilities,
                       c.model_flags) for k, c in enumerate(cases)]
    said = [c.model_label for c in viewed]
    assert [c.model_said() for c in viewed] == [said[0], f"no answer: unlike its training scans (its guess: {said[1]})",
                                                said[2], f"{said[3]}: uncertain, refer"]
    table = answers_table(viewed, [{"reader": "Ann", "case_id": k, "label": "glioma", "confidence": 3, "note": "",
                                    "heatmap_rating": None, "revised_label": None, "revised_note": None,
                                    "answered_at": None} for k in range(4)])
    assert table["model_answered"].tolist() == [True, False, True, True]
    assert dataclasses.replace(viewed[0], model_label=None).model_said() == "no answer recorded"


def test_an_uploaded_blank_scan_is_not_answered_by_the_default_model(tmp_path):
    from conftest import ROOT
    from core import load_classifier
    from core.review.cases import cases_from_uploads
    from core.review.store import CaseView

    classifier = load_classifier(ROOT / "assets/models/default")
    if classifier.familiarity is None:
        pytest.skip("the default model carries no familiarity check")
    blank = io.BytesIO()
    Image.new("L", (256, 256), 0).save(blank, "PNG")
    (case,), _, problems = cases_from_uploads(classifier, [("blank.png", blank.getvalue())])
    assert not problems and case.model_flags["unfamiliar"]
    view = CaseView(1, 0, case.image, case.image_sha256, case.title, None, case.model_label,
                    case.model_probabilities, case.model_flags)
    assert not view.model_answered


def test_all_readers_together_by_hand():
    from core.review.agreement import pooled_summary

    pooled = pooled_summary(session_table())
    # Ann 3 of 4, Bob 3 of 4: 6 of 8 answers right; the model is right on 3 of the 4 cases.
    assert (pooled["readers"], pooled["cases"], pooled["answers"]) == (2, 4, 8)
    assert pooled["accuracy"] == pytest.approx(0.75) and pooled["model_accuracy"] == pytest.approx(0.75)
    assert pooled["low"] <= 0.75 <= pooled["high"]


def test_a_volumes_slices_are_read_back_only_as_written(tmp_path):
    """The slices kept for an uploaded volume are refused when their content changed, when they hold anything but
    8-bit slices and a spacing (an object array is never unpickled), or when the file is no .npz at all."""
    from core.review.cases import load_case_stack

    def kept(name: str, blob: bytes) -> tuple:
        (tmp_path / name).write_bytes(blob)
        return tmp_path / name, hashlib.sha256(blob).hexdigest()

    def npz(**arrays) -> bytes:
        out = io.BytesIO()
        np.savez_compressed(out, **arrays)
        return out.getvalue()

    def npy(array) -> bytes:
        out = io.BytesIO()
        np.save(out, array)
        return out.getvalue()

    def claims_huge() -> bytes:
        """An .npz whose slices header claims 600 million voxels over a few bytes of data."""
        import zipfile

        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                      "shape": (600, 1000, 1000)})
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as packed:
            packed.writestr("slices.npy", header.getvalue() + b"\0" * 64)  # the header begins with the magic
            packed.writestr("spacing.npy", npy(np.array([1.0, 1.0])))
            packed.writestr("position.npy", npy(np.array([0, 600])))
        return out.getvalue()

    slices = np.arange(3 * 64 * 64, dtype=np.uint32).reshape(3, 64, 64).astype(np.uint8)
    position = np.array([10, 40])  # slices 11-13 of 40
    path, digest = kept("good.npz", npz(slices=slices, spacing=np.array([0.5, 0.7]), position=position))
    found = load_case_stack(path, digest)
    assert np.array_equal(found.slices, slices) and found.spacing_mm == (0.5, 0.7)
    assert (found.first, found.total, found.number(0)) == (10, 40, 11)
    path, digest = kept("nospacing.npz", npz(slices=slices, spacing=np.array([np.nan, np.nan]), position=position))
    assert load_case_stack(path, digest).spacing_mm is None
    with pytest.raises(ReviewError, match="content"):
        load_case_stack(path, "0" * 64)
    objects = np.empty(2, dtype=object)
    objects[:] = [{"a": 1}, None]
    spacing = np.array([1.0, 1.0])
    for name, blob in [("floats.npz", npz(slices=slices.astype(np.float32), spacing=spacing, position=position)),
                       ("extra.npz", npz(slices=slices, spacing=spacing, position=position, note=np.array(["x"]))),
                       ("pickled.npz", npz(slices=objects, spacing=spacing, position=position)),
                       ("flat.npz", npz(slices=slices[0], spacing=spacing, position=position)),
                       ("outside.npz", npz(slices=slices, spacing=spacing, position=np.array([39, 40]))),
                       ("no position.npz", npz(slices=slices, spacing=spacing)),
                       ("plain.npy", b"\x93NUMPY" + b"\0" * 100), ("text.npz", b"not a zip at all"),
                       ("valid.npy", npy(slices)),
                       ("words.npz", npz(slices=slices, spacing=np.array(["a", "b"]), position=position)),
                       ("huge.npz", claims_huge())]:
        with pytest.raises(ReviewError, match="not one this application writes"):
            load_case_stack(*kept(name, blob))


def test_a_long_volume_keeps_a_slab_around_its_answered_slice_and_burned_in_text_is_refused(tmp_path):
    """A volume of 40 slices is answered on slice 21 and keeps slices 6-36 to scroll; a DICOM file whose header says
    it carries burned-in annotation is not kept for a session."""
    from conftest import ROOT, synthetic_slice
    from core import load_classifier
    from core.review.cases import CONTEXT_SLICES, cases_from_uploads, keep_uploads, load_case_stack
    from test_volumes import dicom_bytes, nifti_bytes

    classifier = load_classifier(ROOT / "assets/models/default")
    volume = np.stack([synthetic_slice(1, seed=s, size=64) for s in range(40)], axis=2).astype(np.float32)
    burned = dicom_bytes(synthetic_slice(0, seed=1, size=64).astype(np.int16), burned_in=True)
    cases, blobs, problems = cases_from_uploads(classifier, [("long.nii.gz", nifti_bytes(volume, np.eye(4), gz=True)),
                                                             ("burned.dcm", burned)])
    assert len(cases) == 1 and len(problems) == 1
    assert problems[0].startswith("burned.dcm: a DICOM header of this scan says")
    (case,) = cases
    assert case.title == "Case 1 (NIfTI volume, axial slice 21 of 40)"
    keep_uploads(tmp_path, blobs)
    stack = load_case_stack(tmp_path / case.stack, case.stack_sha256)
    assert len(stack.slices) == 2 * CONTEXT_SLICES + 1 and stack.total == 40
    assert (stack.number(0), stack.number(case.stack_slice), stack.number(len(stack.slices) - 1)) == (6, 21, 36)
    answered = np.asarray(load_case_image(tmp_path / case.image, case.image_sha256))[..., 0]
    assert np.array_equal(answered, stack.slices[case.stack_slice])  # the slice the model answered, in its place
