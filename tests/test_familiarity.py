"""Familiarity: the distance of a scan's features to the training scans, where it is fitted, stored and used."""

import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, random_classifier, write_unchecked
from core import load_classifier
from core.checkpoint import CheckpointError, load_checkpoint, read_metadata, update_metadata
from core.explain import explain
from core.familiarity import (Familiarity, FamiliarityError, borrow_threshold, fit, fit_gaussian,
                              threshold_from_validation)

PARTS = {"means", "directions", "variances", "residual"}  # the familiarity tensors a checkpoint stores


def blobs(n_per_class: int, dims: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, size=(3, dims))
    labels = np.repeat(np.arange(3), n_per_class)
    return centres[labels] + rng.normal(0, 1, size=(len(labels), dims)), labels


def textbook_distances(probes, means, covariance):
    """The Mahalanobis distance to the nearest class computed the textbook way: inverse covariance, every class,
    the smallest."""
    precision = np.linalg.inv(covariance)
    return [min(np.sqrt((x - m) @ precision @ (x - m)) for m in means) for x in probes]


def test_the_score_is_the_mahalanobis_distance_to_the_nearest_class_under_the_shrunk_covariance():
    from sklearn.covariance import LedoitWolf

    features, labels = blobs(40, 6)
    means, directions, variances, residual, shrinkage = fit_gaussian(features, labels, 3)
    # With fewer features than the rank kept, the one direction left keeps its own variance: the covariance is
    # the Ledoit-Wolf one exactly.
    assert directions.shape == (6, 5)
    centred = features - np.stack([features[labels == k].mean(0) for k in range(3)])[labels]
    estimate = LedoitWolf(assume_centered=True).fit(centred)
    probes = np.random.default_rng(1).normal(0, 6, size=(7, 6))
    model = Familiarity.of(means, directions, variances, residual, None)
    assert model.scores(probes) == pytest.approx(textbook_distances(probes, means, estimate.covariance_), rel=1e-4)
    assert shrinkage == pytest.approx(estimate.shrinkage_)


def test_the_compact_covariance_keeps_the_leading_directions_and_gives_the_rest_their_mean_variance():
    from sklearn.covariance import LedoitWolf

    features, labels = blobs(50, 8, seed=3)
    features *= np.linspace(4, 0.5, 8)  # unequal spreads, so that the directions have distinct variances
    means, directions, variances, residual, _ = fit_gaussian(features, labels, 3, rank=3)
    centred = features - np.stack([features[labels == k].mean(0) for k in range(3)])[labels]
    values, vectors = np.linalg.eigh(LedoitWolf(assume_centered=True).fit(centred).covariance_)
    assert variances == pytest.approx(values[::-1][:3]) and residual == pytest.approx(values[:5].mean())
    assert np.abs(directions.T @ vectors[:, ::-1][:, :3]) == pytest.approx(np.eye(3), abs=1e-8)
    compact = directions @ np.diag(variances) @ directions.T + residual * (np.eye(8) - directions @ directions.T)
    probes = np.random.default_rng(2).normal(0, 5, size=(9, 8))
    expected = textbook_distances(probes, means, compact)
    # Stored in float16, the directions are made orthonormal again on loading: still close to the fitted model.
    stored = Familiarity.of(means, torch.from_numpy(directions).half(), variances, residual, None)
    assert stored.directions.T @ stored.directions == pytest.approx(torch.eye(3, dtype=torch.float64), abs=1e-12)
    assert stored.scores(probes) == pytest.approx(expected, rel=1e-2)
    assert Familiarity.of(means, directions, variances, residual, None).scores(probes) == pytest.approx(expected,
                                                                                                      rel=1e-6)


def test_a_point_far_from_every_class_scores_higher_than_the_training_points():
    features, labels = blobs(60, 8)
    fitted = fit(features, labels, 3, blobs(60, 8, seed=0)[0][::3] + 0.1, {"split": "training"})
    far = np.full((1, 8), 40.0)
    assert fitted.model.scores(far)[0] > 3 * fitted.record["training_scores"]["max"]
    assert fitted.model.unfamiliar(fitted.model.scores(far)).all()
    assert fitted.record["threshold_from"] == "validation"


def test_the_threshold_flags_the_stated_share_of_the_validation_scans():
    scores = np.arange(1, 201, dtype=float)  # 200 validation distances
    threshold = threshold_from_validation(scores)
    assert (scores > threshold).sum() == 2  # 1% of 200
    with pytest.raises(FamiliarityError, match="too few"):
        threshold_from_validation(scores[:5])


def test_a_score_that_is_not_a_number_is_unfamiliar_and_no_threshold_flags_nothing():
    model = Familiarity.of(torch.zeros(2, 3), torch.eye(3)[:, :2], torch.ones(2), 1.0, 1.5)
    assert model.unfamiliar(np.array([1.0, 2.0, np.nan])).tolist() == [False, True, True]
    assert not replace(model, threshold=None).unfamiliar(np.array([99.0])).any()


def test_a_refit_borrows_the_threshold_scaled_by_the_two_models_training_distances():
    features, labels = blobs(40, 5)
    refit = fit(features * 2, labels, 3, None, {"split": "training"})
    assert refit.record["threshold"] is None
    source = {"familiarity": {"threshold": 4.0, "threshold_from": "validation",
                              "training_scores": {"median": refit.record["training_scores"]["median"] / 2}}}
    borrowed = borrow_threshold(refit, source, "recipe-val")
    assert borrowed.record["threshold"] == pytest.approx(8.0, rel=1e-3)
    assert borrowed.model.threshold == borrowed.record["threshold"]
    assert borrowed.record["borrowed"]["checkpoint"] == "recipe-val"
    with pytest.raises(FamiliarityError, match="no familiarity threshold"):
        borrow_threshold(refit, {"familiarity": None}, "other")
    lacking = {"familiarity": {"threshold": 4.0, "threshold_from": "validation"}}
    with pytest.raises(FamiliarityError, match="no median distance"):
        borrow_threshold(refit, lacking, "other")


def test_degenerate_training_features_are_refused_in_words():
    with pytest.raises(FamiliarityError, match="fewer than two training images"):
        fit_gaussian(np.ones((5, 3)), np.array([0, 0, 1, 1, 1]), 3)


@pytest.fixture()
def familiar_checkpoint(tmp_path):
    """A random-weight checkpoint with a familiarity model fitted on features of synthetic scans."""
    from conftest import synthetic_slice

    classifier = random_classifier(tmp_path, seed=0)
    images = [Image.fromarray(synthetic_slice(k % 4, seed=k)) for k in range(48)]
    features = classifier.features_and_logits(classifier.preprocess(images))[0].numpy()
    fitted = fit(features[:36], np.arange(36) % 4, 4, features[36:], {"split": "training"})
    update_metadata(classifier.path, {"familiarity": fitted.record}, familiarity=fitted.tensors)
    return classifier.path, images


def test_the_checkpoint_carries_the_model_and_every_explanation_scores_its_scans(familiar_checkpoint):
    path, images = familiar_checkpoint
    classifier = load_classifier(path, precision="fp32")
    assert classifier.familiarity is not None and classifier.familiarity.threshold is not None
    blank = Image.new("L", (128, 128), 255)
    explanation = explain(classifier, images[:2] + [blank])
    features, logits = classifier.features_and_logits(classifier.preprocess(images[:2] + [blank]))
    assert explanation.familiarity == pytest.approx(classifier.familiarity.scores(features), rel=1e-4)
    # The probabilities of the familiarity pass are the classifier's.
    assert classifier.probabilities(logits).numpy() == pytest.approx(explanation.probabilities, abs=1e-5)
    # Rewriting other metadata keeps the familiarity tensors.
    update_metadata(path, {"notes": "kept"})
    assert set(load_checkpoint(path).familiarity) == PARTS


def test_damaged_familiarity_tensors_or_threshold_are_refused_in_words(familiar_checkpoint, tmp_path):
    from core.checkpoint import _write

    path, _ = familiar_checkpoint
    stored = load_checkpoint(path)
    original = dict(stored.familiarity)
    for damage, message in [({"directions": original["directions"][:5]}, "do not fit together"),
                            ({"residual": torch.tensor([1.0, 2.0])}, "do not fit together"),
                            ({"variances": torch.full_like(original["variances"], float("nan"))}, "not numbers"),
                            ({"residual": torch.tensor([-1.0])}, "not positive"),
                            ({"whitening": torch.eye(3)}, "older full-matrix form; fit it again")]:
        stored.familiarity = {**original, **damage}
        _write(path, {**stored.state_dict, **stored.extra_tensors()}, stored.metadata)
        with pytest.raises(CheckpointError, match=message):
            load_classifier(path)
    write_unchecked(path, {"familiarity": {"threshold": -1}})
    with pytest.raises(CheckpointError, match="familiarity.threshold"):
        load_classifier(path)
    write_unchecked(path, {"familiarity": {"threshold": 3.0, "flag_share": 0}})  # would divide by zero
    with pytest.raises(CheckpointError, match="familiarity.flag_share"):
        load_classifier(path)


def command(*args):
    return subprocess.run([sys.executable, "-m", "training.familiarity", "--no-progress", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_training_with_a_validation_split_fits_it_and_a_refit_borrows_the_threshold(validated, refit):
    record = read_metadata(validated)["familiarity"]
    meta = read_metadata(validated)
    assert record["threshold_from"] == "validation"
    assert record["training_scores"]["images"] == sum(meta["data"]["counts"]["train"].values())
    assert record["validation_scores"]["images"] == len(meta["data"]["val_files"])
    assert set(load_checkpoint(validated).familiarity) == PARTS

    assert "familiarity" not in read_metadata(refit)
    alone = command("--checkpoint", str(refit))
    assert alone.returncode == 2 and "--val-fraction 0" in alone.stderr and "Traceback" not in alone.stderr
    borrowed = command("--checkpoint", str(refit), "--from", str(validated))
    assert borrowed.returncode == 0, borrowed.stderr
    mine = read_metadata(refit)["familiarity"]
    scale = mine["training_scores"]["median"] / record["training_scores"]["median"]
    assert mine["threshold"] == pytest.approx(record["threshold"] * scale, rel=1e-3)
    assert load_classifier(refit).familiarity.threshold == mine["threshold"]


def test_the_command_refits_a_model_with_its_own_split_and_refuses_to_borrow_for_it(validated, tmp_path):
    target = tmp_path / "model.safetensors"
    shutil.copy(validated, target)
    result = command("--checkpoint", str(target))
    assert result.returncode == 0, result.stderr
    assert read_metadata(target)["familiarity"]["threshold"] == pytest.approx(
        read_metadata(validated)["familiarity"]["threshold"], rel=1e-3)
    refused = command("--checkpoint", str(target), "--from", str(validated))
    assert refused.returncode == 2 and "validation split of its own" in refused.stderr


def test_a_run_counts_the_flagged_images_on_all_and_on_the_duplicate_free_ones():
    from core.familiarity import flagged_figures
    from core.metrics import wilson_interval

    scores = np.array([1.0, 5.0, 9.0, np.nan, 2.0])
    duplicate = np.array([True, False, False, False, True])
    figures = flagged_figures(scores, 4.0, duplicate, 0.95)
    assert figures["all"]["flagged"] == 3 and figures["all"]["images"] == 5  # 5, 9 and the missing score
    assert figures["duplicate_free"] == {"images": 3, "flagged": 3, "share": 1.0,
                                         "interval": list(wilson_interval(3, 3, 0.95))}
    assert flagged_figures(scores, None, duplicate, 0.95) is None
