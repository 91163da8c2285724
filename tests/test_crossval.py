"""Cross-validation by patient (core.crossval, python -m training.crossval) on .mat files built like the figshare
release's, with a shrunken recipe: folds by patient, one model and one run per fold, and the pooled run."""

from __future__ import annotations

import numpy as np
import pytest

from core.crossval import fold_of_each
from core.data import DatasetError, scan_class_folders
from core.runs import read_run
from figshare_files import write_release
from training.crossval import main

TINY = ["--image-size", "48", "--epochs", "1", "--batch-size", "8", "--weights", "none", "--num-workers", "0",
        "--precision", "fp32", "--bootstrap-resamples", "20", "--no-progress"]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_release(tmp_path_factory.mktemp("release"), patients=10, per_patient=3, size=64)


def test_folds_keep_every_patient_whole(release):
    tree = scan_class_folders(release)
    for folds in ("cvind", "3"):
        found = fold_of_each(tree, folds, seed=1)
        assert set(found) == {s.relpath for s in tree.samples}
        per_patient = {}
        for path, fold in found.items():
            per_patient.setdefault(tree.patients[path], set()).add(fold)
        assert all(len(f) == 1 for f in per_patient.values()), folds
    assert sorted(set(fold_of_each(tree, "3", seed=1).values())) == [1, 2, 3]
    # By slice (the leaky protocol, to compare): some patient's slices land in more than one fold.
    by_slice = fold_of_each(tree, "5", seed=1, group_by="image")
    spread = {}
    for path, fold in by_slice.items():
        spread.setdefault(tree.patients[path], set()).add(fold)
    assert any(len(f) > 1 for f in spread.values())
    with pytest.raises(DatasetError, match="patient-wise"):
        fold_of_each(tree, "cvind", seed=1, group_by="image")
    with pytest.raises(DatasetError, match="--group-by"):
        fold_of_each(tree, "5", seed=1, group_by="scanner")
    with pytest.raises(DatasetError, match="'cvind' or a number"):
        fold_of_each(tree, "many", seed=1)


def test_folds_made_here_keep_copies_of_a_slice_together_across_patients(tmp_path):
    """A slice filed again under another patient ID (a copy, or the same scan re-encoded) lands in the fold of its
    original, whatever the seed; the release's own folds are taken as published."""
    import h5py

    from figshare_files import mat_bytes

    root = write_release(tmp_path / "release", patients=10, per_patient=3, size=64)
    with h5py.File(root / "brainTumorDataPublic_1-15" / "1.mat", "r") as handle:  # patient 0's first slice
        pixels, mask = handle["cjdata/image"][()].T, handle["cjdata/tumorMask"][()].T
    copy = root / "brainTumorDataPublic_16-30" / "31.mat"
    copy.write_bytes(mat_bytes(pixels, "meningioma", "PID999", mask))
    tree = scan_class_folders(root)
    assert tree.patients["brainTumorDataPublic_16-30/31.mat"] == "PID999"
    together = []
    for seed in range(6):
        found = fold_of_each(tree, "5", seed=seed)
        together.append(found["brainTumorDataPublic_16-30/31.mat"] == found["brainTumorDataPublic_1-15/1.mat"])
        patient_zero = {f for p, f in found.items() if tree.patients[p] == "PID000"}
        assert len(patient_zero) == 1  # patients stay whole as well
    assert all(together)
    apart = [fold_of_each(tree, "5", seed=seed, near_duplicate_bits=None) for seed in range(6)]  # exact copies only
    assert all(f["brainTumorDataPublic_16-30/31.mat"] == f["brainTumorDataPublic_1-15/1.mat"] for f in apart)


@pytest.fixture(scope="module")
def crossvalidated(tmp_path_factory):
    """The release cross-validated on its own five folds, and what the command printed."""
    import contextlib
    import io

    import h5py

    from figshare_files import mat_bytes

    out = tmp_path_factory.mktemp("crossval")
    release = write_release(out / "release", patients=10, per_patient=3, size=64)
    # The last slice (patient 9, a meningioma, fold 5) re-filed as a copy of the first (patient 0, fold 1): the
    # release's folds split the copy, and each of the two folds' audits finds it among its training images.
    with h5py.File(release / "brainTumorDataPublic_1-15" / "1.mat", "r") as handle:
        pixels, mask = handle["cjdata/image"][()].T, handle["cjdata/tumorMask"][()].T
    (release / "brainTumorDataPublic_16-30" / "30.mat").write_bytes(mat_bytes(pixels, "meningioma", "PID009", mask))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["--data", str(release), "--out", str(out / "cv"), "--folds", "cvind", *TINY]) == 0
    return out, printed.getvalue()


def test_crossval_trains_one_model_per_fold_and_pools_the_out_of_fold_answers(crossvalidated):
    tmp_path, out = crossvalidated
    pooled = read_run(tmp_path / "cv" / "pooled")
    folds = [read_run(tmp_path / "cv" / f"fold-{k}" / "run") for k in range(1, 6)]
    assert sorted(pooled.predictions["path"]) == sorted(p for r in folds for p in r.predictions["path"])
    assert len(pooled.predictions) == 30 and pooled.predictions["path"].is_unique  # each slice answered once
    for k in range(1, 6):
        trained = set((tmp_path / "cv" / f"fold-{k}" / "train.txt").read_text().split())
        assert not trained & set(folds[k - 1].predictions["path"])  # never read what it was trained on
    spread = pooled.info["crossval"]["spread"]["accuracy"]
    assert spread["folds"] == pytest.approx([r.metrics["accuracy"] for r in folds])
    assert spread["mean"] == pytest.approx(np.mean(spread["folds"]))
    right = (pooled.predictions["label"] == pooled.predictions["pred"]).mean()
    assert pooled.metrics["accuracy"] == pytest.approx(right)
    assert pooled.metrics["patients"]["patients"] == 10
    assert any("no image of class notumor" in w for w in pooled.metrics["warnings"])  # said in the run, not hidden
    # The copy split by the release's folds is found by both folds' audits and left out of the duplicate-free figures.
    copies = pooled.predictions[pooled.predictions["train_duplicate"].astype(bool)]
    assert sorted(copies["path"]) == ["brainTumorDataPublic_1-15/1.mat", "brainTumorDataPublic_16-30/30.mat"]
    assert pooled.info["audit"]["exact_duplicates"] == 2 and pooled.info["audit"]["duplicate_free_images"] == 28
    from core.crossval import pooled_groups

    tree = scan_class_folders(tmp_path / "release")
    patients = [tree.patients.get(p) for p in pooled.predictions["path"]]
    groups = pooled_groups(pooled.predictions, patients)
    first, copy = (int(np.flatnonzero(pooled.predictions["path"] == p)[0]) for p in copies["path"])
    assert groups[first] == groups[copy] and len(set(groups)) == 9  # 10 patients, two joined by the copy
    rest = pooled.predictions[~pooled.predictions["train_duplicate"].astype(bool)]
    assert pooled.metrics["accuracy_duplicate_free"] == pytest.approx((rest["label"] == rest["pred"]).mean())
    assert pooled.metrics["duplicate_free"]["intervals"]["accuracy"][0] <= pooled.metrics["accuracy_duplicate_free"]
    assert "pooled out-of-fold accuracy" in out and "accuracy per fold:" in out
    assert "without the 2 slices copied among their fold's training images" in out


def test_the_runs_page_shows_the_pooled_run_with_its_folds(crossvalidated, monkeypatch):
    import html

    from streamlit.testing.v1 import AppTest

    from conftest import ROOT

    tmp_path, _ = crossvalidated
    monkeypatch.setenv("BRAIN_MRI_ALLOWED_ROOTS", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300).run()
    at.switch_page("app_pages/runs.py").run()
    at.text_input(key="runs.other").set_value(str(tmp_path / "cv" / "pooled")).run()
    captions = " ".join(html.unescape(c.value) for c in at.caption)
    assert not at.exception
    assert "Cross-validation, each fold read once" in captions and "over 5 folds" in captions
