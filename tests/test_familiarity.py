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
from core.familiarity import (
    Familiarity,
    FamiliarityError,
    borrow_threshold,
    fit,
    fit_gaussian,
    joint_thresholds,
    top_doubt,
)

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


def sure_logits(n: int, classes: int = 3, margin: float = 12.0) -> np.ndarray:
    """Logits whose top class (the first) has a probability of about 1 - classes * exp(-margin)."""
    logits = np.zeros((n, classes))
    logits[:, 0] = margin
    return logits


def test_a_point_far_from_every_class_scores_higher_than_the_training_points():
    features, labels = blobs(60, 8)
    validation = blobs(60, 8, seed=0)[0][::3] + 0.1
    fitted = fit(features, labels, 3, (validation, sure_logits(len(validation))), {"split": "training"})
    far = np.full((1, 8), 40.0)
    assert fitted.model.distances(far)[0] > 3 * fitted.record["training_scores"]["max"]
    assert fitted.model.unfamiliar(fitted.model.scores(far, sure_logits(1))).all()
    assert fitted.record["threshold_from"] == "validation" and fitted.record["threshold"] == 1.0
    with pytest.raises(FamiliarityError, match="pass the logits"):
        fitted.model.scores(far)


def test_the_distance_threshold_and_the_probability_floor_are_chosen_together_as_worked_by_hand():
    # Ten validation scans. The most distant (index 9) and the least sure (index 0) are different scans.
    distances = np.arange(1.0, 11.0)
    doubts = np.array([0.50, 0.05, 0.04, 0.03, 0.02, 0.01, 0.06, 0.07, 0.08, 0.09])
    # At most 2 of 10 (20%): k = 9 puts the threshold at the 9th distance (9) and the floor at one less the 9th
    # doubt (1 - 0.09), flagging scans 9 (distance 10) and 0 (doubt 0.5); k = 8 would flag 8, 9 and 0: too many.
    assert joint_thresholds(distances, doubts, share=0.2) == (9.0, pytest.approx(0.91), 2)
    # At most 1 of 10: k = 9 already flags two, so nothing moves from the largest values and nothing is flagged.
    assert joint_thresholds(distances, doubts, share=0.1) == (10.0, pytest.approx(0.5), 0)
    with pytest.raises(FamiliarityError, match="too few"):
        joint_thresholds(distances[:5], doubts[:5])
    with pytest.raises(FamiliarityError, match="not a number"):
        joint_thresholds(np.append(distances, np.nan), np.append(doubts, 0.1))


def test_the_score_is_the_larger_ratio_of_distance_and_doubt_to_their_thresholds_as_worked_by_hand():
    # Two class means at the origin and the identity covariance: the distance of x is |x|.
    model = replace(Familiarity.of(torch.zeros(2, 3), torch.eye(3)[:, :1], torch.ones(1), 1.0, 1.0),
                    distance_threshold=9.0, floor=0.9, temperature=2.0)
    probes = np.array([[4.5, 0, 0], [4.5, 0, 0], [0, 18.0, 0]])
    # At temperature 2, logits (2 ln 19, 0) give 19/20 = 0.95 and (2 ln 3, 0) give 3/4.
    logits = np.array([[2 * np.log(19), 0.0], [2 * np.log(3), 0.0], [2 * np.log(19), 0.0]])
    assert top_doubt(logits, 2.0) == pytest.approx([0.05, 0.25, 0.05])
    # max(4.5 / 9, 0.05 / 0.1) = 0.5; max(0.5, 0.25 / 0.1) = 2.5; max(18 / 9, 0.5) = 2
    assert model.scores(probes, logits) == pytest.approx([0.5, 2.5, 2.0])
    assert model.unfamiliar(model.scores(probes, logits)).tolist() == [False, True, True]
    assert np.isnan(top_doubt(np.array([[np.nan, 0.0]]), 1.0)).all()


def test_a_score_that_is_not_a_number_is_unfamiliar_and_no_threshold_flags_nothing():
    model = Familiarity.of(torch.zeros(2, 3), torch.eye(3)[:, :2], torch.ones(2), 1.0, 1.5)
    assert model.unfamiliar(np.array([1.0, 2.0, np.nan])).tolist() == [False, True, True]
    assert not replace(model, threshold=None).unfamiliar(np.array([99.0])).any()


def test_a_refit_borrows_the_threshold_scaled_by_the_two_models_training_distances():
    features, labels = blobs(40, 5)
    refit = fit(features * 2, labels, 3, None, {"split": "training"}, temperature=1.3)
    assert refit.record["threshold"] is None
    median = refit.record["training_scores"]["median"] / 2
    source = {"familiarity": {"threshold": 1.0, "distance_threshold": 4.0, "probability_floor": 0.7,
                              "threshold_from": "validation", "training_scores": {"median": median}}}
    borrowed = borrow_threshold(refit, source, "recipe-val")
    assert borrowed.record["distance_threshold"] == pytest.approx(8.0, rel=1e-3)
    assert (borrowed.model.distance_threshold, borrowed.model.floor, borrowed.model.threshold) == (
        borrowed.record["distance_threshold"], 0.7, 1.0)
    assert borrowed.model.temperature == 1.3  # the refit's own (borrowed) calibration reads the floor
    assert borrowed.record["borrowed"]["checkpoint"] == "recipe-val"
    # A source of the first form (a distance threshold only) lends just that.
    first = {"familiarity": {"threshold": 4.0, "threshold_from": "validation", "training_scores": {"median": median}}}
    borrowed = borrow_threshold(refit, first, "older")
    assert borrowed.record["threshold"] == pytest.approx(8.0, rel=1e-3) and borrowed.model.floor is None
    assert borrowed.model.scores(features[:3]) == pytest.approx(borrowed.model.distances(features[:3]))
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
    features, logits = (t.numpy() for t in classifier.features_and_logits(classifier.preprocess(images)))
    fitted = fit(features[:36], np.arange(36) % 4, 4, (features[36:], logits[36:]), {"split": "training"})
    update_metadata(classifier.path, {"familiarity": fitted.record}, familiarity=fitted.tensors)
    return classifier.path, images


def test_the_checkpoint_carries_the_model_and_every_explanation_scores_its_scans(familiar_checkpoint):
    path, images = familiar_checkpoint
    classifier = load_classifier(path, precision="fp32")
    assert classifier.familiarity is not None and classifier.familiarity.threshold is not None
    blank = Image.new("L", (128, 128), 255)
    explanation = explain(classifier, images[:2] + [blank])
    features, logits = classifier.features_and_logits(classifier.preprocess(images[:2] + [blank]))
    assert explanation.familiarity == pytest.approx(classifier.familiarity.scores(features, logits), rel=1e-4)
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
    assert mine["distance_threshold"] == pytest.approx(record["distance_threshold"] * scale, rel=1e-3)
    assert mine["probability_floor"] == record["probability_floor"] and mine["threshold"] == 1.0
    familiar = load_classifier(refit).familiarity
    assert (familiar.distance_threshold, familiar.floor) == (mine["distance_threshold"], mine["probability_floor"])


def test_the_command_refits_a_model_with_its_own_split_and_refuses_to_borrow_for_it(validated, tmp_path):
    target = tmp_path / "model.safetensors"
    shutil.copy(validated, target)
    result = command("--checkpoint", str(target))
    assert result.returncode == 0, result.stderr
    mine, theirs = read_metadata(target)["familiarity"], read_metadata(validated)["familiarity"]
    assert mine["distance_threshold"] == pytest.approx(theirs["distance_threshold"], rel=1e-3)
    assert mine["probability_floor"] == pytest.approx(theirs["probability_floor"], rel=1e-3)
    refused = command("--checkpoint", str(target), "--from", str(validated))
    assert refused.returncode == 2 and "validation split of its own" in refused.stderr


def test_a_run_counts_the_flagged_images_on_all_the_duplicate_free_ones_and_the_wrong_and_right_answers():
    from core.familiarity import flagged_figures
    from core.metrics import wilson_interval

    scores = np.array([1.0, 5.0, 9.0, np.nan, 2.0])
    duplicate = np.array([True, False, False, False, True])
    correct = np.array([True, False, True, False, False])
    figures = flagged_figures(scores, 4.0, duplicate, 0.95, correct)
    assert figures["all"]["flagged"] == 3 and figures["all"]["images"] == 5  # 5, 9 and the missing score
    assert figures["duplicate_free"] == {"images": 3, "flagged": 3, "share": 1.0,
                                         "interval": list(wilson_interval(3, 3, 0.95))}
    # wrong answers: scores 5, NaN and 2, of which two are flagged; right answers: 1 and 9, one flagged
    assert (figures["wrong"]["flagged"], figures["wrong"]["images"]) == (2, 3)
    assert (figures["right"]["flagged"], figures["right"]["images"]) == (1, 2)
    assert flagged_figures(scores, None, duplicate, 0.95) is None


def test_an_evaluation_run_counts_the_warning_on_the_wrong_and_the_right_answers(validated, kaggle_layout, tmp_path):
    import pandas as pd

    from core.evaluation import EvaluationSettings, evaluate
    from core.runs import read_run

    settings = EvaluationSettings(checkpoint=str(validated), data=str(kaggle_layout / "Testing"),
                                  out=str(tmp_path / "run"), precision="fp32", progress=False,
                                  bootstrap_resamples=20, num_workers=0)
    run = read_run(evaluate(settings))
    figures = run.metrics["familiarity"]
    record = read_metadata(validated)["familiarity"]
    assert figures["threshold"] == 1.0 and figures["probability_floor"] == record["probability_floor"]
    assert figures["distance_threshold"] == record["distance_threshold"]
    table = run.predictions
    warned = table["unfamiliar"].astype(str) == "True"
    right = table["label"] == table["pred"]
    assert (figures["wrong"]["images"], figures["wrong"]["flagged"]) == ((~right).sum(), (warned & ~right).sum())
    assert (figures["right"]["images"], figures["right"]["flagged"]) == (right.sum(), (warned & right).sum())
    # The command line's summary says the same.
    from training.evaluate import summary
    line = next(x for x in summary(run).splitlines() if "familiarity:" in x)
    assert f"wrong answers {figures['wrong']['flagged']} of {figures['wrong']['images']} (" in line
    assert f"right answers {figures['right']['flagged']} of {figures['right']['images']} (" in line
    # The score is the larger ratio: under the floor means a score of more than 1.
    doubt = 1 - pd.to_numeric(table["confidence"])
    assert (table["familiarity"][doubt > 1 - record["probability_floor"] + 1e-6] > 1).all()
