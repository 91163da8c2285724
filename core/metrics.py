"""Classification metrics of an evaluation run: pure functions of labels and probabilities.

scikit-learn computes everything it offers (accuracy, F1, confusion matrices, ROC and precision-recall
curves, AUC, average precision); this module only arranges the results, adds what scikit-learn lacks
(specificity per class, expected calibration error) and the bootstrap intervals. A class that does not
occur in the labels gets NaN for the figures that need it, with a warning, never an exception.

Conventions: ``labels`` are class indices (n,), ``probs`` are (n, k) rows summing to 1, ``classes`` are the
k names in column order. "Tumour" means any class other than ``notumor``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

NO_TUMOUR = "notumor"
CALIBRATION_BINS = 15
BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95


class MetricWarning(UserWarning):
    """A figure could not be computed from these labels (it is NaN)."""


def _warn(message: str) -> None:
    warnings.warn(message, MetricWarning, stacklevel=3)


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


# --------------------------------------------------------------------------------------------------
# Point estimates


def per_class_figures(labels: np.ndarray, pred: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Precision, recall (sensitivity), specificity, F1 and support for each of ``k`` classes."""
    from sklearn.metrics import multilabel_confusion_matrix

    mcm = multilabel_confusion_matrix(labels, pred, labels=list(range(k)))  # (k, 2, 2): [[tn, fp], [fn, tp]]
    tn, fp, fn, tp = mcm[:, 0, 0], mcm[:, 0, 1], mcm[:, 1, 0], mcm[:, 1, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return {"precision": precision, "recall": recall, "specificity": specificity, "f1": f1,
            "support": (tp + fn).astype(int)}


def one_vs_rest_auc(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """ROC AUC of each class against the rest; NaN for a class that is absent (or the only one present)."""
    from sklearn.metrics import roc_auc_score

    out = np.full(probs.shape[1], np.nan)
    for c in range(probs.shape[1]):
        positive = labels == c
        if 0 < positive.sum() < len(labels):
            out[c] = roc_auc_score(positive, probs[:, c])
    return out


def micro_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC over all (image, class) pairs: the one-vs-rest problems pooled."""
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import label_binarize

    onehot = label_binarize(labels, classes=list(range(probs.shape[1])))
    if onehot.min() == onehot.max():
        return float("nan")
    return float(roc_auc_score(onehot.ravel(), probs.ravel()))


def tumour_scores(probs: np.ndarray, classes: list[str]) -> np.ndarray:
    """Probability of any tumour: one minus the no-tumour probability."""
    return 1.0 - probs[:, classes.index(NO_TUMOUR)]


def binary_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, scores)) if 0 < truth.sum() < len(truth) else float("nan")


def calibration(labels: np.ndarray, probs: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """Top-label calibration: reliability-diagram bins (equal width over confidence) and the expected
    calibration error, the bin-size-weighted mean gap between accuracy and confidence."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds confidences in (edges[i], edges[i + 1]]; a confidence of exactly 0 joins the first bin.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    ece = 0.0
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        acc = float(correct[members].mean()) if count else None
        conf = float(confidence[members].mean()) if count else None
        if count:
            ece += count / len(labels) * abs(acc - conf)
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count, "accuracy": acc,
                     "confidence": conf})
    return {"ece": float(ece) if len(labels) else float("nan"), "bins": rows}


def point_metrics(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Every headline figure of a set of predictions (no curves, no intervals)."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score

    k = len(classes)
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(probs, dtype=np.float64).reshape(len(labels), k)
    n = len(labels)
    if n == 0:
        _warn("no images in this subset: every figure is NaN")
        return _empty_metrics(classes)
    pred = probs.argmax(axis=1)
    present = np.bincount(labels, minlength=k) > 0
    absent = [classes[c] for c in range(k) if not present[c]]
    if absent:
        _warn(f"no image of class {', '.join(absent)}: its recall, AUC and average precision are NaN")
    figures = per_class_figures(labels, pred, k)
    aucs = one_vs_rest_auc(labels, probs)
    ap = average_precision_per_class(labels, probs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about absent classes; we said it once above
        balanced = float(balanced_accuracy_score(labels, pred))
        macro_f1 = float(f1_score(labels, pred, labels=np.flatnonzero(present), average="macro"))
        weighted_f1 = float(f1_score(labels, pred, average="weighted"))
    truth = (labels != classes.index(NO_TUMOUR)).astype(int)
    tumour = tumour_scores(probs, classes)
    tumour_pred = (pred != classes.index(NO_TUMOUR)).astype(int)
    result = {
        "images": int(n),
        "accuracy": float((pred == labels).mean()),
        "balanced_accuracy": balanced,
        "macro_f1": macro_f1,
        "weighted_f1": weighted_f1,
        # Macro AUC over the classes present; NaN when fewer than two are present.
        "macro_auc": float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan"),
        "micro_auc": micro_auc(labels, probs),
        "confusion_matrix": confusion_matrix(labels, pred, labels=list(range(k))).tolist(),
        "per_class": {
            name: {"precision": float(figures["precision"][c]), "recall": float(figures["recall"][c]),
                   "specificity": float(figures["specificity"][c]), "f1": float(figures["f1"][c]),
                   "support": int(figures["support"][c]), "auc": float(aucs[c]),
                   "average_precision": float(ap[c])}
            for c, name in enumerate(classes)},
        "tumour_vs_no_tumour": {
            "auc": binary_auc(truth, tumour),
            # At the classifier's own decision (argmax), not a tuned threshold.
            "sensitivity": _safe_div(((tumour_pred == 1) & (truth == 1)).sum(), (truth == 1).sum()),
            "specificity": _safe_div(((tumour_pred == 0) & (truth == 0)).sum(), (truth == 0).sum()),
            "tumour_images": int(truth.sum()), "no_tumour_images": int(n - truth.sum()),
        },
        "calibration": calibration(labels, probs),
    }
    return result


def _empty_metrics(classes: list[str]) -> dict:
    nan = float("nan")
    k = len(classes)
    return {"images": 0, "accuracy": nan, "balanced_accuracy": nan, "macro_f1": nan, "weighted_f1": nan,
            "macro_auc": nan, "micro_auc": nan, "confusion_matrix": [[0] * k for _ in range(k)],
            "per_class": {name: {"precision": nan, "recall": nan, "specificity": nan, "f1": nan, "support": 0,
                                 "auc": nan, "average_precision": nan} for name in classes},
            "tumour_vs_no_tumour": {"auc": nan, "sensitivity": nan, "specificity": nan, "tumour_images": 0,
                                    "no_tumour_images": 0},
            "calibration": {"ece": nan, "bins": []}}


def average_precision_per_class(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    from sklearn.metrics import average_precision_score

    out = np.full(probs.shape[1], np.nan)
    for c in range(probs.shape[1]):
        positive = labels == c
        if positive.any():
            out[c] = average_precision_score(positive, probs[:, c])
    # scikit-learn's sum of precision steps can exceed 1 by a rounding error (1.0000000000000002 when every
    # positive ranks first), which a run file must not hold.
    return np.minimum(out, 1.0)


# --------------------------------------------------------------------------------------------------
# Curves


def _thin(x: np.ndarray, y: np.ndarray, extra: np.ndarray, limit: int = 400) -> tuple:
    """Keep at most ``limit`` points of a long curve (evenly by index, ends kept) for storage and plotting."""
    if len(x) <= limit:
        return x, y, extra
    keep = np.unique(np.linspace(0, len(x) - 1, limit).round().astype(int))
    return x[keep], y[keep], extra[keep]


def _finite(values: np.ndarray) -> list[float]:
    # ROC thresholds start at +inf; JSON has no infinity, and 1.0 plots the same for probabilities.
    return [float(min(v, 1.0)) for v in values]


def curves(labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """ROC curves per class plus micro and macro averages, precision-recall curves per class, and the
    tumour-versus-no-tumour ROC curve. Each curve is a dict of lists; absent classes get no curve."""
    from sklearn.metrics import precision_recall_curve, roc_curve
    from sklearn.preprocessing import label_binarize

    labels = np.asarray(labels, dtype=int)
    k = len(classes)
    roc, pr = {}, {}
    if len(labels) == 0:
        return {"roc": roc, "precision_recall": pr, "tumour_roc": {}}
    grid = np.linspace(0.0, 1.0, 201)
    interpolated = []
    for c, name in enumerate(classes):
        positive = labels == c
        if not 0 < positive.sum() < len(labels):
            continue
        fpr, tpr, thr = roc_curve(positive, probs[:, c])
        roc[name] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "threshold": _finite(thr)}
        interpolated.append(np.interp(grid, fpr, tpr))
        precision, recall, thr_pr = precision_recall_curve(positive, probs[:, c])
        precision, recall, thr_pr = _thin(precision[:-1], recall[:-1], thr_pr)
        # Prepend the (recall 0, precision 1) end that scikit-learn puts last.
        pr[name] = {"recall": [0.0] + recall.tolist()[::-1], "precision": [1.0] + precision.tolist()[::-1],
                    "threshold": [1.0] + thr_pr.tolist()[::-1]}
    if interpolated:
        macro = np.mean(interpolated, axis=0)
        macro[0] = 0.0
        roc["macro"] = {"fpr": grid.tolist(), "tpr": macro.tolist(), "threshold": []}
    onehot = label_binarize(labels, classes=list(range(k)))
    if len(labels) and onehot.min() != onehot.max():
        fpr, tpr, thr = roc_curve(onehot.ravel(), probs.ravel())
        fpr, tpr, thr = _thin(fpr, tpr, thr)
        roc["micro"] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "threshold": _finite(thr)}
    truth = labels != classes.index(NO_TUMOUR)
    tumour = {}
    if 0 < truth.sum() < len(truth):
        fpr, tpr, thr = roc_curve(truth, tumour_scores(probs, classes))
        tumour = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "threshold": _finite(thr)}
    return {"roc": roc, "precision_recall": pr, "tumour_roc": tumour}


def operating_point(truth_tumour: np.ndarray, tumour_score: np.ndarray, threshold: float) -> dict:
    """Counts, sensitivity and specificity of "tumour when the tumour probability >= threshold"."""
    truth = np.asarray(truth_tumour, dtype=bool)
    called = np.asarray(tumour_score) >= threshold
    tp, fn = int((called & truth).sum()), int((~called & truth).sum())
    tn, fp = int((~called & ~truth).sum()), int((called & ~truth).sum())
    return {"threshold": float(threshold), "tp": tp, "fn": fn, "tn": tn, "fp": fp,
            "sensitivity": _safe_div(tp, tp + fn), "specificity": _safe_div(tn, tn + fp)}


def wilson_interval(count: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``count / total`` (statsmodels), sound near 0 and 1 where the
    normal approximation is not."""
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(count, total, alpha=1 - confidence, method="wilson")
    return float(low), float(high)


def paired_comparison(a_right: np.ndarray, b_right: np.ndarray) -> dict:
    """Two models' answers on the same images: how many each got right that the other did not, and McNemar's test
    of whether their accuracies differ (exact binomial when fewer than 25 images split them, statsmodels)."""
    from statsmodels.stats.contingency_tables import mcnemar

    a, b = np.asarray(a_right, dtype=bool), np.asarray(b_right, dtype=bool)
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    split = table[0][1] + table[1][0]
    result = {"images": int(len(a)), "both_right": table[0][0], "only_a_right": table[0][1],
              "only_b_right": table[1][0], "both_wrong": table[1][1], "accuracy_a": float(a.mean()) if len(a) else None,
              "accuracy_b": float(b.mean()) if len(b) else None, "test": None, "p_value": None}
    if split:
        exact = split < 25
        outcome = mcnemar(table, exact=exact, correction=True)
        result.update(test="McNemar, exact binomial" if exact else "McNemar, chi-square with continuity correction",
                      p_value=float(outcome.pvalue))
    return result


# --------------------------------------------------------------------------------------------------
# Bootstrap intervals


@dataclass(frozen=True)
class BootstrapSettings:
    resamples: int = BOOTSTRAP_RESAMPLES
    confidence: float = CONFIDENCE
    seed: int = 0


def weighted_aucs(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of ``scores`` for the ``positive`` items under each row of ``weights`` (counts: how often each item
    is in a bootstrap resample), ties counting one half, as :func:`sklearn.metrics.roc_auc_score` counts them on
    the resample itself; NaN for a row without positives or negatives. One sort serves every row."""
    order = np.argsort(scores, kind="mergesort")
    ordered, positive, weights = scores[order], positive[order], weights[:, order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # runs of equal scores
    pos = np.add.reduceat(weights * positive, starts, axis=1)
    neg = np.add.reduceat(weights * ~positive, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight under each run of equal scores
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pairs > 0, (pos * (below + 0.5 * neg)).sum(axis=1) / pairs, np.nan)


def _resample_figures(labels: np.ndarray, probs: np.ndarray, classes: list[str], weights: np.ndarray
                      ) -> dict[str, np.ndarray]:
    """The figures that get intervals, for a block of resamples given by their ``weights`` (counts per image):
    ``{figure: values, one per resample}`` (keys as in :func:`bootstrap_intervals`)."""
    k = len(classes)
    pred = probs.argmax(axis=1)
    weights = weights.astype(np.float64)

    def share(hit: np.ndarray, among: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            total = weights @ among.astype(np.float64)
            return np.where(total > 0, weights @ (hit & among).astype(np.float64) / total, np.nan)

    out = {"accuracy": share(pred == labels, np.ones_like(labels, dtype=bool))}
    aucs = np.stack([weighted_aucs(probs[:, c], labels == c, weights) for c in range(k)], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with every AUC undefined
        out["macro_auc"] = np.nanmean(aucs, axis=1)  # scikit-learn's one-vs-rest macro AUC, over present classes
    onehot = labels[:, None] == np.arange(k)[None, :]
    out["micro_auc"] = weighted_aucs(probs.ravel(), onehot.ravel(), np.repeat(weights, k, axis=1))
    out["tumour_auc"] = weighted_aucs(tumour_scores(probs, classes), labels != classes.index(NO_TUMOUR), weights)
    for c, name in enumerate(classes):
        out[f"sensitivity/{name}"] = share(pred == c, labels == c)
        out[f"specificity/{name}"] = share(pred != c, labels != c)
        out[f"auc/{name}"] = aucs[:, c]
    return out


def bootstrap_intervals(labels: np.ndarray, probs: np.ndarray, classes: list[str],
                        groups: np.ndarray | None = None, settings: BootstrapSettings = BootstrapSettings()
                        ) -> dict[str, list[float]]:
    """Percentile bootstrap intervals ``{figure: [low, high]}`` for accuracy, macro, micro and
    tumour-vs-no-tumour AUC, and per-class sensitivity, specificity and AUC.

    With ``groups`` (for instance duplicate groups within the evaluated set) whole groups are resampled,
    so that copies of one scan do not count as independent evidence and narrow the interval. A resample
    in which a figure is undefined (a class drawn zero times) is left out of that figure's interval.
    """
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    if len(labels) == 0:
        return {}
    rng = np.random.default_rng(settings.seed)
    if groups is None:
        groups = np.arange(len(labels))
    _, groups = np.unique(groups, return_inverse=True)
    count = groups.max() + 1
    # A resample is a count per image (how often its group was drawn): the figures of a block of resamples are
    # then a few matrix products and one sort per score, not a scikit-learn call per figure and resample.
    block = max(1, min(settings.resamples, int(2e7 // (len(labels) * len(classes)))))
    draws: dict[str, list[np.ndarray]] = {}
    for start in range(0, settings.resamples, block):
        drawn = rng.integers(0, count, (min(block, settings.resamples - start), count))
        weights = np.stack([np.bincount(row, minlength=count) for row in drawn])[:, groups]
        for key, values in _resample_figures(labels, probs, classes, weights).items():
            draws.setdefault(key, []).append(values)
    tail = (1.0 - settings.confidence) / 2 * 100
    intervals = {}
    for key, blocks in draws.items():
        values = np.concatenate(blocks)
        values = values[np.isfinite(values)]
        intervals[key] = [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))] \
            if len(values) else [float("nan"), float("nan")]
    return intervals


def patient_figures(paths: list[str], labels: np.ndarray, probs: np.ndarray, confidence: float,
                    patients: list[str | None] | None = None) -> dict | None:
    """Where every image's patient is known (from the file names, as in lgg-tcga-glioma, or given in ``patients``,
    as the figshare release's .mat files say): each patient's answer is the class most of their slices get (a tie
    goes to the tied class with the larger summed probability), and per true class, how many patients get it right,
    with a Wilson interval. None otherwise."""
    import pandas as pd

    from core.data import CLASSES
    from core.masks import patient_of

    patients = list(patients) if patients is not None else [patient_of(path) for path in paths]
    if not patients or not all(patients):
        return None
    probs, labels = np.asarray(probs), np.asarray(labels)
    names = sorted(set(patients))
    index = np.array([names.index(p) for p in patients])
    counts = np.zeros((len(names), len(CLASSES)))
    np.add.at(counts, (index, probs.argmax(axis=1)), 1)
    sums = np.zeros((len(names), len(CLASSES)))
    np.add.at(sums, index, probs)
    # Votes first; the summed probability (under 1 per slice, so under one vote after scaling) breaks ties.
    answer = (counts + sums / (len(probs) + 1)).argmax(axis=1)
    truth = np.array([np.bincount(labels[index == i], minlength=len(CLASSES)).argmax() for i in range(len(names))])
    votes = pd.DataFrame({"label": truth, "pred": answer})
    per_class = {}
    for k, name in enumerate(CLASSES):
        mine = votes[votes["label"] == k]
        if len(mine):
            right = int((mine["pred"] == k).sum())
            per_class[name] = {"patients": int(len(mine)), "right": right, "recall": right / len(mine),
                               "interval": list(wilson_interval(right, len(mine), confidence))}
    return {"patients": int(len(votes)), "rule": "the class most of a patient's slices get (a tie: the larger summed "
            "probability)", "per_class": per_class}
