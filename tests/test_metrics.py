import warnings

import numpy as np
import pytest

from core.metrics import (
    BootstrapSettings,
    MetricWarning,
    bootstrap_intervals,
    calibration,
    curves,
    operating_point,
    point_metrics,
)

CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


def one_hot_probs(pred, confidence=0.7):
    probs = np.full((len(pred), 4), (1 - confidence) / 3)
    probs[np.arange(len(pred)), pred] = confidence
    return probs


def test_counts_and_per_class_figures_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    pred = np.array([0, 0, 1, 1, 0, 2, 2, 3])
    m = point_metrics(labels, one_hot_probs(pred), CLASSES)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["confusion_matrix"] == [[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]
    glioma = m["per_class"]["glioma"]
    # glioma: tp 2, fn 1, fp 1, tn 4
    assert glioma["precision"] == pytest.approx(2 / 3)
    assert glioma["recall"] == pytest.approx(2 / 3)
    assert glioma["specificity"] == pytest.approx(4 / 5)
    assert glioma["f1"] == pytest.approx(2 / 3)
    assert glioma["support"] == 3
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1 + 1) / 4)
    # Tumour vs no tumour at the argmax decision: every tumour called a tumour, every no-tumour not.
    assert m["tumour_vs_no_tumour"]["sensitivity"] == 1.0 and m["tumour_vs_no_tumour"]["specificity"] == 1.0


def test_auc_by_hand():
    # Class 0 scores: positives 0.9, 0.4; negatives 0.8, 0.3, 0.2, 0.1 -> 7 of 8 pairs ordered: AUC 0.875.
    labels = np.array([0, 0, 1, 2, 3, 1])
    scores0 = np.array([0.9, 0.4, 0.8, 0.3, 0.2, 0.1])
    probs = np.column_stack([scores0, (1 - scores0) / 3, (1 - scores0) / 3, (1 - scores0) / 3])
    m = point_metrics(labels, probs, CLASSES)
    assert m["per_class"]["glioma"]["auc"] == pytest.approx(0.875)


def test_an_absent_class_gives_nan_and_a_warning_not_a_crash():
    labels = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 2])
    with pytest.warns(MetricWarning, match="pituitary"):
        m = point_metrics(labels, one_hot_probs(pred), CLASSES)
    assert np.isnan(m["per_class"]["pituitary"]["recall"]) and np.isnan(m["per_class"]["pituitary"]["auc"])
    assert m["per_class"]["pituitary"]["support"] == 0
    assert np.isfinite(m["macro_auc"])  # over the classes present
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = curves(labels, one_hot_probs(pred), CLASSES)
        b = bootstrap_intervals(labels, one_hot_probs(pred), CLASSES, settings=BootstrapSettings(50))
    assert "pituitary" not in c["roc"] and "glioma" in c["roc"]
    assert np.isnan(b["auc/pituitary"]).all()


def test_expected_calibration_error_by_hand():
    # Two predictions at confidence 0.9, both right; two at 0.6, one right:
    # ECE = 0.5 * |1 - 0.9| + 0.5 * |0.5 - 0.6| = 0.1.
    probs = np.array([[0.9, 0.05, 0.03, 0.02], [0.9, 0.05, 0.03, 0.02],
                      [0.6, 0.2, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1]])
    labels = np.array([0, 0, 0, 1])
    result = calibration(labels, probs, bins=10)
    assert result["ece"] == pytest.approx(0.1)
    filled = [b for b in result["bins"] if b["count"]]
    assert [(b["count"], b["accuracy"]) for b in filled] == [(2, 0.5), (2, 1.0)]


def test_operating_point_counts():
    truth = np.array([1, 1, 1, 0, 0])
    score = np.array([0.9, 0.6, 0.2, 0.7, 0.1])
    point = operating_point(truth, score, 0.5)
    assert (point["tp"], point["fn"], point["tn"], point["fp"]) == (2, 1, 1, 1)
    assert point["sensitivity"] == pytest.approx(2 / 3) and point["specificity"] == pytest.approx(1 / 2)


def test_curves_of_a_perfect_ranking_reach_the_corner():
    labels = np.array([0, 1, 2, 3] * 5)
    c = curves(labels, one_hot_probs(labels, 0.9), CLASSES)
    roc = c["roc"]["glioma"]
    assert any(f == 0.0 and t == 1.0 for f, t in zip(roc["fpr"], roc["tpr"]))
    assert {"macro", "micro"} <= set(c["roc"]) and c["tumour_roc"]["tpr"][-1] == 1.0
    assert c["precision_recall"]["glioma"]["precision"][0] == 1.0


def _noisy(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    logits = rng.normal(size=(n, 4))
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, probs


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    labels, probs = _noisy(200, 0)
    a = bootstrap_intervals(labels, probs, CLASSES, settings=BootstrapSettings(200, seed=3))
    b = bootstrap_intervals(labels, probs, CLASSES, settings=BootstrapSettings(200, seed=3))
    assert a == b
    accuracy = point_metrics(labels, probs, CLASSES)["accuracy"]
    assert a["accuracy"][0] < accuracy < a["accuracy"][1]
    assert {"macro_auc", "micro_auc", "tumour_auc", "sensitivity/glioma", "specificity/notumor"} <= set(a)


def test_resampling_whole_duplicate_groups_widens_the_interval():
    labels, probs = _noisy(60, 1)
    labels, probs = np.repeat(labels, 5), np.repeat(probs, 5, axis=0)  # every image five times
    groups = np.repeat(np.arange(60), 5)
    settings = BootstrapSettings(300, seed=0)
    naive = bootstrap_intervals(labels, probs, CLASSES, settings=settings)["accuracy"]
    grouped = bootstrap_intervals(labels, probs, CLASSES, groups, settings)["accuracy"]
    assert grouped[1] - grouped[0] > 1.5 * (naive[1] - naive[0])


def test_bootstrap_figures_from_counts_equal_those_of_the_resamples_themselves():
    from core.metrics import _resample_figures, point_metrics

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 80)
    probs = np.round(rng.dirichlet(np.ones(4), 80), 1)  # rounded: many ties, which count one half
    classes = ["glioma", "meningioma", "notumor", "pituitary"]
    picks = [rng.integers(0, 80, 80) for _ in range(5)]
    weights = np.stack([np.bincount(pick, minlength=80) for pick in picks])
    figures = _resample_figures(labels, probs, classes, weights)
    for r, pick in enumerate(picks):
        direct = point_metrics(labels[pick], probs[pick], classes)
        assert figures["accuracy"][r] == pytest.approx(direct["accuracy"])
        assert figures["macro_auc"][r] == pytest.approx(direct["macro_auc"])
        assert figures["micro_auc"][r] == pytest.approx(direct["micro_auc"])
        assert figures["tumour_auc"][r] == pytest.approx(direct["tumour_vs_no_tumour"]["auc"])
        for name in classes:
            assert figures[f"sensitivity/{name}"][r] == pytest.approx(direct["per_class"][name]["recall"])
            assert figures[f"specificity/{name}"][r] == pytest.approx(direct["per_class"][name]["specificity"])
            assert figures[f"auc/{name}"][r] == pytest.approx(direct["per_class"][name]["auc"])


def test_the_paired_comparison_counts_the_discordant_images_and_tests_them():
    from scipy.stats import binomtest

    from core.metrics import paired_comparison

    a = np.array([True] * 90 + [True] * 8 + [False] * 2 + [False] * 5)
    b = np.array([True] * 90 + [False] * 8 + [True] * 2 + [False] * 5)
    result = paired_comparison(a, b)
    assert (result["both_right"], result["only_a_right"], result["only_b_right"], result["both_wrong"]) == (90, 8, 2, 5)
    # Ten images split the models: the exact test is a two-sided binomial test of 2 in 10 at one half.
    assert result["test"].startswith("McNemar, exact") and result["p_value"] == pytest.approx(binomtest(2, 10).pvalue)
    same = paired_comparison(a, a)
    assert same["p_value"] is None and same["only_a_right"] == same["only_b_right"] == 0


def test_average_precision_never_exceeds_one_by_rounding():
    from core.metrics import average_precision_per_class

    # scikit-learn gives 1.0000000000000002 for 27 images, 9 positives all ranked first; a run file refuses that.
    labels = np.r_[np.zeros(9, int), np.ones(18, int)]
    ranked = np.r_[np.linspace(0.99, 0.9, 9), np.random.default_rng(0).uniform(0, 0.5, 18)]
    probs = np.stack([ranked, 1 - ranked], axis=1)
    assert average_precision_per_class(labels, probs)[0] == 1.0
