"""Familiarity: is a scan like the brain MRI slices the model was trained on?

A classifier answers every input with one of its classes, a blank page or a photograph included. Before its
answer is shown, a scan's **familiarity score** says how far it lies from the training scans in the network's
own terms: the Mahalanobis distance of its pooled ``layer4`` features (the 2,048 numbers the last layer
reads) to the nearest class mean, with one covariance shared by the classes (Lee et al., "A simple unified
framework for detecting out-of-distribution samples and adversarial attacks", NeurIPS 2018). The covariance
of 2,048 features from a few thousand images is shrunk towards a multiple of the identity (Ledoit-Wolf), so
that it can be inverted.

The covariance is stored in a compact form that keeps its :data:`RANK` leading directions exactly (their
eigenvectors and variances) and replaces the variances of the other directions by their mean (the form of
probabilistic PCA): 1 MB instead of the 8 MB of a full 2,048 × 2,048 matrix in float16, which keeps the
default checkpoint under 50 MB. The squared distance of a centred feature vector ``r`` is then
``|r|² / σ² + Σ_i (v_iᵀ r)² (1/λ_i − 1/σ²)``, exactly the Mahalanobis distance under that covariance.

The class means and the compact covariance are fitted on the training images and stored in the checkpoint as
tensors under ``familiarity.``; the metadata entry ``familiarity`` holds the **threshold** and how it was
chosen. A scan whose distance is above the threshold
is *unfamiliar*: its prediction is shown with a warning, not as an answer.

The threshold is the distance that :data:`FLAG_SHARE` of held-out validation scans exceed: images the network
was not trained on, from the same source. A model refitted on every image (``--val-fraction 0``) has none; it
borrows the threshold of a run of the same recipe with a validation split (as it borrows its temperature), in
proportion to the two models' median distances of their own training images, because a network's training
images lie closer to their class means than unseen images do and the scale of the distances differs between
two networks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

METHOD = "Mahalanobis distance of the pooled layer4 features to the nearest class mean (shared covariance, " \
         "Ledoit-Wolf shrinkage, its leading directions kept and the rest given their mean variance)"
RANK = 256                       # the covariance's directions kept exactly
REFITTED = ("familiarity",)      # the metadata entry fitting writes
FLAG_SHARE = 0.01                # the share of validation scans the threshold flags
# Fewer validation images than this and there is no threshold to speak of; under 100, 1% of them is less than
# one image, so the threshold lies between their two largest distances and flags more than 1% (said in a warning).
MIN_VALIDATION = 10


class FamiliarityError(ValueError):
    """A familiarity model cannot be fitted or used as asked; the message says why."""


@dataclass(frozen=True)
class Familiarity:
    means: torch.Tensor       # (classes, features) float32
    directions: torch.Tensor  # (features, rank): the leading eigenvectors of the shared covariance, orthonormal
    variances: torch.Tensor   # (rank,): the variance along each of them
    residual: float           # the variance given to every other direction: the mean of theirs
    threshold: float | None   # None: fitted, but no held-out images chose a threshold yet

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict, features: int | None = None
                     ) -> Familiarity | None:
        """The familiarity model a checkpoint carries, or None when it has none. Shapes (``features``: what the
        network's head reads) and values are checked: a damaged model would flag everything or nothing without a
        word."""
        record = metadata.get("familiarity")
        if not record or not tensors:
            return None
        if "whitening" in tensors:
            raise FamiliarityError("the checkpoint's familiarity model has the older full-matrix form; fit it "
                                   "again: python -m training.familiarity --checkpoint <this checkpoint>")
        means, directions = tensors.get("means"), tensors.get("directions")
        variances, residual = tensors.get("variances"), tensors.get("residual")
        classes = len(metadata["classes"])
        n = features or "n"
        if any(t is None for t in (means, directions, variances, residual)) or means.ndim != 2 \
                or means.shape[0] != classes or directions.ndim != 2 or directions.shape[0] != means.shape[1] \
                or not 0 < directions.shape[1] < means.shape[1] or tuple(variances.shape) != directions.shape[1:] \
                or residual.numel() != 1 or (features is not None and means.shape[1] != features):
            raise FamiliarityError("the checkpoint's familiarity tensors do not fit together (expected means of "
                                   f"shape ({classes}, {n}), directions of shape ({n}, k) with k < {n}, k "
                                   "variances and one residual variance)")
        values = [t.double() for t in (means, directions, variances, residual)]
        if not all(torch.isfinite(t).all() for t in values) or not (values[2].min() > 0 and values[3].item() > 0):
            raise FamiliarityError("the checkpoint's familiarity tensors hold values that are not numbers or "
                                   "variances that are not positive")
        return cls.of(values[0], values[1], values[2], values[3].item(), record.get("threshold"))

    @classmethod
    def of(cls, means, directions, variances, residual: float, threshold: float | None) -> Familiarity:
        """A model from its parts; the directions are made orthonormal again (float16 storage bends them a
        little), so that the distance is a true Mahalanobis distance under a covariance close to the fitted one."""
        directions = torch.linalg.qr(torch.as_tensor(directions, dtype=torch.float64)).Q
        return cls(torch.as_tensor(means, dtype=torch.float32), directions,
                   torch.as_tensor(variances, dtype=torch.float64), float(residual), threshold)

    def scores(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """The distance of each row of pooled features to the nearest class mean (in units of the training
        scans' spread; larger is less familiar)."""
        features = torch.as_tensor(features, dtype=torch.float32)
        if features.ndim != 2 or features.shape[1] != self.means.shape[1]:
            raise FamiliarityError(f"expected features of shape (n, {self.means.shape[1]}), got "
                                   f"{tuple(features.shape)}")
        x, means = features.double(), self.means.double()
        squared = torch.cdist(x, means).square() / self.residual                      # (n, classes)
        along = (x @ self.directions)[:, None, :] - (means @ self.directions)[None]   # (n, classes, rank)
        squared += along.square() @ (1 / self.variances - 1 / self.residual)
        return squared.clamp_min(0).min(dim=1).values.sqrt().numpy()

    def unfamiliar(self, scores: np.ndarray) -> np.ndarray:
        """Which scores lie above the threshold (none when there is no threshold)."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.threshold is None:
            return np.zeros(scores.shape, dtype=bool)
        return ~(scores <= self.threshold)  # a score that is not a number is not familiar


def fit_gaussian(features: np.ndarray, labels: np.ndarray, classes: int, rank: int = RANK
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Class means, the leading ``rank`` eigenvectors of the shared (Ledoit-Wolf shrunk) covariance and their
    variances, the mean variance of the other directions, and the shrinkage."""
    from sklearn.covariance import LedoitWolf

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if features.ndim != 2 or len(features) != len(labels) or features.shape[1] < 2:
        raise FamiliarityError(f"need features of shape (n, d) with d of at least 2, and n labels; got "
                               f"{features.shape} and {labels.shape}")
    missing = [k for k in range(classes) if not (labels == k).sum() >= 2]
    if missing:
        raise FamiliarityError(f"classes {missing} have fewer than two training images; a class mean and its "
                               "spread cannot be fitted")
    means = np.stack([features[labels == k].mean(axis=0) for k in range(classes)])
    centred = features - means[labels]
    # The precision matrix is not needed (the distance is computed from the eigenvectors): sklearn's pseudo-inverse
    # of a 2,048 x 2,048 matrix would double the fit's time.
    estimate = LedoitWolf(assume_centered=True, store_precision=False).fit(centred)
    values, vectors = np.linalg.eigh(estimate.covariance_)  # ascending
    if not values.min() > 0:
        raise FamiliarityError("the shrunk covariance of the training features is singular; the features are "
                               "degenerate (a network whose pooled features are all equal?)")
    kept = min(rank, features.shape[1] - 1)
    return (means.astype(np.float32), vectors[:, ::-1][:, :kept].copy(), values[::-1][:kept].copy(),
            float(values[:-kept].mean()), float(estimate.shrinkage_))


def threshold_from_validation(scores: np.ndarray, share: float = FLAG_SHARE) -> float:
    """The distance that ``share`` of the validation scans exceed."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) < MIN_VALIDATION:
        raise FamiliarityError(f"{len(scores)} validation images are too few to set a familiarity threshold "
                               f"(need {MIN_VALIDATION})")
    if len(scores) * share < 1:
        logging.getLogger(__name__).warning(
            "only %d validation images: the familiarity threshold lies between their two largest distances, so it "
            "will flag about %.0f%% to %.0f%% of scans like them, not %.0f%%", len(scores), 100 / (len(scores) + 1),
            200 / (len(scores) + 1), 100 * share)
    return float(np.quantile(scores, 1.0 - share))


def flagged_figures(scores: np.ndarray, threshold: float | None, duplicate: np.ndarray | None,
                    confidence: float) -> dict | None:
    """How many images a threshold flags, with a Wilson interval at ``confidence``, on all of them and on those
    that are not ``duplicate`` of a training image (an evaluation run's ``familiarity`` figures); None without a
    threshold."""
    from core.metrics import wilson_interval

    if threshold is None:
        return None
    flagged = ~(np.asarray(scores, dtype=np.float64) <= threshold)

    def share(mask: np.ndarray) -> dict:
        count, total = int(mask.sum()), int(len(mask))
        return {"images": total, "flagged": count, "share": count / total if total else None,
                "interval": list(wilson_interval(count, total, confidence)) if total else None}

    return {"threshold": threshold, "all": share(flagged),
            "duplicate_free": share(flagged[~np.asarray(duplicate, dtype=bool)]) if duplicate is not None else None}


def summary(scores: np.ndarray) -> dict:
    """Quantiles of a set of scores, for the record."""
    scores = np.asarray(scores, dtype=np.float64)
    return {"images": int(len(scores)), "median": round(float(np.median(scores)), 4),
            **{f"q{q}": round(float(np.quantile(scores, q / 100)), 4) for q in (90, 99)},
            "max": round(float(scores.max()), 4)}


@dataclass
class Fitted:
    record: dict                      # the checkpoint's ``familiarity`` metadata entry
    tensors: dict[str, torch.Tensor]  # means, directions, variances, residual: under ``familiarity.``
    model: Familiarity


def fit(train_features: np.ndarray, train_labels: np.ndarray, classes: int,
        validation_features: np.ndarray | None, fitted_on: dict) -> Fitted:
    """Fit on a model's training features; the threshold comes from its validation features when there are
    any (else it must be borrowed: :func:`borrow_threshold`)."""
    means, directions, variances, residual, shrinkage = fit_gaussian(train_features, train_labels, classes)
    # The directions are stored in float16 (1 MB for 256 of 2,048 features); the scores below, and so the
    # threshold, are those of the stored tensors.
    stored = {"means": torch.from_numpy(means), "directions": torch.from_numpy(directions).half(),
              "variances": torch.from_numpy(variances).float(), "residual": torch.tensor([residual])}
    model = Familiarity.of(stored["means"], stored["directions"], stored["variances"], residual, None)
    train_scores = model.scores(train_features)
    record = {"method": METHOD, "features": "layer4, average-pooled", "dimensions": int(means.shape[1]),
              "rank": int(directions.shape[1]), "shrinkage": round(shrinkage, 6),
              "variance_kept": round(float(variances.sum() / (variances.sum() + residual * (means.shape[1] -
                                                                                            len(variances)))), 4),
              "fitted_on": fitted_on, "training_scores": summary(train_scores), "flag_share": FLAG_SHARE,
              "threshold": None}
    if validation_features is not None and len(validation_features):
        validation_scores = model.scores(validation_features)
        threshold = threshold_from_validation(validation_scores)
        record.update(threshold=round(threshold, 4), validation_scores=summary(validation_scores),
                      threshold_from="validation")
        model = replace(model, threshold=record["threshold"])
    return Fitted(record, stored, model)


def borrow_threshold(fitted: Fitted, source: dict, source_name: str) -> Fitted:
    """Give a refit on every image the threshold of a run of the same recipe with a validation split
    (``source``: that run's ``familiarity`` record), scaled by the ratio of the two models' median distances of
    their own training images."""
    theirs = source.get("familiarity") or {}
    if theirs.get("threshold") is None or theirs.get("threshold_from") != "validation":
        raise FamiliarityError(f"{source_name} has no familiarity threshold set on its own validation split; fit "
                               "one there first (python -m training.familiarity --checkpoint "
                               f"{source_name})")
    their_median = (theirs.get("training_scores") or {}).get("median")
    if not isinstance(their_median, (int, float)) or not 0 < their_median < float("inf"):
        raise FamiliarityError(f"{source_name}'s familiarity record has no median distance of its training images; "
                               "fit it again (python -m training.familiarity)")
    ratio = fitted.record["training_scores"]["median"] / their_median
    threshold = round(float(theirs["threshold"]) * ratio, 4)
    record = {**fitted.record, "threshold": threshold, "threshold_from": "borrowed",
              "borrowed": {"checkpoint": source_name, "threshold": theirs["threshold"],
                           "training_median": theirs["training_scores"]["median"],
                           "validation_scores": theirs.get("validation_scores"), "scale": round(ratio, 5),
                           "why": "this model was refitted on every image and has no held-out images of its own; "
                                  "the threshold of a run of the same recipe is scaled by the ratio of the two "
                                  "models' median distances of their own training images"}}
    return Fitted(record, fitted.tensors, replace(fitted.model, threshold=threshold))


def features_of(classifier, paths: Sequence[Path], batch_size: int = 32,
                progress: Callable[[int], object] | None = None) -> np.ndarray:
    """Pooled layer4 features of these image files, with the classifier's own preprocessing and precision."""
    from core.sources import read_image

    chunks = []
    for start in range(0, len(paths), batch_size):
        try:
            images = [read_image(p) for p in paths[start:start + batch_size]]
        except ValueError as error:
            raise FamiliarityError(f"an image cannot be read ({error})") from None
        chunks.append(classifier.features_and_logits(classifier.preprocess(images))[0].numpy())
        if progress is not None:
            progress(len(images))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)


def fit_on_images(classifier, train: tuple[Sequence[Path], np.ndarray], validation: Sequence[Path],
                  fitted_on: dict, progress: Callable[[int], object] | None = None) -> Fitted:
    """Features of the training images (paths, labels) and of the validation images, then :func:`fit`."""
    train_features = features_of(classifier, train[0], progress=progress)
    validation_features = features_of(classifier, validation, progress=progress) if len(validation) else None
    return fit(train_features, train[1], len(classifier.classes), validation_features, fitted_on)


def fit_for_checkpoint(checkpoint: str | os.PathLike, data: str | os.PathLike | None = None,
                       source: str | os.PathLike | None = None, device: str | None = None, precision: str = "auto",
                       progress: Callable[[int], object] | None = None) -> Fitted:
    """Fit the familiarity model of a checkpoint on its own training images. The threshold comes from its own
    validation images, or, for a refit on every image, from ``source``: a run of the same recipe whose own
    familiarity threshold was set on its validation split."""
    from core.calibration import CalibrationError, same_recipe_problems, training_images, validation_images
    from core.checkpoint import (CheckpointError, check_classes_match, load_checkpoint, model_from_checkpoint,
                                 read_metadata, resolve_checkpoint_path)
    from core.inference import Classifier

    try:
        loaded = load_checkpoint(checkpoint, replacing=REFITTED)
        metadata = loaded.metadata
        check_classes_match(metadata)
        has_validation = bool(metadata.get("data", {}).get("val_files"))
        theirs = None
        if source is not None:
            if has_validation:
                raise FamiliarityError("this checkpoint has a validation split of its own; set the threshold on "
                                       "that (leave out --from)")
            theirs = read_metadata(source)
            problems = same_recipe_problems(metadata, theirs)
            if problems:
                raise FamiliarityError("the two checkpoints were not trained with the same recipe, so the "
                                       "threshold would not carry over: " + "; ".join(problems))
        elif not has_validation:
            raise FamiliarityError("the checkpoint was trained without a validation split (--val-fraction 0), so "
                                   "it has no held-out images to set a threshold on; borrow the threshold of a run "
                                   "of the same recipe that had one (--from)")
        train = training_images(metadata, data)
        validation = validation_images(metadata, data)[0] if has_validation else []
    except (CheckpointError, CalibrationError) as error:
        raise FamiliarityError(str(error)) from None
    classifier = Classifier(model_from_checkpoint(loaded), metadata, loaded.path, device, precision)
    fitted_on = {"split": "training", "checkpoint": loaded.path.parent.name,
                 "data_fingerprint": metadata.get("data", {}).get("fingerprint"), "precision": classifier.precision}
    fitted = fit_on_images(classifier, train, validation, fitted_on, progress)
    if theirs is not None:
        fitted = borrow_threshold(fitted, theirs, resolve_checkpoint_path(source).parent.name)
    return fitted
