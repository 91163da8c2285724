"""Temperature scaling: probabilities that mean what they say.

A network trained with label smoothing is under-confident: among the scans it calls 90% likely, more than
90% are right. One positive number, the temperature T, divides the logits before the softmax; T < 1 sharpens
the probabilities, T > 1 softens them. It never changes which class is largest, so accuracy, the confusion
matrix and the heatmaps stay as they were. T is fitted by minimising the negative log-likelihood on images the
network was not trained on: the validation split (Guo et al., "On calibration of modern neural networks",
ICML 2017).

The checkpoint carries the result under ``calibration``; :class:`core.inference.Classifier` applies it. A model
refitted on every image (``--val-fraction 0``) has no held-out images of its own: it takes the temperature of a
run of the same recipe that had a validation split (``python -m training.calibrate --from``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from core.checkpoint import TEMPERATURES, CheckpointError, read_metadata
from core.data import CLASSES, canonical_class
from core.metrics import calibration as reliability
from core.sources import FileRefused, contained_path
from core.sources.files import printable

METHOD = "temperature scaling"
# Bounds of the search (and of what a checkpoint may carry); a fit that lands on one of them says the logits are
# degenerate, not calibrated.
LOWEST, HIGHEST = TEMPERATURES
# Settings that may differ between a run with a validation split and its refit on every image.
NOT_RECIPE = {"out", "data", "val_fraction", "save_dtype", "time_limit_minutes", "resume", "progress",
              "num_workers", "device", "precision", "weights_file"}


REFITTED = ("calibration",)  # what calibrating writes
# Below this calibrated top probability an answer is marked "uncertain: refer". Once calibrated, a probability is
# the share of such answers that are right, so this is where the expected accuracy falls under 95%; the record says
# how the calibration images bear it out.
REFER_BELOW = 0.95


class CalibrationError(ValueError):
    """Calibration cannot be done as asked; the message says why."""


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / temperature)."""
    scaled = torch.as_tensor(logits, dtype=torch.float64) / temperature
    return float(torch.nn.functional.cross_entropy(scaled, torch.as_tensor(labels, dtype=torch.long)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood (a bounded search over log T)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or len(logits) != len(labels) or not len(labels):
        raise CalibrationError(f"need logits of shape (n, classes) and n labels; got {logits.shape} and "
                               f"{labels.shape}")
    result = minimize_scalar(lambda log_t: nll(logits, labels, float(np.exp(log_t))),
                             bounds=(np.log(LOWEST), np.log(HIGHEST)), method="bounded",
                             options={"xatol": 1e-5})
    temperature = float(np.exp(result.x))
    best = nll(logits, labels, temperature)
    at_edge = min(nll(logits, labels, LOWEST), nll(logits, labels, HIGHEST)) <= best + 1e-12
    if at_edge or not LOWEST * 1.01 < temperature < HIGHEST / 1.01:
        raise CalibrationError(f"the fitted temperature ({temperature:.3g}) sits at the edge of the search; the "
                               "held-out images are probably all right with certainty or all wrong")
    return temperature


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    return torch.as_tensor(logits, dtype=torch.float64).div(temperature).softmax(1).numpy()


def calibration_record(logits: np.ndarray, labels: np.ndarray, fitted_on: dict) -> dict:
    """Fit the temperature and describe it for the checkpoint: what it was fitted on and what it changed."""
    temperature = fit_temperature(logits, labels)
    before, after = _softmax(logits, 1.0), _softmax(logits, temperature)
    return {"method": METHOD, "temperature": round(temperature, 5), "fitted_on": fitted_on,
            "refer_below": REFER_BELOW, "referral": referral_evidence(after, labels, REFER_BELOW),
            "images": len(labels),
            "nll_before": round(nll(logits, labels), 5), "nll_after": round(nll(logits, labels, temperature), 5),
            "ece_before": round(reliability(labels, before)["ece"], 5),
            "ece_after": round(reliability(labels, after)["ece"], 5)}


def referral_evidence(probs: np.ndarray, labels: np.ndarray, level: float) -> dict:
    """How many held-out answers fall under and over ``level``, and how many of each are right."""
    confidence, right = probs.max(axis=1), probs.argmax(axis=1) == labels

    def part(mask: np.ndarray) -> dict:
        return {"images": int(mask.sum()), "correct": int(right[mask].sum()),
                "accuracy": round(float(right[mask].mean()), 5) if mask.any() else None}

    return {"below": part(confidence < level), "at_or_above": part(confidence >= level)}


def validation_images(metadata: dict, data: str | os.PathLike | None = None) -> tuple[list[Path], np.ndarray]:
    """The checkpoint's own validation images (as recorded at training) and their labels.

    ``data`` replaces the dataset root recorded in the checkpoint (a relative path there is relative to the
    directory training ran in)."""
    files = metadata.get("data", {}).get("val_files") or []
    if not files:
        raise CalibrationError("the checkpoint was trained without a validation split (--val-fraction 0), so it "
                               "has no held-out images to fit a temperature on; take the temperature of a run "
                               "of the same recipe that had one (--from)")
    return recorded_images(metadata, files, "validation image", data)


def training_images(metadata: dict, data: str | os.PathLike | None = None) -> tuple[list[Path], np.ndarray]:
    """The images the checkpoint's network was trained on (its validation images left out) and their labels."""
    recorded = metadata.get("data", {})
    held_out = set(recorded.get("val_files") or [])
    # Slices added by mask guidance live in another dataset (core.guidance): not among the images refitted on.
    files = [f for f in recorded.get("seen_files") or [] if f not in held_out and not f.startswith("guide/")]
    if not files:
        raise CalibrationError("the checkpoint records no training images")
    return recorded_images(metadata, files, "training image", data)


def recorded_images(metadata: dict, files: list[str], what: str, data: str | os.PathLike | None = None
                    ) -> tuple[list[Path], np.ndarray]:
    """Paths and labels of image files a checkpoint names, relative to the folder it was trained on, which must
    still be there as they were."""
    recorded = metadata.get("data", {})
    root = Path(data if data is not None else recorded.get("root", "")).expanduser()
    base = root / recorded.get("trained_on", ".")
    if not base.is_dir():
        raise CalibrationError(f"the training images are not at {base}; pass the dataset root with --data")
    paths, labels = [], []
    for relpath in files:
        name = canonical_class(relpath.split("/")[0])
        if name is None or name not in CLASSES:
            raise CalibrationError(f"{what} {printable(relpath)} is not in a known class folder")
        try:
            path = contained_path(base, relpath, what)  # the names come from the checkpoint
        except FileRefused as error:
            raise CalibrationError(str(error)) from None
        if not path.is_file():
            raise CalibrationError(f"{what} {printable(path)} is missing; the dataset changed since training")
        paths.append(path)
        labels.append(CLASSES.index(name))
    return paths, np.asarray(labels)


def _held_out_batches(classifier, paths: list[Path], batch_size: int):
    """The network input for these images, batch by batch, with the classifier's own preprocessing."""
    from core.sources import read_image

    for start in range(0, len(paths), batch_size):
        try:
            images = [read_image(p) for p in paths[start:start + batch_size]]
        except ValueError as error:
            raise CalibrationError(f"a validation image cannot be read ({error})") from None
        yield classifier.preprocess(images)


def held_out_logits(classifier, paths: list[Path], batch_size: int = 32) -> np.ndarray:
    """Raw logits of the classifier on these images, with its own preprocessing and precision."""
    return np.concatenate([classifier.logits(batch).numpy()
                           for batch in _held_out_batches(classifier, paths, batch_size)])


def fit_on_validation(checkpoint: str | os.PathLike, data: str | os.PathLike | None = None,
                      device: str | None = None, precision: str = "auto") -> dict:
    """Fit a temperature on a checkpoint's own validation split; returns the record for its metadata
    (``calibration``)."""
    from core.checkpoint import check_classes_match, load_checkpoint, model_from_checkpoint
    from core.inference import Classifier

    try:
        # The network is judged without its temperature, which is left out before the metadata is checked, so a
        # damaged one cannot block its own repair.
        loaded = load_checkpoint(checkpoint, replacing=REFITTED)
        check_classes_match(loaded.metadata)
    except CheckpointError as error:
        raise CalibrationError(str(error)) from None
    metadata = loaded.metadata
    classifier = Classifier(model_from_checkpoint(loaded), metadata, loaded.path, device, precision)
    return calibrate(classifier, *validation_images(metadata, data))


def calibrate(classifier, paths: list[Path], labels: np.ndarray) -> dict:
    """The calibration record of ``classifier`` (a checkpoint's network, with its metadata) fitted on held-out
    images: their raw logits, with the classifier's own preprocessing and precision, and their labels."""
    fitted_on = {"split": "validation", "checkpoint": Path(classifier.path).parent.name,
                 "data_fingerprint": classifier.metadata.get("data", {}).get("fingerprint"),
                 "precision": classifier.precision}
    return calibration_record(held_out_logits(classifier, paths), labels, fitted_on)


def recipe_differences(target: dict, source: dict) -> list[str]:
    """Training settings that differ between two checkpoints, apart from those a refit may change. A setting
    that an older checkpoint does not record had its default then, as on resuming."""
    from dataclasses import fields

    from core.config import REMOVED_OPTIONS, TrainConfig

    # An option removed since (at the value that meant "off") is the same recipe as one that never had it.
    defaults = {**REMOVED_OPTIONS, **{f.name: f.default for f in fields(TrainConfig)}}
    a = {**defaults, **target.get("training", {}).get("config", {})}
    b = {**defaults, **source.get("training", {}).get("config", {})}
    return sorted(f"{key} is {b.get(key)!r} in the source and {a.get(key)!r} in the target"
                  for key in set(a) | set(b) if key not in NOT_RECIPE and a.get(key) != b.get(key))


def same_recipe_problems(target: dict, source: dict) -> list[str]:
    """Why what was fitted on ``source``'s validation split would not carry over to ``target`` (empty: it
    would): a training setting that differs, or other training data."""
    differences = recipe_differences(target, source)
    if target.get("data", {}).get("fingerprint") != source.get("data", {}).get("fingerprint"):
        differences.append("the training data differ (dataset fingerprints)")
    return differences


def borrowed_calibration(target: str | os.PathLike, source: str | os.PathLike,
                         data: str | os.PathLike | None = None) -> dict:
    """:func:`fit_on_validation` on ``source``'s validation split, for ``target``: a refit of the same recipe on
    every image, which has no held-out images of its own."""
    try:
        mine, theirs = read_metadata(target, replacing=REFITTED), read_metadata(source, replacing=REFITTED)
    except CheckpointError as error:
        raise CalibrationError(str(error)) from None
    if mine.get("data", {}).get("val_files"):
        raise CalibrationError("this checkpoint has a validation split of its own; calibrate it on that (leave out "
                               "--from)")
    differences = same_recipe_problems(mine, theirs)
    if differences:
        raise CalibrationError("the two checkpoints were not trained with the same recipe, so the temperature "
                               "would not carry over: " + "; ".join(differences))
    record = fit_on_validation(source, data)
    record["fitted_on"]["borrowed"] = ("fitted on the validation split of a run of the same recipe; this model was "
                                       "refitted on every image and has no held-out images of its own")
    return record
