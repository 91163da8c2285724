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

In the first form the threshold was the distance that 1% of held-out validation scans exceed: images the network
was not trained on, from the same source (the second form, below, sets it together with a probability floor). A
model refitted on every image (``--val-fraction 0``) has none; it
borrows the threshold of a run of the same recipe with a validation split (as it borrows its temperature), in
proportion to the two models' median distances of their own training images, because a network's training
images lie closer to their class means than unseen images do and the scale of the distances differs between
two networks.

**Distance and probability (the second form).** A distance alone misses the scans a model gets wrong on a new
hospital's series: a glioma from another scanner lies as close to the training gliomas and meningiomas as a familiar
one does, and the network is simply wrong about it (on SARTAJ, a Kaggle source held out whole, the distance caught
none of the gliomas the baseline got wrong; the calibrated probability caught a third of them at the same cost).
A model fitted now therefore also carries a **probability floor**: a scan is unfamiliar when its distance exceeds
the distance threshold *or* the calibrated probability of its answer lies under the floor. Both are chosen together
on the validation images: the threshold is the ``k``-th smallest validation distance and the floor one less the
``k``-th smallest validation doubt (one less the top probability), with ``k`` the smallest for which at most
:data:`FLAG_SHARE` of the validation images exceed either. The score is then the larger of the two ratios
``distance / threshold`` and ``doubt / (1 - floor)``, so one number against one threshold (1) still decides, and
every reader of a score (an evaluation run's column, a review case) needs nothing else. The probability is the
network's softmax at the temperature recorded with the floor (the calibration's, at fitting time). Checkpoints with
the first form (a distance threshold only) keep it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

METHOD = "Mahalanobis distance of the pooled layer4 features to the nearest class mean (shared covariance, " \
         "Ledoit-Wolf shrinkage, its leading directions kept and the rest given their mean variance)"
METHOD_WITH_FLOOR = METHOD + ", or a calibrated top probability under a floor (the two chosen together on validation)"
RANK = 256                       # the covariance's directions kept exactly
REFITTED = ("familiarity",)      # the metadata entry fitting writes
FLAG_SHARE = 0.015               # the share of validation scans the warning flags
# Fewer validation images than this and there is no threshold to speak of; under 67, 1.5% of them is less than
# one image, so the thresholds lie at their largest values and flag more than that share (said in a warning).
MIN_VALIDATION = 10


class FamiliarityError(ValueError):
    """A familiarity model cannot be fitted or used as asked; the message says why."""


@dataclass(frozen=True)
class Familiarity:
    means: torch.Tensor       # (classes, features) float32
    directions: torch.Tensor  # (features, rank): the leading eigenvectors of the shared covariance, orthonormal
    variances: torch.Tensor   # (rank,): the variance along each of them
    residual: float           # the variance given to every other direction: the mean of theirs
    threshold: float | None   # of the score; None: fitted, but no held-out images chose a threshold yet
    # The second form (None in the first): the distance threshold and the probability floor chosen together, and the
    # softmax temperature the floor is read at. The score is then max(distance / distance_threshold,
    # (1 - probability) / (1 - floor)) and its threshold 1.
    distance_threshold: float | None = None
    floor: float | None = None
    temperature: float = 1.0

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
        model = cls.of(values[0], values[1], values[2], values[3].item(), record.get("threshold"))
        if record.get("probability_floor") is None:
            return model
        distance, floor, temperature = (record.get(k) for k in ("distance_threshold", "probability_floor",
                                                                "temperature"))
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (distance, floor, temperature)) \
                or not (0 < distance < float("inf") and 0 < floor < 1 and 0 < temperature < float("inf")) \
                or record.get("threshold") != 1:
            raise FamiliarityError("the checkpoint's familiarity record has a probability floor but not a usable "
                                   "distance threshold, floor (between 0 and 1), temperature and score threshold 1")
        return replace(model, distance_threshold=float(distance), floor=float(floor), temperature=float(temperature))

    @classmethod
    def of(cls, means, directions, variances, residual: float, threshold: float | None) -> Familiarity:
        """A model from its parts; the directions are made orthonormal again (float16 storage bends them a
        little), so that the distance is a true Mahalanobis distance under a covariance close to the fitted one."""
        directions = torch.linalg.qr(torch.as_tensor(directions, dtype=torch.float64)).Q
        return cls(torch.as_tensor(means, dtype=torch.float32), directions,
                   torch.as_tensor(variances, dtype=torch.float64), float(residual), threshold)

    @property
    def uses_probability(self) -> bool:
        """Whether the score needs the network's logits (the second form)."""
        return self.floor is not None

    def scores(self, features: torch.Tensor | np.ndarray, logits: torch.Tensor | np.ndarray | None = None
               ) -> np.ndarray:
        """The familiarity score of each row of pooled features (larger is less familiar; above the threshold is
        unfamiliar): the distance alone in the first form, and with the floor the larger of the distance's and the
        probability's ratio to their thresholds, for which the logits of the same rows are needed."""
        distances = self.distances(features)
        if self.floor is None:
            return distances
        if logits is None:
            raise FamiliarityError("this familiarity model also reads the answer's probability; pass the logits")
        doubt = top_doubt(logits, self.temperature)
        if doubt.shape != distances.shape:
            raise FamiliarityError(f"{len(doubt)} rows of logits for {len(distances)} rows of features")
        return np.maximum(distances / self.distance_threshold, doubt / (1 - self.floor))

    def distances(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
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


def top_doubt(logits: torch.Tensor | np.ndarray, temperature: float) -> np.ndarray:
    """One less the softmax probability of each row's top class at ``temperature`` (NaN for a row that is not
    numbers, which no threshold passes)."""
    logits = torch.as_tensor(logits, dtype=torch.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise FamiliarityError(f"expected logits of shape (n, classes), got {tuple(logits.shape)}")
    doubt = 1 - (logits / temperature).softmax(dim=1).max(dim=1).values
    doubt[~torch.isfinite(logits).all(dim=1)] = float("nan")
    return doubt.numpy()


def _check_validation_size(count: int, share: float) -> None:
    if count < MIN_VALIDATION:
        raise FamiliarityError(f"{count} validation images are too few to set a familiarity threshold "
                               f"(need {MIN_VALIDATION})")
    if count * share < 1:
        logging.getLogger(__name__).warning(
            "only %d validation images: the familiarity threshold lies at their largest score, so it will flag "
            "about %.0f%% to %.0f%% of scans like them, not %.1f%%", count, 100 / (count + 1), 200 / (count + 1),
            100 * share)


def joint_thresholds(distances: np.ndarray, doubts: np.ndarray, share: float = FLAG_SHARE
                     ) -> tuple[float, float, int]:
    """The distance threshold and the probability floor chosen together on validation: the ``k``-th smallest
    distance and one less the ``k``-th smallest doubt, for the smallest ``k`` at which at most ``share`` of the
    images exceed either. Returns (threshold, floor, number of validation images flagged)."""
    distances, doubts = np.asarray(distances, dtype=np.float64), np.asarray(doubts, dtype=np.float64)
    if distances.shape != doubts.shape or distances.ndim != 1:
        raise FamiliarityError(f"need as many validation distances as doubts; got {distances.shape} and "
                               f"{doubts.shape}")
    if not (np.isfinite(distances).all() and np.isfinite(doubts).all()):
        raise FamiliarityError("some validation images have a distance or probability that is not a number")
    _check_validation_size(len(distances), share)
    by_distance, by_doubt = np.sort(distances), np.sort(doubts)
    allowed = share * len(distances)
    k = len(distances)  # 1-based: at k = n nothing is flagged
    while k > 1:
        flagged = int(((distances > by_distance[k - 2]) | (doubts > by_doubt[k - 2])).sum())
        if flagged > allowed:
            break
        k -= 1
    threshold, floor = float(by_distance[k - 1]), float(1 - by_doubt[k - 1])
    flagged = int(((distances > threshold) | (doubts > 1 - floor)).sum())
    if not (threshold > 0 and 0 < floor < 1):
        raise FamiliarityError("the validation images' distances or probabilities are degenerate (a distance of 0 "
                               "or a probability of 0 or 1 at the threshold); no warning can be set on them")
    return threshold, floor, flagged


def flagged_figures(scores: np.ndarray, threshold: float | None, duplicate: np.ndarray | None,
                    confidence: float, correct: np.ndarray | None = None, model: Familiarity | None = None
                    ) -> dict | None:
    """How many images a threshold flags, with a Wilson interval at ``confidence``: of all of them, of those that
    are not ``duplicate`` of a training image, and of the model's wrong and right answers (``correct``), which say
    whether the warning falls where the model fails (an evaluation run's ``familiarity`` figures); None without a
    threshold. ``model``: the familiarity model, whose distance threshold and probability floor are recorded."""
    from core.metrics import wilson_interval

    if threshold is None:
        return None
    flagged = ~(np.asarray(scores, dtype=np.float64) <= threshold)

    def share(mask: np.ndarray) -> dict:
        count, total = int(mask.sum()), int(len(mask))
        return {"images": total, "flagged": count, "share": count / total if total else None,
                "interval": list(wilson_interval(count, total, confidence)) if total else None}

    right = None if correct is None else np.asarray(correct, dtype=bool)
    return {"threshold": threshold, "all": share(flagged),
            "duplicate_free": share(flagged[~np.asarray(duplicate, dtype=bool)]) if duplicate is not None else None,
            "wrong": None if right is None else share(flagged[~right]),
            "right": None if right is None else share(flagged[right]),
            "distance_threshold": None if model is None else (model.distance_threshold if model.uses_probability
                                                              else model.threshold),
            "probability_floor": None if model is None else model.floor}


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
        validation: tuple[np.ndarray, np.ndarray] | None, fitted_on: dict, temperature: float = 1.0) -> Fitted:
    """Fit on a model's training features; the distance threshold and the probability floor come from its
    validation images' features and logits (``validation``) when there are any, read at the softmax
    ``temperature`` (the calibration's); else they must be borrowed: :func:`borrow_threshold`."""
    means, directions, variances, residual, shrinkage = fit_gaussian(train_features, train_labels, classes)
    # The directions are stored in float16 (1 MB for 256 of 2,048 features); the scores below, and so the
    # threshold, are those of the stored tensors.
    stored = {"means": torch.from_numpy(means), "directions": torch.from_numpy(directions).half(),
              "variances": torch.from_numpy(variances).float(), "residual": torch.tensor([residual])}
    model = Familiarity.of(stored["means"], stored["directions"], stored["variances"], residual, None)
    train_scores = model.distances(train_features)
    record = {"method": METHOD_WITH_FLOOR, "features": "layer4, average-pooled", "dimensions": int(means.shape[1]),
              "rank": int(directions.shape[1]), "shrinkage": round(shrinkage, 6),
              "variance_kept": round(float(variances.sum() / (variances.sum() + residual * (means.shape[1] -
                                                                                            len(variances)))), 4),
              "fitted_on": fitted_on, "training_scores": summary(train_scores), "flag_share": FLAG_SHARE,
              "threshold": None, "distance_threshold": None, "probability_floor": None,
              "temperature": round(float(temperature), 6)}
    if validation is not None and len(validation[0]):
        features, logits = validation
        distances, doubts = model.distances(features), top_doubt(logits, record["temperature"])
        threshold, floor, _ = joint_thresholds(distances, doubts)
        # Stored rounded outwards, so that the stored pair flags no validation scan the exact pair did not.
        threshold, floor = math.ceil(threshold * 1e4) / 1e4, math.floor(floor * 1e6) / 1e6
        flagged = int(((distances > threshold) | (doubts > 1 - floor)).sum())
        record.update(threshold=1.0, distance_threshold=threshold, probability_floor=floor,
                      validation_scores=summary(distances), threshold_from="validation",
                      validation_flagged={"images": len(distances), "flagged": flagged,
                                          "by_distance": int((distances > threshold).sum()),
                                          "by_probability": int((doubts > 1 - floor).sum())})
        model = replace(model, threshold=1.0, distance_threshold=record["distance_threshold"],
                        floor=record["probability_floor"], temperature=record["temperature"])
    return Fitted(record, stored, model)


def borrow_threshold(fitted: Fitted, source: dict, source_name: str) -> Fitted:
    """Give a refit on every image the warning of a run of the same recipe with a validation split (``source``:
    that run's metadata): its distance threshold scaled by the ratio of the two models' median distances of their
    own training images, and its probability floor as it is (both models' probabilities are calibrated)."""
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
    floor = theirs.get("probability_floor")
    their_distance = theirs["threshold"] if floor is None else theirs.get("distance_threshold")
    if not isinstance(their_distance, (int, float)) or not 0 < their_distance < float("inf"):
        raise FamiliarityError(f"{source_name}'s familiarity record has no usable distance threshold; fit it again "
                               "(python -m training.familiarity)")
    distance = round(float(their_distance) * ratio, 4)
    record = {**fitted.record, "threshold_from": "borrowed",
              "borrowed": {"checkpoint": source_name, "threshold": theirs["threshold"],
                           "distance_threshold": their_distance, "probability_floor": floor,
                           "training_median": theirs["training_scores"]["median"],
                           "validation_scores": theirs.get("validation_scores"), "scale": round(ratio, 5),
                           "why": "this model was refitted on every image and has no held-out images of its own; "
                                  "the distance threshold of a run of the same recipe is scaled by the ratio of the "
                                  "two models' median distances of their own training images, and its probability "
                                  "floor is kept"}}
    if floor is None:  # a source of the first form: a distance threshold only
        record.update(method=METHOD, threshold=distance, distance_threshold=None, probability_floor=None)
        return Fitted(record, fitted.tensors, replace(fitted.model, threshold=distance))
    record.update(threshold=1.0, distance_threshold=distance, probability_floor=floor)
    return Fitted(record, fitted.tensors, replace(fitted.model, threshold=1.0, distance_threshold=distance,
                                                  floor=float(floor), temperature=record["temperature"]))


def pooled_outputs(classifier, paths: Sequence[Path], batch_size: int = 32,
                   progress: Callable[[int], object] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pooled layer4 features and logits of these image files, with the classifier's own preprocessing and
    precision."""
    from core.sources import read_image

    features, logits = [], []
    for start in range(0, len(paths), batch_size):
        try:
            images = [read_image(p) for p in paths[start:start + batch_size]]
        except ValueError as error:
            raise FamiliarityError(f"an image cannot be read ({error})") from None
        pooled, out = classifier.features_and_logits(classifier.preprocess(images))
        features.append(pooled.numpy())
        logits.append(out.numpy())
        if progress is not None:
            progress(len(images))
    if not features:
        return np.zeros((0, 0), dtype=np.float32), np.zeros((0, len(classifier.classes)), dtype=np.float32)
    return np.concatenate(features), np.concatenate(logits)


def fit_on_images(classifier, train: tuple[Sequence[Path], np.ndarray], validation: Sequence[Path],
                  fitted_on: dict, progress: Callable[[int], object] | None = None) -> Fitted:
    """Features of the training images (paths, labels) and features and logits of the validation images, then
    :func:`fit` at the classifier's temperature."""
    train_features = pooled_outputs(classifier, train[0], progress=progress)[0]
    held_out = pooled_outputs(classifier, validation, progress=progress) if len(validation) else None
    return fit(train_features, train[1], len(classifier.classes), held_out, fitted_on, classifier.temperature)


def fit_for_checkpoint(checkpoint: str | os.PathLike, data: str | os.PathLike | None = None,
                       source: str | os.PathLike | None = None, device: str | None = None, precision: str = "auto",
                       progress: Callable[[int], object] | None = None) -> Fitted:
    """Fit the familiarity model of a checkpoint on its own training images. The threshold comes from its own
    validation images, or, for a refit on every image, from ``source``: a run of the same recipe whose own
    familiarity threshold was set on its validation split."""
    from core.calibration import CalibrationError, same_recipe_problems, training_images, validation_images
    from core.checkpoint import (
        CheckpointError,
        check_classes_match,
        load_checkpoint,
        model_from_checkpoint,
        read_metadata,
        resolve_checkpoint_path,
    )
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
