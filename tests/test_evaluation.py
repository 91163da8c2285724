import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import write_class_tree
from core import load_classifier
from core.checkpoint import update_metadata
from core.config import TrainConfig
from core.evaluation import EvaluationSettings, evaluate
from core.runs import RUN_FILE, RunError, find_runs, read_run
from core.sources import read_image
from core.trainer import train


@pytest.fixture(scope="module")
def checkpoint(kaggle_layout, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    return train(TrainConfig(data=str(kaggle_layout), out=str(out), image_size=48, epochs=2, head_epochs=1,
                             batch_size=8, weights="none", num_workers=0, progress=False, precision="fp32", seed=3))


@pytest.fixture(scope="module")
def evaluation_set(kaggle_layout, tmp_path_factory):
    """Testing images plus a byte copy and a resized copy of training images, and one damaged file."""
    root = tmp_path_factory.mktemp("evalset")
    shutil.copytree(kaggle_layout / "Testing", root / "Testing")
    shutil.copytree(kaggle_layout / "Training", root / "Training")
    shutil.copy(kaggle_layout / "Training/glioma_tumor/glioma_tumor_000.png", root / "Testing/glioma/copied.png")
    Image.open(kaggle_layout / "Training/pituitary_tumor/pituitary_tumor_002.png").resize((96, 96)).save(
        root / "Testing/pituitary/resized.png")
    (root / "Testing/meningioma/broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


def settings(checkpoint, data, out, **overrides):
    values = dict(checkpoint=str(checkpoint), data=str(data), out=str(out), precision="fp32", progress=False,
                  bootstrap_resamples=50, num_workers=0)
    values.update(overrides)
    return EvaluationSettings(**values)


@pytest.fixture(scope="module")
def run(checkpoint, evaluation_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "kaggle-test"
    return read_run(evaluate(settings(checkpoint, evaluation_set, out)))


def test_a_run_has_every_file_and_one_row_per_readable_image(run):
    for name in ("run.json", "predictions.csv", "metrics.json", "curves.json"):
        assert (run.path / name).is_file()
    p = run.predictions
    assert len(p) == 18  # 16 Testing images + 2 copies; the damaged file is listed, not predicted
    assert run.info["dataset"]["skipped"][0]["path"] == "Testing/meningioma/broken.jpg"
    assert "not a readable image" in run.info["dataset"]["skipped"][0]["reason"]
    assert {"path", "label", "pred", "prob_glioma", "prob_notumor", "train_duplicate"} <= set(p.columns)
    assert p["path"].str.startswith("Testing/").all()
    assert np.allclose(run.probabilities().sum(axis=1), 1.0, atol=1e-4)
    assert run.info["format_version"] == 1 and run.info["dataset"]["evaluated"] == "Testing"
    assert run.info["history"] and run.info["model"]["classes"] == ["glioma", "meningioma", "notumor", "pituitary"]
    assert "mirrored" not in p and "mirror_averaging" not in run.info["model"]  # the second look is gone


def test_probabilities_are_the_classifiers_own(run, checkpoint, evaluation_set):
    clf = load_classifier(checkpoint, precision="fp32")
    rows = run.predictions.head(5)
    images = [read_image(evaluation_set / path) for path in rows["path"]]
    assert np.allclose(clf.predict_proba(images), run.probabilities(rows), atol=1e-5)


def test_a_calibrated_checkpoint_evaluates_with_its_temperature(checkpoint, evaluation_set, tmp_path):
    calibrated = tmp_path / "model.safetensors"
    shutil.copy(checkpoint, calibrated)
    update_metadata(calibrated, {"calibration": {"method": "temperature scaling", "temperature": 0.4}})
    run = read_run(evaluate(settings(calibrated, evaluation_set, tmp_path / "run", localisation="off")))
    assert run.info["model"]["calibration"]["temperature"] == 0.4
    rows = run.predictions.head(5)
    images = [read_image(evaluation_set / path) for path in rows["path"]]
    clf = load_classifier(calibrated, precision="fp32")
    assert np.allclose(clf.predict_proba(images), run.probabilities(rows), atol=1e-5)
    assert not np.allclose(load_classifier(checkpoint, precision="fp32").predict_proba(images),
                           run.probabilities(rows), atol=1e-3)


def test_metrics_agree_with_the_predictions(run):
    p, m = run.predictions, run.metrics
    assert m["accuracy"] == pytest.approx((p["label"] == p["pred"]).mean())
    free = p[~p["train_duplicate"].astype(bool)]
    assert m["accuracy_duplicate_free"] == pytest.approx((free["label"] == free["pred"]).mean())
    assert m["duplicate_free"]["images"] == len(free)
    assert sum(map(sum, m["all"]["confusion_matrix"])) == len(p)
    low, high = m["all"]["intervals"]["accuracy"]
    assert low <= m["accuracy"] <= high
    assert {"glioma", "macro", "micro"} <= set(run.curves["all"]["roc"])
    assert m["all"]["per_class"]["glioma"]["support"] == (p["label"] == "glioma").sum()


def test_copies_of_training_images_are_found(run):
    p = run.predictions.set_index("path")
    copied, resized = p.loc["Testing/glioma/copied.png"], p.loc["Testing/pituitary/resized.png"]
    assert copied["train_duplicate"] and copied["train_duplicate_kind"] == "exact"
    assert copied["train_match"] == "glioma_tumor/glioma_tumor_000.png" and copied["train_match_label"] == "glioma"
    assert resized["train_duplicate"] and resized["train_duplicate_kind"] == "near"
    assert resized["train_match"] == "pituitary_tumor/pituitary_tumor_002.png"
    assert run.info["audit"]["exact_duplicates"] >= 1 and run.info["audit"]["near_duplicates"] >= 1


def test_the_same_pixels_in_another_file_format_count_as_an_exact_copy(checkpoint, kaggle_layout, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(kaggle_layout / "Testing", data)
    Image.open(kaggle_layout / "Training/meningioma_tumor/meningioma_tumor_000.png").save(data / "meningioma/same.bmp")
    p = read_run(evaluate(settings(checkpoint, data, tmp_path / "run"))).predictions.set_index("path")
    assert p.loc["meningioma/same.bmp", "train_duplicate_kind"] == "exact"


def test_localisation_is_scored_where_boxes_exist(checkpoint, tmp_path):
    data = write_class_tree(tmp_path / "boxed", per_class=3, size=64)
    for image in data.rglob("*.*"):
        if image.suffix in (".png", ".jpg"):
            text = "" if image.parent.name == "notumor" else "1 0.5 0.5 0.3 0.3\n"
            image.with_suffix(".txt").write_text(text)
    result = read_run(evaluate(settings(checkpoint, data, tmp_path / "run")))
    table = result.localisation
    assert len(table) == 9 and set(table["label"]) == {"glioma", "meningioma", "pituitary"}
    local = result.metrics["localisation"]
    assert local["method"] == "gradcam" and local["overall"]["box_share"] == pytest.approx(0.09, abs=0.01)
    assert local["overall"]["pointing_tolerant"] == pytest.approx(table["pointing_tolerant"].mean())


def test_pointing_game_scores_by_hand_through_a_whole_run(checkpoint, tmp_path, monkeypatch):
    """Heatmaps placed by hand: for gliomas the peak is in the middle of the box, for meningiomas in a far
    corner, for pituitary tumours 3 px below the box (inside the 15 px tolerance, which is 4.3 px on this 64 px
    grid). Every figure of the run's localisation then follows by hand."""
    import core.evaluation
    from core.explain import Explanation

    data = write_class_tree(tmp_path / "boxed", per_class=2, size=64)
    for image in data.rglob("*.*"):
        if image.suffix in (".png", ".jpg"):
            image.with_suffix(".txt").write_text("" if image.parent.name == "notumor" else "1 0.5 0.5 0.3 0.3\n")
    peaks = {0: (32, 32), 1: (2, 2), 3: (44, 32), 2: (32, 32)}  # class -> (row, column) on the 64 px grid

    def placed(classifier, batch, method, layer, targets):
        heatmaps = np.zeros((len(targets), 64, 64), np.float32)
        for i, target in enumerate(targets):
            heatmaps[i][peaks[target]] = 1.0
        probabilities = np.eye(4)[targets] * 0.9 + 0.025
        return Explanation(probabilities, np.array(targets), heatmaps, method, layer)

    monkeypatch.setattr(core.evaluation, "explain_batch", placed)
    local = read_run(evaluate(settings(checkpoint, data, tmp_path / "run"))).metrics["localisation"]
    strict = {name: local["per_class"][name]["pointing_strict"] for name in ("glioma", "meningioma", "pituitary")}
    tolerant = {name: local["per_class"][name]["pointing_tolerant"] for name in ("glioma", "meningioma", "pituitary")}
    assert strict == {"glioma": 1.0, "meningioma": 0.0, "pituitary": 0.0}
    assert tolerant == {"glioma": 1.0, "meningioma": 0.0, "pituitary": 1.0}
    assert local["overall"]["pointing_tolerant"] == pytest.approx(4 / 6)
    assert local["per_class"]["glioma"]["energy_in_box"] == 1.0
    assert local["per_class"]["meningioma"]["energy_in_box"] == 0.0


def test_a_class_missing_from_the_data_gives_nan_and_a_warning(checkpoint, tmp_path):
    data = write_class_tree(tmp_path / "three", per_class=3, folder_names=("glioma", "meningioma", "notumor"))
    result = read_run(evaluate(settings(checkpoint, data, tmp_path / "run")))
    assert result.metrics["all"]["per_class"]["pituitary"]["recall"] is None  # NaN is stored as null
    assert any("pituitary" in w for w in result.metrics["warnings"])


def test_an_existing_run_is_kept_unless_overwrite(run, checkpoint, evaluation_set):
    before = (run.path / RUN_FILE).read_text()
    with pytest.raises(RunError, match="--overwrite"):
        evaluate(settings(checkpoint, evaluation_set, run.path))
    assert (run.path / RUN_FILE).read_text() == before


def test_an_interrupted_run_leaves_nothing_behind(checkpoint, evaluation_set, tmp_path, monkeypatch):
    import core.runs as runs

    real_write = runs._write_json

    def interrupted(path, value):
        if path.name == RUN_FILE:  # the last file of the run: everything else is already in the staging folder
            raise KeyboardInterrupt
        real_write(path, value)

    monkeypatch.setattr(runs, "_write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(settings(checkpoint, evaluation_set, tmp_path / "run"))
    assert list(tmp_path.iterdir()) == []  # neither the run nor its staging folder


def test_a_damaged_box_file_costs_the_localisation_score_not_the_prediction(checkpoint, tmp_path):
    data = write_class_tree(tmp_path / "boxed", per_class=2, size=64)
    for image in data.rglob("*.*"):
        if image.suffix in (".png", ".jpg"):
            image.with_suffix(".txt").write_text("" if image.parent.name == "notumor" else "1 0.5 0.5 0.3 0.3\n")
    (data / "glioma" / "glioma_000.txt").write_text("this is not a box\n")
    result = read_run(evaluate(settings(checkpoint, data, tmp_path / "run")))
    assert len(result.predictions) == 8 and result.info["dataset"]["skipped"] == []
    assert [e["path"] for e in result.info["dataset"]["box_errors"]] == ["glioma/glioma_000.png"]
    assert len(result.localisation) == 5


def test_runs_in_other_format_versions_are_refused_with_a_reason(run, tmp_path):
    for version, message in ((0, "older"), (99, "newer")):
        copy = tmp_path / f"v{version}"
        shutil.copytree(run.path, copy)
        info = json.loads((copy / RUN_FILE).read_text())
        info["format_version"] = version
        (copy / RUN_FILE).write_text(json.dumps(info))
        with pytest.raises(RunError, match=message):
            read_run(copy)


def test_incomplete_or_foreign_folders_are_not_runs(run, tmp_path):
    with pytest.raises(RunError, match="not an evaluation run"):
        read_run(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(run.path, broken)
    (broken / "metrics.json").unlink()
    with pytest.raises(RunError, match="metrics.json is missing"):
        read_run(broken)
    shutil.copy(run.path / "metrics.json", broken / "metrics.json")
    (broken / "predictions.csv").write_text("path,label\nx,glioma\n")
    with pytest.raises(RunError, match="lacks the columns"):
        read_run(broken)
    assert find_runs(run.path.parent) == [run.path]


def test_the_command_line_writes_a_run_and_explains_bad_input(checkpoint, evaluation_set, tmp_path, capsys):
    from training.evaluate import main

    out = tmp_path / "cli-run"
    assert main(["--checkpoint", str(checkpoint), "--data", str(evaluation_set), "--out", str(out),
                 "--bootstrap-resamples", "20", "--no-progress", "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "leakage audit" in printed
    assert pd.read_csv(out / "predictions.csv").shape[0] == 18
    assert main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
