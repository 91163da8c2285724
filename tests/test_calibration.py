"""Temperature scaling: the fit, its place in the checkpoint, and the classifier that applies it."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import ROOT, random_classifier, write_unchecked
from core import load_classifier
from core.calibration import CalibrationError, calibration_record, fit_temperature, nll
from core.checkpoint import CheckpointError, read_metadata, update_metadata
from core.explain import explain
from dashboard.captions import calibration_caption


def sampled(temperature: float, n: int = 6000, seed: int = 0):
    """Logits, and labels drawn from softmax(logits / temperature): that temperature is the true one."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, 4))
    probs = torch.as_tensor(logits).div(temperature).softmax(1).numpy()
    labels = np.array([rng.choice(4, p=p) for p in probs])
    return logits, labels


@pytest.mark.parametrize("truth", [0.5, 1.0, 2.5])
def test_the_fit_recovers_the_temperature_the_labels_were_drawn_with(truth):
    logits, labels = sampled(truth)
    assert fit_temperature(logits, labels) == pytest.approx(truth, rel=0.06)


def test_the_record_says_what_the_fit_changed():
    logits, labels = sampled(0.5)
    record = calibration_record(logits, labels, {"split": "validation"})
    assert record["images"] == len(labels) and record["fitted_on"] == {"split": "validation"}
    assert record["nll_before"] == pytest.approx(nll(logits, labels), abs=1e-5)
    assert record["nll_after"] < record["nll_before"] and record["ece_after"] < record["ece_before"]
    assert record["nll_after"] == pytest.approx(nll(logits, labels, record["temperature"]), abs=1e-5)


def test_held_out_images_all_right_with_certainty_cannot_fix_a_temperature():
    logits = np.eye(4)[np.arange(40) % 4] * 30
    with pytest.raises(CalibrationError, match="edge of the search"):
        fit_temperature(logits, np.arange(40) % 4)


def test_the_classifier_divides_its_logits_by_the_checkpoints_temperature(tmp_path):
    plain = random_classifier(tmp_path, seed=5)
    path = plain.path
    before = load_file(str(path))
    update_metadata(path, {"calibration": {"method": "temperature scaling", "temperature": 0.4}})
    after = load_file(str(path))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads(path.with_suffix(".json").read_text())["calibration"]["temperature"] == 0.4

    scaled = load_classifier(path, precision="fp32")
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 80), dtype=np.uint8)) for i in range(3)]
    logits = plain.logits(plain.preprocess(images))
    assert plain.temperature == 1.0 and scaled.temperature == 0.4
    np.testing.assert_allclose(scaled.predict_proba(images), (logits / 0.4).softmax(1).numpy(), atol=1e-5)
    np.testing.assert_array_equal(scaled.predict_proba(images).argmax(1), plain.predict_proba(images).argmax(1))
    # The heatmap pass reports the same calibrated probabilities.
    np.testing.assert_allclose(explain(scaled, images).probabilities, scaled.predict_proba(images), atol=1e-5)


def test_the_sidebar_says_whether_and_how_a_model_is_calibrated():
    assert calibration_caption({})[0].startswith("Its percentages are not calibrated")
    borrowed = {"calibration": {"temperature": 0.665, "images": 571,
                                "fitted_on": {"checkpoint": "lrdecay-val", "borrowed": "..."}}}
    plain, detail = calibration_caption(borrowed)
    assert plain.startswith("Its percentages are calibrated") and "T =" not in plain  # plain words first
    # The source's name comes from a file: it is escaped for markdown.
    assert "T = 0.67, fitted on 571 validation images of a run of the same recipe (lrdecay&#45;val)" in detail
    assert "fitted on validation images." in calibration_caption({"calibration": {"temperature": 2}})[1]


@pytest.mark.parametrize("temperature", [-2, 0, 1e-300, 1e6, "hot", None])
def test_a_temperature_outside_the_fitted_range_is_refused(tmp_path, temperature):
    path = random_classifier(tmp_path, seed=1).path
    with pytest.raises(CheckpointError, match="calibration.temperature"):
        update_metadata(path, {"calibration": {"temperature": temperature}})  # never written
    write_unchecked(path, {"calibration": {"temperature": temperature}})  # as a damaged or crafted file would be
    with pytest.raises(CheckpointError, match="calibration.temperature"):
        load_classifier(path)


def test_training_with_a_validation_split_calibrates_on_it(validated):
    meta = read_metadata(validated)
    record = meta["calibration"]
    assert record["method"] == "temperature scaling" and record["fitted_on"]["split"] == "validation"
    assert record["images"] == sum(meta["data"]["counts"]["val"].values()) == len(meta["data"]["val_files"])
    assert record["nll_after"] <= record["nll_before"] and record["temperature"] > 0


def command(*args):
    return subprocess.run([sys.executable, "-m", "training.calibrate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_a_refit_borrows_the_temperature_of_a_run_of_its_recipe(validated, refit):
    assert "calibration" not in read_metadata(refit)

    alone = command("--checkpoint", str(refit))
    assert alone.returncode == 2 and "--val-fraction 0" in alone.stderr and "Traceback" not in alone.stderr

    borrowed = command("--checkpoint", str(refit), "--from", str(validated))
    assert borrowed.returncode == 0, borrowed.stderr
    record = read_metadata(refit)["calibration"]
    assert record["temperature"] == read_metadata(validated)["calibration"]["temperature"]
    assert "refitted on every image" in record["fitted_on"]["borrowed"]


def test_a_damaged_temperature_is_refitted_not_in_the_way(validated, tmp_path):
    import shutil

    target = tmp_path / "model.safetensors"
    shutil.copy(validated, target)
    good = read_metadata(target)["calibration"]["temperature"]
    write_unchecked(target, {"calibration": {"temperature": "hot"}, "mirror_averaging": {"below": 0.9}})
    result = command("--checkpoint", str(target))
    assert result.returncode == 0, result.stderr
    assert read_metadata(target)["calibration"]["temperature"] == pytest.approx(good, rel=1e-3)
    # A setting of the removed second look is ignored with one warning, and calibration keeps it out of the way.
    assert load_classifier(target).temperature == read_metadata(target)["calibration"]["temperature"]


def test_a_model_with_its_own_validation_split_does_not_borrow(validated):
    result = command("--checkpoint", str(validated), "--from", str(validated))
    assert result.returncode == 2 and "validation split of its own" in result.stderr


def test_a_temperature_is_not_borrowed_across_recipes(validated, refit):
    # The refit as if trained with another label smoothing (training it so would cost a minute and check nothing more:
    # the command reads the recipe from the metadata).
    other = refit
    training = read_metadata(other)["training"]
    write_unchecked(other, {"training": {**training, "config": {**training["config"], "label_smoothing": 0.2}}})
    result = command("--checkpoint", str(other), "--from", str(validated))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "label_smoothing is 0.05 in the source and 0.2 in the target" in result.stderr
    assert "calibration" not in read_metadata(other)


def test_an_option_removed_since_at_its_off_value_is_the_same_recipe():
    from core.calibration import recipe_differences

    older = {"training": {"config": {"epochs": 8, "ema_decay": 0.0, "low_res_epochs": 0}}}
    newer = {"training": {"config": {"epochs": 8}}}
    assert recipe_differences(older, newer) == []
    used = {"training": {"config": {"epochs": 8, "ema_decay": 0.997}}}
    assert recipe_differences(used, newer) == ["ema_decay is 0.0 in the source and 0.997 in the target"]
